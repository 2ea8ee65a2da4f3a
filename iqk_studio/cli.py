"""iqk-studio-cli: the same jobs as the GUI, headless."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# subcommand -> module in iqk_studio.commands (each has add_arguments(p) and run(args) -> int)
COMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("inspect", "show a GGUF's metadata and tensors with exact sizes"),
    "plan": ("plan", "plan a quantization mix: per-tensor types, sizes, lint"),
    "recipe": ("recipe", "convert recipes to and from llama-quantize command lines"),
    "quantize": ("quantize", "quantize a model to a new GGUF with our own kernels"),
    "perplexity": ("perplexity", "perplexity of a model on a text, as llama-perplexity"),
    "kld": ("kld", "KL-divergence of a model against a base model"),
    "imatrix": ("imatrix", "compute an importance matrix over a calibration text"),
    "sensitivity": ("sensitivity", "KLD cost of quantizing each tensor group to a type"),
    "optimize": ("optimize", "the mix that loses least for a size budget, as a recipe"),
    "import-log": ("import_log", "read a published llama-perplexity / KLD log (forum, card)"),
    "results": ("results", "the results store: list, show, export runs"),
    "compare-importance": ("compare_importance",
                           "a recipe with each imatrix, default weights and w = 1, evaluated"),
    "grids": ("grids", "value grids of the quant types; per tensor: iq4k variants, fp4 fits"),
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqk-studio-cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod_name, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(f"iqk_studio.commands.{mod_name}")
        except ModuleNotFoundError as e:
            if e.name != f"iqk_studio.commands.{mod_name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        # PASSTHROUGH: the command takes the arguments after `--` (for an external tool)
        p.set_defaults(_run=mod.run, _passthrough=getattr(mod, "PASSTHROUGH", False))
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds exactly like Ctrl-C, so every temp file is removed on the way
    out; args[0] is the signal number."""


_pending: list[KeyboardInterrupt] = []  # the signal's exception, in case C code swallowed it


def _on_signal(signum, frame) -> None:
    # one signal stops the command; more while it cleans up must not cut the cleanup short
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    exc = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)
    _pending.append(exc)
    raise exc


def _unraisable(u) -> None:
    """An interrupt raised inside a C callback (llvmlite's object cache, while numba loads a
    kernel) cannot propagate; interruptible() raises it again at the next event."""
    if isinstance(u.exc_value, KeyboardInterrupt) and _pending:
        return
    sys.__unraisablehook__(u)


def interruptible(events):
    """The events of a job, raising a pending interrupt between them (see _unraisable)."""
    for ev in events:
        if _pending:
            raise _pending[0]
        yield ev


_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _install_signals() -> dict:
    """SIGINT, SIGTERM and SIGHUP raise in the main thread; returns the handlers they replace."""
    old = {}
    for sig in _SIGNALS:
        try:
            old[sig] = signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread (a test runner's worker)
            pass
    return old


def main(argv: list[str] | None = None) -> int:
    _pending.clear()
    old = _install_signals()
    old_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    for stream in (sys.stdout, sys.stderr):  # a name with invalid UTF-8 never kills the output
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        parser = build_parser()  # imports every command (numpy, numba): Ctrl-C may land here
        argv = sys.argv[1:] if argv is None else list(argv)
        extra: list[str] = []
        if "--" in argv:  # everything after it goes to the external tool untouched
            k = argv.index("--")
            argv, extra = argv[:k], argv[k + 1:]
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        if extra and not args._passthrough:
            parser.error(f"{args.command} takes no arguments after `--`")
        args.extra_args = extra
        return int(args._run(args) or 0)
    except KeyboardInterrupt as e:
        sig = e.args[0] if isinstance(e, Terminated) and e.args else signal.SIGINT
        print("terminated" if isinstance(e, Terminated) else "interrupted", file=sys.stderr)
        return 128 + int(sig)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except (CliError, OSError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"iqk-studio-cli: error: {msg}", file=sys.stderr)
        return 1
    except MemoryError:
        print("iqk-studio-cli: error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line; IQK_DEBUG=1 shows the traceback
        if os.environ.get("IQK_DEBUG"):
            raise
        print(f"iqk-studio-cli: internal error: {type(e).__name__}: {str(e)[:300]} (please "
              "report it; IQK_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 70  # EX_SOFTWARE
    finally:
        sys.unraisablehook = old_hook
        for sig, handler in old.items():
            if handler is not None:  # None: a handler not set from Python, cannot be restored
                signal.signal(sig, handler)


def _quiet_stdout() -> None:
    """After a closed pipe (`| head`): send what is left to /dev/null, so the interpreter's
    final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
