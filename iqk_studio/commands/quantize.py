"""iqk-studio-cli quantize MODEL OUT [BASE_TYPE]: llama-quantize with our own kernels, printing its
per-tensor lines and totals; Ctrl-C (or any error) leaves no output file behind."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iqk_studio.cli import CliError, interruptible
from iqk_studio.commands._checks import check_output, check_threads, model_files
from iqk_studio.commands._print import print_quant_totals
from iqk_studio.commands._print import tensor_line as _line
from iqk_studio.jobs.events import Failed, Finished, TensorDone

PASSTHROUGH = True  # `-- EXTRA ARGS` go to llama-quantize (before the file names)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from iqk_studio.commands.plan import add_recipe_options

    p.add_argument("model", help="source GGUF (first part of a split model)")
    p.add_argument("out", help="output GGUF (written to a temp file, renamed when complete)")
    p.add_argument("base_type", nargs="?", default=None,
                   help="llama-quantize type (Q4_K_M, IQ4_KS, ...), or the recipe's @base")
    add_recipe_options(p)  # --recipe, --custom-q, --imatrix, --allow-requantize, --pure, ...
    p.add_argument("--uniform", action="store_true",
                   help="quantize with weights 1 (no default weighting, imatrix ignored)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    from iqk_studio.commands.external import add_llama_option
    add_llama_option(p, "llama-quantize")


def build_plan(model, args):
    from iqk_studio.commands.plan import recipe_from_args
    from iqk_studio.quant.types import BY_NAME
    from iqk_studio.recipe import plan

    recipe = recipe_from_args(args, args.base_type)
    for r in recipe.rules:
        if r.type_name not in BY_NAME:
            raise CliError(f"invalid quantization type {r.type_name!r} in rule {r}")
    pl = plan(model, recipe)
    if pl.errors:
        raise CliError(pl.errors[0].message)
    return recipe, pl


def run(args) -> int:
    from iqk_studio.demo import resolve_model_arg
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.quantize import plan_targets, quantize_model
    from iqk_studio.quant.types import parse_ftype

    check_threads(args.threads)
    args.model = str(resolve_model_arg(args.model))
    from iqk_studio.commands import external

    if args.llama_quantize is not None:
        from iqk_studio.commands.plan import recipe_from_args

        if args.uniform:
            raise CliError("--uniform is for the built-in quantizer")
        recipe = recipe_from_args(args, args.base_type)
        with open_model(args.model) as model:
            out = check_output(args.out, {**model_files(model), "imatrix file": recipe.imatrix})
        return external.run_quantize(args, Path(args.model), out, recipe)
    external.no_extra(args, "--llama-quantize")
    with open_model(args.model) as model:
        recipe, pl = build_plan(model, args)
        out = check_output(args.out, {**model_files(model), "imatrix file": recipe.imatrix})
        try:
            ftype = parse_ftype(recipe.base)
        except KeyError as e:
            raise CliError(e.args[0]) from None
        imatrix = None
        if recipe.imatrix and not args.uniform:
            from iqk_studio.gguf.imatrix import load_imatrix
            imatrix = load_imatrix(recipe.imatrix)
        entries = {e.name: e for e in pl.entries}
        print(f"quantizing {args.model!r} to {args.out!r} as {ftype.name}")
        job = quantize_model(args.model, plan_targets(pl), out, imatrix=imatrix,
                             uniform=args.uniform, threads=args.threads,
                             allow_requantize=recipe.allow_requantize, ftype=ftype,
                             imatrix_path=recipe.imatrix)
        try:
            for ev in interruptible(job):
                if isinstance(ev, TensorDone):
                    print(_line(ev.index, ev.count, ev.name, model.tensors[ev.name],
                                entries[ev.name], ev.bytes), flush=True)
                elif isinstance(ev, Failed):
                    raise CliError(f"failed to quantize: {ev.message}")
                elif isinstance(ev, Finished):
                    print_quant_totals(ev.result)
        finally:
            job.close()  # Ctrl-C between events: the job removes its temp file
    sys.stdout.flush()
    return 0
