"""Validation of the optimizer as a user would do it: llama-quantize's own mixes (as plan() sizes
them) against the optimizer's recipe for the same byte budget, both evaluated in memory by
perplexity on held-out text (chunks the optimizer never measured). Writes a JSON of the points
and prints a markdown table; bench/plot_optimize.py draws the chart from the JSON files.

    .venv/bin/python bench/validate_optimize.py MODEL.gguf --calib CALIB.txt --heldout TEXT \\
        --name demo-f32 --mixes Q3_K_M,IQ4_XS,Q4_K_M [--chunks 1] [--eval-chunks 4] [-o out.json]

CALIB and TEXT: e.g. the first and the second half of wiki.test.raw (split at a line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


class HeldOut:
    """The source model over the held-out chunks, once; each recipe is then quantized in
    memory and compared with it: PPL and KLD against the source on the same tokens."""

    def __init__(self, model, text, n_ctx, chunks):
        from iqk_studio.jobs.sensitivity import open_base

        self.model = model
        self.base = open_base(model, text, n_ctx, chunks)
        for _ in self.base.run():
            pass

    def point(self, recipe, label):
        from iqk_studio.engine.weights import QuantizedWeights
        from iqk_studio.jobs.recipe_eval import plan_types
        from iqk_studio.recipe import plan

        pl = plan(self.model, recipe)
        t0 = time.perf_counter()
        types = plan_types(pl)
        ws = QuantizedWeights(self.base.fw.ws, types)
        gen = self.base.evaluate(ws, self.base.start_for(types) if types else 10**6, label)
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            s = stop.value.stats
        print(f"  {label:<24} {pl.total_bytes:>11} B {pl.bpw:6.3f} bpw  PPL {s.ppl:.4f} ± "
              f"{s.ppl_err:.4f}  KLD {s.kld:.5f} ± {s.kld_err:.5f}  "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        return {"label": label, "total_bytes": pl.total_bytes, "bpw": pl.bpw, "ppl": s.ppl,
                "ppl_err": s.ppl_err, "kld": s.kld, "kld_err": s.kld_err,
                "same_top": s.same_top}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--calib", required=True, help="text the optimizer measures on")
    ap.add_argument("--heldout", required=True, help="text every recipe is evaluated on")
    ap.add_argument("--name", required=True)
    ap.add_argument("--mixes", default="Q3_K_M,IQ4_XS,Q4_K_M")
    ap.add_argument("--types", help="optimizer types (default: its own)")
    ap.add_argument("-c", "--ctx-size", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=1, help="chunks the optimizer measures")
    ap.add_argument("--eval-chunks", type=int, default=4, help="held-out chunks evaluated")
    ap.add_argument("--probes", type=int, default=1)
    ap.add_argument("--store", help="results store (default: the user's)")
    ap.add_argument("--extra-bpw", default="", help="more optimizer budgets (bpw, comma-separated)")
    ap.add_argument("--merge", help="add the --extra-bpw points to this JSON (mixes not redone)")
    ap.add_argument("-o", "--output", help="JSON file (default: optimize-<name>.json)")
    args = ap.parse_args()

    from pathlib import Path

    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.events import Failed, Finished
    from iqk_studio.optimize.job import Budget, optimize_job
    from iqk_studio.optimize.space import DEFAULT_TYPES
    from iqk_studio.recipe import plan
    from iqk_studio.recipe.records import Recipe
    from iqk_studio.recipe.textfile import dumps

    types = tuple(args.types.split(",")) if args.types else DEFAULT_TYPES
    out = {"model": str(args.model), "name": args.name, "n_ctx": args.ctx_size,
           "chunks": args.chunks, "eval_chunks": args.eval_chunks, "types": list(types),
           "probes": args.probes, "mixes": [], "optimizer": []}
    m = open_model(args.model)
    allow = any(t.qtype.is_quantized for t in m.tensors.values())
    print(f"{args.name}: source {m.n_bytes} bytes", file=sys.stderr)
    held = HeldOut(m, args.heldout, args.ctx_size, args.eval_chunks)
    out["source"] = held.point(Recipe("COPY"), "source")
    sizes = []
    if args.merge:  # keep the source and the mixes, redo the optimizer's points
        old = json.loads(Path(args.merge).read_text())
        out.update(source=old["source"], mixes=old["mixes"])
        sizes = [(r["label"], r["total_bytes"]) for r in old["mixes"]]
    else:
        for mix in args.mixes.split(","):
            r = Recipe(mix, allow_requantize=allow)
            out["mixes"].append(held.point(r, mix))
            sizes.append((mix, plan(m, r).total_bytes))
    n_el = sum(t.n_elements for t in m.tensors.values())
    sizes += [(f"{b} bpw", int(float(b) * n_el / 8)) for b in args.extra_bpw.split(",") if b]
    seen: dict[str, dict] = {}
    for mix, size in sizes:
        t0 = time.perf_counter()
        res = None
        for ev in optimize_job(args.model, args.calib, Budget(total=size), types, args.ctx_size,
                               args.chunks, probes=args.probes, verify=2,
                               store=args.store):
            if isinstance(ev, Failed):
                sys.exit(f"optimize at {mix}'s size: {ev.message}")
            if isinstance(ev, Finished):
                res = ev.result
        secs = time.perf_counter() - t0
        text = dumps(res.recipe)
        if text not in seen:  # the same recipe for two budgets is evaluated once
            seen[text] = held.point(res.recipe, f"optimizer <= {mix}")
        pt = dict(seen[text], label=f"optimizer <= {mix}")
        pt.update(budget=size, seconds=secs, recipe=dumps(res.recipe),
                  predicted_kld=res.predicted["kld"], measured_kld=res.predicted["measured_kld"])
        out["optimizer"].append(pt)
    path = Path(args.output or f"optimize-{args.name}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"\n| {args.name} | bytes | bpw | PPL (held-out) | KLD vs source (held-out) |\n"
          "|---|---:|---:|---:|---:|")
    for p in [out["source"]] + sorted(out["mixes"] + out["optimizer"], key=lambda r: r["bpw"]):
        print(f"| {p['label']} | {p['total_bytes']} | {p['bpw']:.3f} | {p['ppl']:.4f} ± "
              f"{p['ppl_err']:.4f} | {p['kld']:.5f} ± {p['kld_err']:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
