"""`iqk-studio-cli grids [--json]`: the value grids of the quant types and the 4-bit grids they are
compared with; `grids MODEL`: per tensor, which iq4k variant IQ4_KS / IQ4_K blocks choose and how
the blocks fit fp4 grids against iq4k, summed over the model."""

from __future__ import annotations

import json
import sys
import textwrap

from iqk_studio.cli import CliError
from iqk_studio.jobs.type_errors import MAX_SAMPLE


def add_arguments(p) -> None:
    p.add_argument("model", nargs="?", help="GGUF model (or `demo`): analyse its weights")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: grid name -> values in index order (with MODEL: the "
                   "statistics)")
    p.add_argument("--only", metavar="REGEX", help="with MODEL: only tensors the regex finds")
    p.add_argument("--max-elements", type=int, default=MAX_SAMPLE, metavar="N",
                   help=f"with MODEL: weights sampled per tensor (first rows; {MAX_SAMPLE})")
    p.add_argument("--imatrix", help="with MODEL: quantize with this imatrix for the variant "
                   "counts (tensors not already IQ4_KS / IQ4_K)")
    p.add_argument("--uniform", action="store_true",
                   help="with MODEL: quantize with w = 1 instead of the default weighting")


def print_tables(out=None) -> None:
    from iqk_studio.quant.grids import ALL_GRIDS, table_json

    out = out or sys.stdout
    values = table_json()
    for g in ALL_GRIDS:
        v = values[g.name]
        kind = "pairs" if g.values.ndim == 2 else ("int" if g.integer else "float")
        print(f"{g.name}  ({len(v)} {kind}; {', '.join(g.types) or 'reference'})", file=out)
        print(f"  source: {g.source}" + (f"; {g.note}" if g.note else ""), file=out)
        text = ", ".join(f"{x[0]}/{x[1]}" if kind == "pairs" else f"{x:g}" if kind == "float"
                         else str(x) for x in v)
        print(textwrap.fill(text, 100, initial_indent="    ", subsequent_indent="    "), file=out)


def _row(name, variants, rel, better, n_blocks, dist) -> str:
    ks, k = (" ".join(f"{c:>5}" for c in variants[q]) for q in ("iq4_ks", "iq4_k"))
    fits = " ".join(f"{rel[g]:>8.5f}" for g in ("e2m1", "fe1m2", "nf4", "iq4k"))
    share = better / n_blocks if n_blocks else 0.0
    return f"{name:<32} {ks}  {k}  {fits} {100 * share:>6.1f}% {dist:>+9.5f}"


def run(args) -> int:
    if args.model is None:
        if args.json:
            from iqk_studio.quant.grids import table_json
            json.dump(table_json(), sys.stdout)
            print()
        else:
            print_tables()
        return 0
    return _model_stats(args)


def _model_stats(args) -> int:
    from iqk_studio.demo import resolve_model_arg
    from iqk_studio.gguf.imatrix import load_imatrix
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.events import Failed, Finished, Progress
    from iqk_studio.jobs.grid_stats import TensorGridStats, eligible, grid_stats_job
    from iqk_studio.quant.grid_fit import VARIANTS

    if args.max_elements < 256:
        raise CliError("--max-elements must be at least 256")
    path = resolve_model_arg(args.model)
    imatrix = load_imatrix(args.imatrix) if args.imatrix else None
    rows, total = [], None
    with open_model(path) as model:
        names = eligible(model, args.only)
        if not args.json:
            print(f"{'':<32} {'IQ4_KS blocks per variant':<24}  {'IQ4_K blocks per variant':<24}"
                  f"  {'relative squared error of the best fit':<36} fp4 better  mean dist")
            v = " ".join(f"{x[:5]:>5}" for x in ("base", "shift", "mirr", "sh+mi"))
            print(f"{'tensor':<32} {v}  {v}  {'e2m1':>8} {'fe1m2':>8} {'nf4':>8} {'iq4k':>8}")
        for ev in grid_stats_job(model, names, imatrix, args.uniform, args.max_elements):
            if isinstance(ev, TensorGridStats):
                rows.append(ev)
                if not args.json:
                    print(_row(ev.name, ev.variants, ev.rel(), ev.fp4_better, ev.n_blocks,
                               ev.mean_distance), flush=True)
            elif isinstance(ev, Progress) and ev.message and sys.stderr.isatty():
                print(f"\r{ev.message[:70]:<70}", end="", file=sys.stderr, flush=True)
            elif isinstance(ev, Failed):
                raise CliError(ev.message)
            elif isinstance(ev, Finished):
                total = ev.result
    if args.json:
        json.dump({"variants": list(VARIANTS), "tensors": [_stats_json(r) for r in rows],
                   "model": _stats_json(total)}, sys.stdout, indent=1)
        print()
    else:
        print(_row(f"model ({total.n_tensors} tensors)", total.variants, total.rel(),
                   total.fp4_better, total.n_blocks, total.mean_distance))
        print("variants: base = iq4k row, shift = shifted row, mirr = negative block scale; "
              "fits over blocks of 32; dist = mean (best fp4 - best iq4k) / block Σx²")
    return 0


def _stats_json(s) -> dict:
    out = {"variants": {q: [int(c) for c in v] for q, v in s.variants.items()},
           "relative_error": s.rel(), "n_blocks": s.n_blocks, "fp4_better": s.fp4_better,
           "mean_distance": s.mean_distance}
    if hasattr(s, "name"):
        out = {"name": s.name, "n_weights": s.n_weights, "variant_source": s.variant_source,
               **out}
    return out
