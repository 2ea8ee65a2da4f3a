"""Open-time figures for the GGUF reader (a script that prints numbers, not a test).

Makes the Qwen3-30B-A3B BF16 skeleton (~57 GiB apparent, sparse) in a temp dir, with and without a
tokenizer stub of the real sizes (151936 tokens + 151387 merges), and prints the median time of
open_model() next to two baselines measured in the same run: reading the raw header bytes, and the
stock gguf.GGUFReader. With --model PATH it also times PATH (e.g. a real model with a
262k-token vocabulary).  Usage: python bench/bench_open.py [--repeat N] [--model PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from iqk_studio.gguf.reader import open_model
from iqk_studio.gguf.skeleton import write_preset


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_file(path: Path, repeat: int, stock: bool) -> None:
    with open_model(path) as m:
        header = m.files[0].data_offset
        n = len(m.tensors)
        strings = sum(len(v) for v in m.metadata.values() if isinstance(v, list))
    size = path.stat().st_size
    print(f"{path.name}: {size / 2**30:.2f} GiB apparent, header {header / 2**20:.2f} MiB, "
          f"{n} tensors, {strings} metadata strings")

    def raw():
        with open(path, "rb") as f:
            f.read(header)

    def ours():
        open_model(path).close()

    print(f"  raw header read (baseline) : {median_time(raw, repeat) * 1e3:9.2f} ms")
    print(f"  iqk_studio open_model      : {median_time(ours, repeat) * 1e3:9.2f} ms (median "
          f"of {repeat})")
    if stock:
        try:
            import gguf
        except ImportError:
            print("  gguf.GGUFReader            : (gguf package not installed)")
            return
        r = max(1, repeat // 5)
        try:
            t = median_time(lambda: gguf.GGUFReader(path), r)
            print(f"  gguf.GGUFReader (stock)    : {t * 1e3:9.2f} ms (median of {r})")
        except Exception as e:  # the stock reader raises on fork type ids
            print(f"  gguf.GGUFReader (stock)    : fails: {type(e).__name__}: {e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--model", type=Path, help="also time this GGUF file")
    ap.add_argument("--no-stock", action="store_true", help="skip the gguf.GGUFReader baseline")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for tok in (False, True):
            t0 = time.perf_counter()
            name = "qwen3-30b-a3b-skeleton" + ("-tokenizer" if tok else "") + "-bf16.gguf"
            p = write_preset("qwen3-30b-a3b", Path(d) / name, tokenizer=tok)
            print(f"skeleton written in {(time.perf_counter() - t0) * 1e3:.1f} ms")
            bench_file(p, args.repeat, not args.no_stock)
            p.unlink()
    if args.model:
        bench_file(args.model, args.repeat, not args.no_stock)


if __name__ == "__main__":
    main()
