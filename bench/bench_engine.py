"""Throughput and peak memory of the evaluation engine on the demo model (Gemma 3 270M Q4_K_M),
beside ik_llama.cpp's llama-perplexity figures in ../shared/refs/speed.md.

    .venv/bin/python bench/bench_engine.py [--chunks 4] [--threads 2] [--model PATH]

The engine computes in float32 whatever the file's types (weights are dequantized on load), so
the "F32" figure differs from the Q4_K_M one only by the load; it is measured with the same
weights, handed over as float32 arrays.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REF_TOKENS_PER_S = {"Q4_K_M": 528.0, "F32": 272.0}  # shared/refs/speed.md, 2 threads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", help="GGUF (default: the demo model)")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    from iqk_studio.demo import demo_model_path
    from iqk_studio.engine.forward import Forward
    from iqk_studio.engine.weights import OverrideWeights
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.events import Chunk
    from iqk_studio.jobs.perplexity import run_perplexity

    path = Path(args.model) if args.model else demo_model_path()
    ids_path = Path(args.shared, "refs", "tokens", "gemma3-270m.wiki.test.raw.ids.json")
    tokens = np.array(json.loads(ids_path.read_text())[:-1], dtype=np.int64)

    with open_model(path) as model:
        fw = Forward.from_model(model)
        t0 = time.perf_counter()
        for name in model.tensors:
            fw.ws.get(name)
        load = time.perf_counter() - t0
        print(f"model {path.name}: dequantize to float32 {load:.2f} s")
        list(run_perplexity(fw, tokens, chunks=1))  # warm-up: numba compile, page-in
        for label, f in (("Q4_K_M", fw), ("F32", _f32_forward(fw, OverrideWeights))):
            w0, c0 = time.perf_counter(), time.process_time()
            last = None
            for ev in run_perplexity(f, tokens[512:], chunks=args.chunks):
                if isinstance(ev, Chunk):
                    last = ev
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            tps = args.chunks * 512 / wall
            ref = REF_TOKENS_PER_S[label]
            print(f"{label:7s} {args.chunks} chunks: {wall:6.2f} s wall, {cpu:6.2f} s cpu, "
                  f"{tps:6.1f} tokens/s (ik_llama.cpp {ref:.0f}, ratio {tps / ref:.2f}); "
                  f"PPL {last.ppl:.4f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB; load average {os.getloadavg()[0]:.2f}")
    return 0


def _f32_forward(fw, override_cls):
    """The same model with every tensor handed over as a float32 array (as an F32 file gives)."""
    from iqk_studio.engine.forward import Forward

    ws = override_cls(fw.ws, {n: fw.ws.get(n) for n in fw.ws.names()})
    return Forward(fw.cfg, ws)


if __name__ == "__main__":
    sys.exit(main())
