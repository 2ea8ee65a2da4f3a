"""End-to-end time of `optimize` and how it splits (base pass, quantization errors, KLD probes,
solve, verification), against a baseline measured in the same run: one whole KLD pass of the
model over the same chunks (what a single sensitivity measurement without the prefix cache costs).
Then the same optimization again, answered from the store.

    .venv/bin/python bench/bench_optimize.py MODEL.gguf -f TEXT [--chunks 1] [--target-bpw 4.5]

The issue's bar: a 135M-parameter model end to end in under 15 minutes on 2 cores (the demo
model as F32 is 268M parameters, 168M of them in token_embd). Wall and CPU seconds are printed:
on a shared machine the wall time says little without the CPU time beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("-c", "--ctx-size", type=int, default=512)
    ap.add_argument("--target-bpw", type=float, default=4.5)
    ap.add_argument("--probes", type=int, default=1)
    ap.add_argument("--verify", type=int, default=2)
    args = ap.parse_args()

    from iqk_studio.engine.weights import GGUFWeights
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.events import Failed, Finished
    from iqk_studio.jobs.sensitivity import open_base
    from iqk_studio.optimize.job import Budget, Measured, optimize_job

    with open_model(args.model) as m:
        n_el = sum(t.n_elements for t in m.tensors.values())

        def one_pass():
            base = open_base(m, args.file, args.ctx_size, args.chunks)
            for _ in base.run():
                pass
            gen = base.evaluate(GGUFWeights(m), -1, "baseline")
            try:
                while True:
                    next(gen)
            except StopIteration:
                pass

        _, w_pass, c_pass = _timed(one_pass)
    # the base pass plus one whole evaluation: half of it is one KLD pass
    w_pass, c_pass = w_pass / 2, c_pass / 2
    print(f"model: {args.model}: {n_el / 1e6:.1f} M weights; baseline: one whole KLD pass over "
          f"{args.chunks} chunk(s) of {args.ctx_size}: {w_pass:.1f} s wall, {c_pass:.1f} s CPU")
    budget = Budget(total=int(args.target_bpw * n_el / 8))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.sqlite3"
        for label in ("first run", "second run (store)"):
            res, n_kld = None, 0

            def run():
                nonlocal res, n_kld
                for ev in optimize_job(args.model, args.file, budget, n_ctx=args.ctx_size,
                                       chunks=args.chunks, probes=args.probes,
                                       verify=args.verify, store=store):
                    if isinstance(ev, Measured):
                        n_kld += 1
                    elif isinstance(ev, Failed):
                        sys.exit(f"failed: {ev.message}")
                    elif isinstance(ev, Finished):
                        res = ev.result

            _, wall, cpu = _timed(run)
            t = res.timings
            print(f"\n{label}: {wall:.1f} s wall ({wall / 60:.1f} min), {cpu:.1f} s CPU = "
                  f"{wall / w_pass:.1f} x the baseline pass (wall), {cpu / c_pass:.1f} x (CPU)")
            for k in ("base", "errors", "kld", "solve", "verify"):
                print(f"  {k:<7} {t.get(k, 0):8.1f} s  {100 * t.get(k, 0) / max(wall, 1e-9):5.1f} %")
            print(f"  {n_kld} KLD probes measured ({t.get('kld', 0) / max(n_kld, 1):.2f} s each, "
                  f"{t.get('kld', 0) / max(n_kld, 1) / w_pass:.2f} x a whole pass); result "
                  f"{res.plan.bpw:.3f} bpw, predicted KLD {res.predicted['kld']:.5f}, measured "
                  f"{res.predicted['measured_kld']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
