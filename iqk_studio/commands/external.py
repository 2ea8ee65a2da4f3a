"""The --llama-* options of perplexity, kld, imatrix and quantize (run the user's llama.cpp /
ik_llama.cpp binary instead of the built-in engine, printing the same lines), and recording of
every evaluation into the results store (--no-store to skip)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from iqk_studio.cli import CliError
from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, Progress


def _term_stops_tool(fn):
    """While an external run goes on, SIGTERM / SIGHUP to us stop it as Ctrl-C does (the tool
    runs in its own process group and would otherwise outlive us)."""
    import functools
    import signal
    import threading

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        sigs = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
        if threading.current_thread() is not threading.main_thread():
            return fn(*a, **kw)

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        old = {sig: signal.signal(sig, interrupt) for sig in sigs}
        try:
            return fn(*a, **kw)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    return wrapper


def add_llama_option(p, tool: str) -> None:
    """--llama-perplexity [PATH] (or -quantize, -imatrix); the command takes `-- EXTRA ARGS`."""
    p.add_argument(f"--{tool}", nargs="?", const="", default=None, metavar="PATH",
                   help=f"run your {tool} instead of the built-in engine: its path or build "
                   "folder, or nothing to find it in $IQK_LLAMA_BIN or PATH; arguments after "
                   "`--` go to it untouched (-ngl 99 -fa -ot exps=CPU -t 32 ...)")


def add_store_option(p) -> None:
    p.add_argument("--no-store", action="store_true",
                   help="do not record the run in the results store")


def binary(args, tool: str):
    from iqk_studio.external.binaries import BinaryNotFound, detect

    where = getattr(args, tool.replace("-", "_"))
    try:
        return detect(tool, where or None)
    except BinaryNotFound as e:
        raise CliError(str(e)) from None


def no_extra(args, option: str) -> None:
    if getattr(args, "extra_args", None):
        raise CliError(f"arguments after `--` are for an external tool: add {option}")


def recorded(job, args, kind: str, model, text=None, n_ctx=None, chunks=None, **spec):
    """The job wrapped to record its run into the results store, unless --no-store."""
    if getattr(args, "no_store", False):
        return job
    from iqk_studio.results import RecordedJob, evaluation_spec

    def warn(msg: str) -> None:
        print(f"iqk-studio-cli: warning: the run is not recorded: {msg}", file=sys.stderr)

    return RecordedJob(job, evaluation_spec(kind, model, text, n_ctx, chunks, **spec),
                       on_error=warn)


def tool_args(args) -> list[str]:
    """Our own options that the tool understands too, then the user's extra arguments."""
    out = []
    if getattr(args, "threads", None):
        out += ["-t", str(args.threads)]
    return out + list(getattr(args, "extra_args", []))


def cli_events(job, prog: str, progress: bool = False):
    """An external job's events for the built-in printers: the status heartbeats become one
    updated stderr line (with --progress), a NaN chunk a warning."""
    started = nan_seen = False
    for ev in job:
        if isinstance(ev, Progress):
            if not started:
                started = True
                print(ev.message, file=sys.stderr, flush=True)
            elif progress and ev.message:
                print(f"\r{ev.message[:110]:<110}", end="", file=sys.stderr, flush=True)
            continue
        if isinstance(ev, (Chunk, KldChunk)) and not math.isfinite(ev.ppl) and not nan_seen:
            nan_seen = True
            print(f"\n{prog}: warning: chunk {ev.index} is {ev.ppl} (NaN/Inf in the model's "
                  "output); --stop-on-nan stops the run there", file=sys.stderr, flush=True)
        yield ev


def check_inputs(model: Path, text) -> None:
    if not model.exists():
        raise CliError(f"{model}: no such model file")
    if text is not None and not Path(text).is_file():
        raise CliError(f"{text}: no such text file")


@_term_stops_tool
def run_perplexity(args, model: Path) -> int:
    from iqk_studio.commands._print import print_chunks
    from iqk_studio.external.runs import perplexity_run

    check_inputs(model, args.file)
    b = binary(args, "llama-perplexity")
    job = perplexity_run(b, model, args.file, args.ctx_size, args.chunks, tool_args(args),
                         args.stop_on_nan)
    job = recorded(job, args, "perplexity", model, args.file, args.ctx_size, args.chunks,
                   source="external", engine=b.engine, engine_version=b.version)
    try:
        fin = print_chunks(cli_events(job, "perplexity", args.progress), "perplexity")
    finally:
        job.close()
    print(fin.message, flush=True)
    return 0


