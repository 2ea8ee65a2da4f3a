"""`iqk-studio-cli plan`: per-tensor types, exact sizes and reasons llama-quantize would give."""

from __future__ import annotations

import sys

from iqk_studio.commands._output import dump_json, printable
from iqk_studio.recipe import Plan, Recipe, plan
from iqk_studio.recipe.cmdline import mainline_type, split_custom_q, split_placement
from iqk_studio.recipe.library import resolve
from iqk_studio.recipe.lint import lint_placement
from iqk_studio.recipe.records import CLASS_OPTIONS, CLASSES, FLAG_OPTIONS, Rule

# llama-quantize's own words for its per-class options and flags (examples/quantize/quantize.cpp)
_CLASS_WHAT = {"output_tensor_type": "output.weight tensor",
               "token_embedding_type": "token_embd.weight tensor",
               "per_layer_token_embedding_type": "per-layer token_embd.weight tensors"}
_FLAG_HELP = {
    "pure": "disable k-quant mixtures and quantize all tensors to the same type",
    "leave_output_tensor": "leave output.weight un(re)quantized",
    "ignore_imatrix_rules": "ignore importance matrix rules when quantizing",
    "allow_requantize": "allow requantizing tensors that are already quantized",
}


def add_recipe_options(p) -> None:
    """Recipe options shared by `plan` and `recipe export` (llama-quantize's own spellings)."""
    p.add_argument("--recipe", help="recipe file, or the name of a library recipe")
    p.add_argument("--custom-q", action="append", default=[], metavar="RULES",
                   help="regex=type[,regex=type...] (first match wins; repeatable, accumulates)")
    p.add_argument("--tensor-type", action="append", default=[], metavar="REGEX=TYPE",
                   help="mainline llama.cpp spelling of a rule (pattern lower-cased)")
    for field, opt in CLASS_OPTIONS.items():
        what = _CLASS_WHAT.get(field, field.removesuffix("_type") + " tensors")
        p.add_argument(opt, dest=field, metavar="TYPE", help=f"the type of the {what}")
    for field, opt in FLAG_OPTIONS.items():
        p.add_argument(opt, dest=field, action="store_true", help=_FLAG_HELP[field])
    p.add_argument("--imatrix", metavar="FILE", help="imatrix path (changes some defaults)")
    p.add_argument("--placement", action="append", default=[], metavar="RULES",
                   help="regex=DEVICE[,...] like -ot (e.g. exps=CPU); the rest stays on GPU")


def recipe_from_args(args, base: str | None) -> Recipe:
    """The recipe the options describe; placement that llama-server would refuse (a bad regex,
    an unknown device) is a ValueError here, before any work."""
    r = resolve(args.recipe, need_base=not base) if args.recipe else None
    if r is None:
        if not base:
            raise ValueError("give a BASE_TYPE or --recipe")
        r = Recipe(base)
    elif base:
        r = r.with_(base=base)
    rules = list(r.rules)
    for arg in args.custom_q:
        rules += split_custom_q(arg)
    for arg in args.tensor_type:
        pat, _, typ = arg.partition("=")
        rules.append(Rule(pat.lower(), mainline_type(typ)))
    changes: dict = {"rules": tuple(rules)}
    for field in CLASS_OPTIONS:
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    for field in FLAG_OPTIONS:
        if getattr(args, field):
            changes[field] = True
    if args.imatrix:
        changes["imatrix"] = args.imatrix
    place = list(r.placement)
    for arg in args.placement:
        place.extend(split_placement(arg))
    changes["placement"] = tuple(place)
    r = r.with_(**changes)
    bad = [lint for lint in lint_placement(r) if lint.severity == "error"]
    if bad:
        raise ValueError(f"--placement: {bad[0].message} [{bad[0].where}]")
    return r


def load_recipe_imatrix(recipe: Recipe):
    """The recipe's imatrix, loaded (a missing or truncated file is a one-line GGUFError)."""
    if not recipe.imatrix:
        return None
    from iqk_studio.gguf.imatrix import load_imatrix

    return load_imatrix(recipe.imatrix)


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF model (first file of a split model)")
    p.add_argument("base", nargs="?", help="llama-quantize type, e.g. IQ4_KS or Q4_K_M")
    add_recipe_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--strict", action="store_true", help="exit 1 when lint finds an error")


def plan_json(p: Plan, recipe: Recipe, model: str) -> dict:
    return {
        "model": model, "base": recipe.base, "total_bytes": p.total_bytes, "gib": p.gib,
        "mib": p.mib, "bpw": p.bpw, "n_elements": p.n_elements, "source_bytes": p.source_bytes,
        "gpu_bytes": p.gpu_bytes, "cpu_bytes": p.cpu_bytes, "by_class": p.by_class,
        "by_layer": {str(k): v for k, v in p.by_layer.items()}, "by_device": p.by_device,
        "tensors": [{"name": e.name, "shape": list(e.shape), "source_type": e.source_type,
                     "type": e.type, "bytes": e.bytes, "reason": e.reason, "class": e.cls,
                     "layer": e.layer, "device": e.device, "warnings": list(e.warnings)}
                    for e in p.entries],
        "warnings": [{"code": w.code, "severity": w.severity, "message": w.message,
                      "where": w.where} for w in p.warnings],
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:10.2f} MiB"


def print_plan(p: Plan, out=None) -> None:
    out = out or sys.stdout
    w = min(64, max((len(e.name) for e in p.entries), default=10))
    print(f"{'tensor':<{w}}  {'shape':<22} {'type':<9} {'bytes':>13}  reason", file=out)
    for e in p.entries:
        shape = "x".join(map(str, e.shape))
        print(f"{printable(e.name):<{w}}  {shape:<22} {e.type:<9} {e.bytes:>13}  {e.reason}", file=out)
    print("\nby class:", file=out)
    for cls in CLASSES:
        if p.by_class.get(cls):
            print(f"  {cls:<16}{_mib(p.by_class[cls])}", file=out)
    print("by layer:", file=out)
    for layer, n in p.by_layer.items():
        print(f"  {'(none)' if layer < 0 else 'blk.' + str(layer):<16}{_mib(n)}", file=out)
    print(f"\ntotal: {p.total_bytes} bytes = {p.mib:.2f} MiB = {p.gib:.3f} GiB, {p.bpw:.4f} bpw "
          f"(source {p.source_bytes / 2**30:.3f} GiB)", file=out)
    print(f"GPU {p.gpu_bytes / 2**30:.3f} GiB, CPU {p.cpu_bytes / 2**30:.3f} GiB", file=out)
    if p.warnings:
        print(f"\n{len(p.warnings)} lint message(s):", file=out)
        for lint in p.warnings:
            print(f"  {printable(str(lint))}", file=out)


def run(args) -> int:
    from iqk_studio.demo import resolve_model_arg
    from iqk_studio.gguf.reader import open_model

    recipe = recipe_from_args(args, args.base)
    args.model = str(resolve_model_arg(args.model))
    imatrix = load_recipe_imatrix(recipe)
    names = None if imatrix is None else imatrix.values.keys()
    with open_model(args.model) as model:
        p = plan(model, recipe, imatrix_names=names)
    if args.json:
        dump_json(plan_json(p, recipe, str(args.model)), sys.stdout)
    else:
        print_plan(p)
    return 1 if args.strict and p.errors else 0
