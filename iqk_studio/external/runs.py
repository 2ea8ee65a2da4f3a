"""External runs as jobs: llama-perplexity (perplexity, KLD, saving a KLD base), llama-imatrix and
llama-quantize driven as subprocesses, yielding the same events as the built-in jobs.

Stop iterating (generator.close(), as the GUI's worker does on cancel, or Ctrl-C in the CLI) to
cancel: the tool's process group gets SIGTERM, then SIGKILL after `grace` seconds, and any output
file it was writing is removed. Outputs are written under a temporary name and renamed when the
tool succeeded, so a failed or cancelled run leaves nothing half-written."""

from __future__ import annotations

import glob
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from iqk_studio.external.binaries import Binary, with_log
from iqk_studio.external.pplparse import PplLogParser
from iqk_studio.external.process import ToolProcess, failure_message
from iqk_studio.external.quantparse import QuantizeLogParser
from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, Progress, RunInfo

GRACE = 5.0  # seconds between SIGTERM and SIGKILL
HEARTBEAT = 0.5  # seconds between status Progress events


def _drive(binary: Binary, argv: list[str], parser, stop_on_nan: bool, grace: float,
           state: dict) -> Iterator[object]:
    """Run argv, feed its output to parser and yield its events, a RunInfo once the header is
    read, and a Progress(done, total, last line) heartbeat; returns the exit status, or None
    when it already yielded Failed."""
    name = binary.tool
    try:
        proc = ToolProcess(argv)
    except OSError as e:
        yield Failed(f"cannot run {argv[0]}: {e.strerror or e}")
        return None
    state["proc"] = proc
    yield Progress(0, 0, f"{name}: started (pid {proc.pid})")
    info_sent, beat = False, 0.0
    pieces = proc.pieces(0.25)
    while True:
        text = next(pieces, None)
        events = parser.close() if text is None else parser.feed(text) if text else []
        for ev in events:
            if not info_sent and isinstance(ev, (Chunk, KldChunk)):
                info_sent = True
                yield _info(binary, argv, parser)
            yield ev
            if stop_on_nan and isinstance(ev, (Chunk, KldChunk)) and not math.isfinite(ev.ppl):
                proc.stop(grace)
                yield Failed(f"chunk {ev.index}: the perplexity is {ev.ppl} (NaN or Inf): "
                             f"{name} stopped")
                return None
        if text is None:
            break
        now = time.monotonic()
        if now - beat >= HEARTBEAT:
            beat = now
            yield Progress(parser.done, parser.count, _status(name, parser))
    rc = proc.wait()
    if not info_sent and parser.facts:
        yield _info(binary, argv, parser)
    return rc


def _status(name: str, parser) -> str:
    """`llama-perplexity: chunk 136/570`, or the tool's last line before the first one."""
    if parser.done:
        what = "tensor" if isinstance(parser, QuantizeLogParser) else "chunk"
        return f"{name}: {what} {parser.done}/{parser.count}"
    return f"{name}: {parser.last_line.strip()}"


def _info(binary: Binary, argv: list[str], parser) -> RunInfo:
    b = with_log(binary, parser.facts)
    return RunInfo(b.engine, b.version, tuple(str(a) for a in argv), dict(parser.facts))


def _cleanup(state: dict, grace: float) -> None:
    proc = state.get("proc")
    if proc is not None:
        proc.stop(grace)
    for p in state.get("partial", ()):
        _remove_partial(p)


def partial_path(out: Path) -> Path:
    """Where a tool writes `out` until it succeeded (same folder, same suffix)."""
    return out.with_name(f"{out.stem}.partial-{os.getpid()}{out.suffix}")


def _remove_partial(p: Path) -> None:
    for q in p.parent.glob(glob.escape(p.stem) + "*"):
        try:
            q.unlink()
        except OSError:
            pass


def _commit_partial(p: Path, out: Path) -> None:
    """Rename the partial output (and any split parts or side files the tool named after it)."""
    for q in sorted(p.parent.glob(glob.escape(p.stem) + "*")):
        q.replace(q.with_name(out.stem + q.name[len(p.stem):]))


def _ppl_args(model, text, n_ctx: int, chunks: int) -> list[str]:
    a = ["-m", str(model)]
    if text is not None:
        a += ["-f", str(text)]
    a += ["-c", str(n_ctx)]
    return a + (["--chunks", str(chunks)] if chunks and chunks > 0 else [])


def perplexity_run(binary: Binary, model, text, n_ctx: int = 512, chunks: int = -1,
                   extra_args: Sequence[str] = (), stop_on_nan: bool = False,
                   grace: float = GRACE) -> Iterator[object]:
    """llama-perplexity -m MODEL -f TEXT -c N_CTX [--chunks N] EXTRA...: Chunk per `[i]x,`,
    then Finished(final line, PerplexityResult) as the built-in perplexity job."""
    argv = [str(binary.path)] + _ppl_args(model, text, n_ctx, chunks) + list(extra_args)
    yield from _ppl_like(binary, argv, n_ctx, stop_on_nan, grace)


def save_base_run(binary: Binary, model, text, base_out, n_ctx: int = 512, chunks: int = -1,
                  extra_args: Sequence[str] = (), grace: float = GRACE) -> Iterator[object]:
    """llama-perplexity ... --kl-divergence-base FILE: the base model's log-probs for KLD runs."""
    out = Path(base_out)
    part = partial_path(out)
    argv = [str(binary.path)] + _ppl_args(model, text, n_ctx, chunks) + list(extra_args) + [
        "--kl-divergence-base", str(part)]
    yield from _ppl_like(binary, argv, n_ctx, False, grace, (part, out))