@_term_stops_tool
def run_imatrix(args, model: Path) -> int:
    from iqk_studio.commands._print import print_chunks
    from iqk_studio.external.runs import imatrix_run

    check_inputs(model, args.file)
    if args.output_format:
        raise CliError("--output-format is for the built-in engine: give the tool's own "
                       "option after `--`")
    b = binary(args, "llama-imatrix")
    job = imatrix_run(b, model, args.file, args.output, args.ctx_size, args.chunks,
                      tool_args(args))
    job = recorded(job, args, "imatrix", model, args.file, args.ctx_size, args.chunks,
                   source="external", engine=b.engine, engine_version=b.version)
    try:
        fin = print_chunks(cli_events(job, "compute_imatrix", args.progress), "compute_imatrix")
    finally:
        job.close()
    *head, saved = fin.message.split("\n")
    print(saved, file=sys.stderr)
    for line in head:
        print(line)
    return 0


@_term_stops_tool
def run_kld(args, base, model) -> int:
    """Save the base's log-probs with the tool (unless BASE is such a file), then compare."""
    import os
    import tempfile

    from iqk_studio.commands._print import print_chunks, print_kld
    from iqk_studio.external.runs import kld_run, save_base_run
    from iqk_studio.jobs.kld import is_base_file

    b = binary(args, "llama-perplexity")
    extra = tool_args(args)
    base_file, temp = base, None
    if not is_base_file(base):
        if not args.file:
            raise CliError("-f TEXT is needed when BASE is a model")
        check_inputs(Path(base), args.file)
        if model is None:
            base_file = args.save_base
        elif args.save_base:
            base_file = args.save_base
        else:
            fd, temp = tempfile.mkstemp(prefix="iqk-kld-base-", suffix=".kld")
            os.close(fd)
            base_file = temp
    try:
        if base_file is not base:
            print("kl_divergence: the base model's log-probs first", file=sys.stderr)
            job = save_base_run(b, base, args.file, base_file, args.ctx_size, args.chunks, extra)
            job = recorded(job, args, "perplexity", base, args.file, args.ctx_size, args.chunks,
                           source="external", engine=b.engine, engine_version=b.version)
            try:
                fin = print_chunks(cli_events(job, "perplexity", args.progress), "perplexity")
            finally:
                job.close()
            print(fin.message, file=sys.stderr)
        if model is None:
            print(f"saved base log-probs to {base_file}", file=sys.stderr)
            return 0
        check_inputs(Path(model), None)
        job = kld_run(b, model, base_file, args.ctx_size, args.chunks, extra, args.stop_on_nan)
        job = recorded(job, args, "kld", model, args.file, args.ctx_size, args.chunks,
                       base_model_path=None if is_base_file(base) else base, source="external",
                       engine=b.engine, engine_version=b.version)
        try:
            return print_kld(cli_events(job, "kl_divergence", args.progress))
        finally:
            job.close()
    finally:
        if temp:
            Path(temp).unlink(missing_ok=True)



@_term_stops_tool
def run_quantize(args, model: Path, out: Path, recipe) -> int:
    """llama-quantize with the recipe's options in the binary's dialect, printed as ours."""
    from types import SimpleNamespace

    from iqk_studio.commands._print import print_quant_totals
    from iqk_studio.commands._print import tensor_line as _line
    from iqk_studio.external.args import quantize_args
    from iqk_studio.external.runs import quantize_run
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.events import TensorDone

    b = binary(args, "llama-quantize")
    try:
        options, type_file = quantize_args(recipe, b.flavour, out.parent)
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"quantizing {str(model)!r} to {str(out)!r} as {recipe.base} with {b.path} "
          f"({b.engine})", flush=True)
    job = quantize_run(b, options, model, out, recipe.base, args.threads, args.extra_args)
    try:
        with open_model(model) as m:
            for ev in cli_events(job, "quantize"):
                if isinstance(ev, TensorDone):
                    info = m.tensors.get(ev.name)
                    if info is None:
                        print(f"[{ev.index:4d}/{ev.count:4d}] {ev.name:>36s} -> {ev.qtype}")
                    else:
                        print(_line(ev.index, ev.count, ev.name, info,
                                    SimpleNamespace(type=ev.qtype), ev.bytes), flush=True)
                elif isinstance(ev, Failed):
                    raise CliError(ev.message)
                elif isinstance(ev, Finished):
                    print_quant_totals(ev.result)
    finally:
        job.close()
        if type_file is not None:
            type_file.unlink(missing_ok=True)
    return 0
