"""iqk-studio-cli: the same jobs as the GUI, headless."""

from __future__ import annotations

import argparse
import importlib
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (CliError, OSError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"iqk-studio-cli: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
