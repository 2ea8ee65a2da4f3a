"""`iqk-studio-cli perplexity MODEL -f TEXT [-c 512] [--chunks N] [--recipe FILE ...]`: prints like
llama-perplexity; with a recipe, the model is evaluated as the recipe would quantize it (in memory)."""

from __future__ import annotations

import sys

from iqk_studio.cli import CliError
from iqk_studio.commands._checks import check_memory, check_text_file, check_threads
from iqk_studio.commands._print import print_chunks
from iqk_studio.demo import resolve_model_arg
from iqk_studio.engine.threads import set_threads
from iqk_studio.jobs.perplexity import perplexity_job

PASSTHROUGH = True  # `-- EXTRA ARGS` go to llama-perplexity


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF model (first split part), or `demo`")
    p.add_argument("-f", "--file", required=True, help="text file (e.g. wiki.test.raw)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk length n_ctx (512)")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="compute threads (default: all cores)")
    p.add_argument("--chunks", type=int, default=-1, help="evaluate at most N chunks")
    p.add_argument("--progress", action="store_true", help="show per-layer progress on stderr")
    from iqk_studio.commands.external import add_llama_option, add_store_option
    add_llama_option(p, "llama-perplexity")
    p.add_argument("--stop-on-nan", action="store_true",
                   help="with --llama-perplexity: stop the run at the first NaN chunk")
    add_store_option(p)
    add_act_quant(p)
    g = p.add_argument_group("evaluate a recipe (quantize -> dequantize in memory, no file)")
    g.add_argument("--base", metavar="TYPE", help="llama-quantize type (Q4_K_M, IQ4_KS, ...)")
    from iqk_studio.commands.plan import add_recipe_options
    add_recipe_options(g)


def add_act_quant(p) -> None:
    p.add_argument("--act-quant", choices=("ik", "none"), default="ik",
                   help="ik (default): multiply quantized weights as ik_llama.cpp's CPU backend "
                   "does, activations quantized to the weight type's q8 format; none: float32 "
                   "activations")


def act_options(args) -> dict:
    """act_quant and the llama-perplexity thread count it emulates (-t, else all cores)."""
    return {"act_quant": args.act_quant, "ik_threads": args.threads}


def _wants_recipe(args) -> bool:
    return bool(args.base or args.recipe or args.custom_q or args.tensor_type)


def recipe_job(model_path, args):
    """(the evaluate_plan job, recipe, plan) for the recipe the options describe (clear errors
    for bad ones)."""
    from iqk_studio.commands.plan import recipe_from_args
    from iqk_studio.gguf.imatrix import load_imatrix
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.evaluate import evaluate_plan
    from iqk_studio.recipe import plan

    recipe = recipe_from_args(args, args.base)
    with open_model(model_path) as model:
        pl = plan(model, recipe)
    if pl.errors:
        raise CliError(pl.errors[0].message)
    imatrix = load_imatrix(recipe.imatrix) if recipe.imatrix else None
    print(f"perplexity: evaluating the recipe in memory: {pl.total_bytes / 2**20:.2f} MiB "
          f"({pl.bpw:.4f} bpw)", file=sys.stderr)
    job = evaluate_plan(model_path, pl, args.file, args.ctx_size, args.chunks, imatrix,
                        **act_options(args))
    return job, recipe, pl


def run(args) -> int:
    check_threads(args.threads, "-t")
    check_text_file(args.file)
    from iqk_studio.commands import external

    model = resolve_model_arg(args.model)
    if args.llama_perplexity is not None:
        if _wants_recipe(args):
            raise CliError("--llama-perplexity evaluates a GGUF file: quantize the recipe first "
                           "(quantize --llama-quantize), then measure the file")
        return external.run_perplexity(args, model)
    external.no_extra(args, "--llama-perplexity")
    if not model.exists():
        raise CliError(f"{model}: no such model file")
    recipe = plan = None
    check_memory([model], args.ctx_size, copies=2 if _wants_recipe(args) else 1)
    if args.threads is not None:
        set_threads(args.threads)
    if _wants_recipe(args):
        job, recipe, plan = recipe_job(model, args)
    else:
        job = perplexity_job(model, args.file, n_ctx=args.ctx_size, chunks=args.chunks,
                             **act_options(args))
    job = external.recorded(job, args, "perplexity", model, args.file, args.ctx_size,
                            args.chunks, recipe=recipe, plan=plan)
    try:
        fin = print_chunks(job, "perplexity", args.progress)
    finally:
        if hasattr(job, "close"):
            job.close()
    print(fin.message, flush=True)
    return 0
