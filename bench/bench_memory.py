"""Peak memory of a perplexity run against jobs/memory.py's estimate (a script that prints figures).

For each model and context, a fresh child process runs one chunk of the perplexity job and reports
its peak RSS (ru_maxrss), next to a child that only opens the model (imports), measured in the
same run. The estimate should stay above the measured peak (the refusal is meant to be
conservative) without being far above it.
Usage: python bench/bench_memory.py [--ctx 512 1024 2048] [--model PATH ...] [--text FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

CHILD = r"""
import json, resource, sys
from iqk_studio.engine.model import config_from_metadata
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.memory import need, weight_bytes
from iqk_studio.jobs.perplexity import perplexity_job
model, text, n_ctx, run = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
with open_model(model) as m:
    emb = m.tensors.get("token_embd.weight")
    cfg = config_from_metadata(m.metadata, m.tensors, tuple(emb.shape) if emb else None)
    est = need(cfg, n_ctx, weight_bytes(m))
if run:
    for ev in perplexity_job(model, text, n_ctx=n_ctx, chunks=1):
        pass
scale = 1 if sys.platform == "darwin" else 1024
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(json.dumps({"peak": peak, "total": est.total, "attention": est.attention,
                  "weights": est.weights, "activations": est.activations}))
"""


def child(model: Path, text: Path, n_ctx: int, run: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), str(text), str(n_ctx),
                          "1" if run else "0"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--model", type=Path, nargs="+", default=[
        SHARED / "refs/ppl/tiny/tiny-qwen2.gguf", SHARED / "refs/ppl/tiny/tiny-qwen3moe.gguf"])
    ap.add_argument("--text", type=Path, default=SHARED / "data/wiki.test.raw")
    a = ap.parse_args()
    mib = 2**20
    print(f"{'model':<22} {'n_ctx':>6} {'imports MiB':>11} {'peak MiB':>9} {'estimate MiB':>12} "
          f"{'estimate/peak':>13}")
    for model in a.model:
        base = child(model, a.text, a.ctx[0], run=False)
        for n_ctx in a.ctx:
            r = child(model, a.text, n_ctx, run=True)
            print(f"{model.name:<22} {n_ctx:>6} {base['peak'] / mib:>11.0f} "
                  f"{r['peak'] / mib:>9.0f} {r['total'] / mib:>12.0f} "
                  f"{r['total'] / r['peak']:>13.2f}")


if __name__ == "__main__":
    main()