def _ppl_like(binary, argv, n_ctx, stop_on_nan, grace, output=None) -> Iterator[object]:
    from iqk_studio.jobs.perplexity import PerplexityResult, final_line

    parser = PplLogParser(n_ctx, clock=time.monotonic)
    state: dict = {"partial": [output[0]] if output else []}
    t0 = time.monotonic()
    try:
        rc = yield from _drive(binary, argv, parser, stop_on_nan, grace, state)
        if rc is None:
            return
        if rc != 0 or parser.final is None:
            yield Failed(failure_message(binary.tool, rc, parser.tail))
            return
        if output:
            _commit_partial(*output)
            state["partial"] = []
        ppl, err = parser.final
        n = len(parser.chunks)
        ctx = parser.n_ctx or n_ctx
        res = PerplexityResult(ppl, err, n, ctx, n * (ctx - 1 - ctx // 2), tuple(parser.chunks),
                               time.monotonic() - t0)
        yield Finished(final_line(res), res)
    finally:
        _cleanup(state, grace)


def kld_run(binary: Binary, model, base_file, n_ctx: int = 512, chunks: int = -1,
            extra_args: Sequence[str] = (), stop_on_nan: bool = False,
            grace: float = GRACE) -> Iterator[object]:
    """llama-perplexity -m MODEL --kl-divergence-base FILE --kl-divergence: KldChunk per table
    row, then Finished(the statistics as printed, KldResult) as the built-in kld job."""
    from iqk_studio.external.logimport import kld_result

    argv = [str(binary.path)] + _ppl_args(model, None, n_ctx, chunks) + list(extra_args) + [
        "--kl-divergence-base", str(base_file), "--kl-divergence"]
    parser = PplLogParser(n_ctx, clock=time.monotonic)
    state: dict = {}
    t0 = time.monotonic()
    try:
        rc = yield from _drive(binary, argv, parser, stop_on_nan, grace, state)
        if rc is None:
            return
        if rc != 0 or not parser.kld_rows:
            yield Failed(failure_message(binary.tool, rc, parser.tail))
            return
        res = kld_result(parser, n_ctx, time.monotonic() - t0)
        if res is None:  # fewer than 100 tokens: the tool prints no statistics
            yield Finished("", None)
            return
        from iqk_studio.jobs.kld import format_summary

        yield Finished(format_summary(res), res)
    finally:
        _cleanup(state, grace)


def imatrix_run(binary: Binary, model, text, out, n_ctx: int = 512, chunks: int = -1,
                extra_args: Sequence[str] = (), grace: float = GRACE) -> Iterator[object]:
    """llama-imatrix -m MODEL -f TEXT -o OUT -c N_CTX [--chunks N]: Chunk per `[i]x,`, then
    Finished(final lines, the Imatrix read back from OUT) as the built-in imatrix job."""
    out = Path(out)
    part = partial_path(out)
    argv = [str(binary.path)] + _ppl_args(model, text, n_ctx, chunks) + ["-o", str(part)] + list(
        extra_args)
    parser = PplLogParser(n_ctx, clock=time.monotonic)
    state: dict = {"partial": [part]}
    try:
        rc = yield from _drive(binary, argv, parser, False, grace, state)
        if rc is None:
            return
        if rc != 0 or not part.exists():
            yield Failed(failure_message(binary.tool, rc, parser.tail))
            return
        _commit_partial(part, out)
        state["partial"] = []
        from iqk_studio.gguf.imatrix import load_imatrix

        try:
            im = load_imatrix(out)
        except (OSError, ValueError) as e:
            im = None
            parser.tail.append(f"(could not read {out} back: {e})")
        lines = []
        if parser.final:
            lines.append(f"Final estimate: PPL = {parser.final[0]:.4f} +/- {parser.final[1]:.5f}")
        lines.append(f"save_imatrix: stored collected data after {len(parser.chunks)} chunks "
                     f"in {out}")
        yield Finished("\n".join(lines), im)
    finally:
        _cleanup(state, grace)


def quantize_run(binary: Binary, options: Sequence[str], model_in, model_out, base_type: str,
                 nthreads: int | None = None, extra_args: Sequence[str] = (),
                 grace: float = GRACE) -> Iterator[object]:
    """llama-quantize OPTIONS EXTRA MODEL_IN OUT BASE [NTHREADS] (options from quantize_args):
    TensorDone per tensor line, then Finished(result=QuantizeResult) as the built-in job."""
    from iqk_studio.jobs.quantize import QuantizeResult

    out = Path(model_out)
    dry = "--dry-run" in options or "--dry-run" in extra_args
    part = partial_path(out)
    argv = [str(binary.path)] + list(options) + list(extra_args) + [
        str(model_in), str(out if dry else part), base_type] + ([str(nthreads)] if nthreads else [])
    parser = QuantizeLogParser(clock=time.monotonic)
    state: dict = {"partial": [] if dry else [part]}
    try:
        rc = yield from _drive(binary, argv, parser, False, grace, state)
        if rc is None:
            return
        if rc != 0 or not parser.finished:
            yield Failed(failure_message(binary.tool, rc, parser.tail))
            return
        if not dry:
            _commit_partial(part, out)
            state["partial"] = []
        n_q = sum(t.type != t.src_type for t in parser.tensors)
        res = QuantizeResult(out, len(parser.tensors), n_q, parser.source_bytes(),
                             parser.quant_bytes(), parser.seconds())
        yield Finished(f"quant size = {parser.totals['quant_mib']:.2f} MB", res)
    finally:
        _cleanup(state, grace)
