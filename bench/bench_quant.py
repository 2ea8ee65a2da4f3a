"""Quantizer throughput and error for every type in the kernel registry.

For each type: million weights/s quantizing a (rows x 4096) float32 tensor on 1 and 2 threads,
without and with an importance vector, printed beside llama-quantize's figures from
../shared/refs/speed.md (those are with an imatrix, whole process); plus the error of the
round trip: RMSE relative to the row RMS, and the importance-weighted relative RMSE.
Compilation is excluded (one warm-up call per type and mode).

    .venv/bin/python bench/bench_quant.py [--rows 1024] [--types q4_K,iq4_xs] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numba
import numpy as np

from iqk_studio.quant import api, registry
from iqk_studio.quant.types import BY_NAME

ROOT = Path(__file__).resolve().parent.parent
SPEED_MD = ROOT.parent / "shared" / "refs" / "speed.md"
N = 4096


def reference_speeds(path: Path = SPEED_MD) -> dict[str, tuple[float, float]]:
    """{type: (M weights/s 1 thread, 2 threads)} from the llama-quantize table of speed.md."""
    out: dict[str, tuple[float, float]] = {}
    if not path.exists():
        return out
    row = re.compile(r"^\|\s*(\w+)\s*\|\s*[\d.]+\s*\|\s*([\d.]+)\s*\|\s*[\d.]+\s*\|\s*([\d.]+)\s*\|")
    for line in path.read_text().splitlines():
        m = row.match(line)
        if m and m.group(1) in BY_NAME:
            out[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return out


def realistic(rows: int, n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-tailed weights with per-column scale spread, and a log-normal importance vector."""
    rng = np.random.default_rng(seed)
    col = np.exp(rng.normal(0, 0.3, n)).astype(np.float32)
    x = (rng.standard_t(5, (rows, n)) * 0.02).astype(np.float32) * col
    imp = np.exp(rng.normal(0, 1.0, n)).astype(np.float32)
    return np.ascontiguousarray(x, np.float32), imp


def throughput(x, qtype, imp, rows_per_block: int, repeat: int) -> float:
    """Best of `repeat` wall times, in million weights per second (row blocks, as a job runs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for r0 in range(0, x.shape[0], rows_per_block):
            api.quantize(x[r0:r0 + rows_per_block], qtype, imp)
        best = min(best, time.perf_counter() - t0)
    return x.size / best / 1e6


def errors(x, qtype, imp) -> tuple[float, float]:
    """(mean over rows of RMSE / row RMS, mean over rows of the importance-weighted version)."""
    if qtype not in registry.dequantizers():
        return float("nan"), float("nan")
    y = api.dequantize(api.quantize(x, qtype, imp), qtype, x.shape[1])
    d2 = (y - x).astype(np.float64) ** 2
    x2 = x.astype(np.float64) ** 2
    rel = np.sqrt(d2.mean(1) / np.maximum(x2.mean(1), 1e-30)).mean()
    wrel = np.sqrt((d2 * imp).sum(1) / np.maximum((x2 * imp).sum(1), 1e-30)).mean()
    return float(rel), float(wrel)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--types", default="", help="comma-separated; default: every registered type")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rows-per-block", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args(argv)
    types = [t for t in a.types.split(",") if t] or sorted(registry.quantizers())
    threads = [int(t) for t in a.threads.split(",")]
    ref = reference_speeds()
    x, imp = realistic(a.rows)
    print(f"# {a.rows} x {N} float32, row blocks of {a.rows_per_block}; M weights/s; "
          f"ref = llama-quantize with imatrix (speed.md); ratio = ours / ref")
    head = "type       imatrix " + " ".join(f"{t}T M/s  ref  ratio" for t in threads)
    print(head + "   relRMSE  wRMSE")
    for qtype in types:
        if qtype not in registry.quantizers():
            print(f"{qtype:10s} not implemented")
            continue
        try:
            rel, wrel = errors(x[:64], qtype, imp)
        except ValueError as e:  # e.g. a registered repacked type whose base has no quantizer
            print(f"{qtype:10s} skipped: {e}")
            continue
        for use_imp in (False, True):
            q_imp = imp if use_imp else None
            try:
                api.quantize(x[:16], qtype, q_imp)  # warm up: compile outside the timing
            except api.QuantError as e:  # iq2_xxs, iq1_s, ...: an imatrix is required
                print(f"{qtype:10s} {'no ':7s} refused: {str(e)[:60]}")
                continue
            cells = []
            for i, nt in enumerate(threads):
                numba.set_num_threads(min(nt, numba.config.NUMBA_NUM_THREADS))
                mw = throughput(x, qtype, q_imp, a.rows_per_block, a.repeat)
                r = ref.get(qtype, (float("nan"),) * 2)[min(i, 1)] if use_imp else float("nan")
                cells.append(f"{mw:9.1f} {r:5.1f} {mw / r:6.2f}")
            err = f"   {rel:.4f}  {wrel:.4f}" if use_imp else ""
            print(f"{qtype:10s} {'yes' if use_imp else 'no ':7s} " + " ".join(cells) + err)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
