"""What the commands print while a job runs: llama-perplexity's `[i]ppl,` stream, its KLD table,
and llama-quantize's per-tensor line (built-in and external runs alike)."""

from __future__ import annotations

import sys

from iqk_studio.cli import CliError, interruptible
from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, Progress


def print_chunks(events, prog: str, progress: bool = False) -> Finished:
    """Print `[i]ppl,` per Chunk on stdout like llama-perplexity; returns the Finished event."""
    first = True
    for ev in interruptible(events):
        if isinstance(ev, Progress):
            if progress and ev.total:
                print(f"\r{prog}: {ev.message}   ", end="", file=sys.stderr, flush=True)
            elif not ev.total and ev.message:
                print(f"{prog}: {ev.message} ..", file=sys.stderr, flush=True)
        elif isinstance(ev, Chunk):
            if first:
                if progress:
                    print(file=sys.stderr)
                print(f"{prog}: {ev.tokens_per_second:.1f} tokens/s - ETA "
                      f"{eta(ev.eta_seconds)}", file=sys.stderr, flush=True)
                first = False
            print(f"[{ev.index}]{ev.ppl:.4f},", end="", flush=True)
        elif isinstance(ev, Failed):
            if not first:
                print()
            raise CliError(ev.message)
        elif isinstance(ev, Finished):
            print()
            return ev
    raise CliError("the job ended without a result")


def print_kld(events) -> int:
    """Print llama-perplexity's KLD table, a row per KldChunk, then the final statistics; 0."""
    from iqk_studio.jobs.kld import format_chunk, format_header

    first = True
    for ev in interruptible(events):
        if isinstance(ev, Progress) and not ev.total and ev.message:
            print(f"kl_divergence: {ev.message} ..", file=sys.stderr, flush=True)
        elif isinstance(ev, KldChunk):
            if first:
                print(f"kl_divergence: {ev.tokens_per_second:.1f} tokens/s", file=sys.stderr)
                print(format_header())
                first = False
            print(format_chunk(ev), flush=True)
        elif isinstance(ev, Failed):
            raise CliError(ev.message)
        elif isinstance(ev, Finished):
            print()
            if ev.message:
                print(ev.message)
            return 0
    raise CliError("the job ended without a result")


def print_quant_totals(r) -> None:
    """llama-quantize's closing lines for a quantize result (source_bytes, bytes, seconds)."""
    print(f"model size  = {r.source_bytes / 2**20:8.2f} MB")
    print(f"quant size  = {r.bytes / 2**20:8.2f} MB")
    print(f"quantize time = {r.seconds * 1000:8.2f} ms")


def eta(seconds: float) -> str:
    s = int(seconds)
    head = f"{s // 3600} hours " if s >= 3600 else ""
    return f"{head}{(s % 3600) / 60:.2f} minutes"


def tensor_line(i: int, count: int, name: str, info, entry, nbytes: int) -> str:
    """llama-quantize's line for one tensor."""
    ne = list(info.shape) + [1] * (4 - len(info.shape))
    head = (f"[{i:4d}/{count:4d}] {name:>36s} - [{ne[0]:5d}, {ne[1]:5d}, {ne[2]:5d}, {ne[3]:5d}], "
            f"type = {info.qtype.name:>6s}, ")
    if entry.type == info.qtype.name:
        return head + f"size = {info.nbytes / 2**20:8.3f} MB"
    return head + (f"converting to {entry.type} .. size = {info.nbytes / 2**20:8.2f} MiB -> "
                   f"{nbytes / 2**20:8.2f} MiB")
