"""`iqk-studio-cli kld BASE MODEL -f TEXT [--chunks N] [--save-base FILE]`: KL-divergence of MODEL
against BASE (a GGUF, or a base log-prob file as written by --save-base or llama-perplexity's
--kl-divergence-base), printed like llama-perplexity --kl-divergence."""

from __future__ import annotations

import sys

from iqk_studio.cli import CliError
from iqk_studio.commands._checks import (
    check_memory,
    check_output,
    check_text_file,
    check_threads,
    model_files,
)
from iqk_studio.commands._print import print_chunks, print_kld
from iqk_studio.commands.perplexity import act_options, add_act_quant
from iqk_studio.demo import resolve_model_arg
from iqk_studio.engine.threads import set_threads
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.kld import is_base_file, kld_job, save_base_job

PASSTHROUGH = True  # `-- EXTRA ARGS` go to llama-perplexity


def add_arguments(p) -> None:
    p.add_argument("base", help="base model GGUF (or `demo`), or a base log-prob file")
    p.add_argument("model", nargs="?", help="model to compare (omit with --save-base to only "
                   "write the base file)")
    p.add_argument("-f", "--file", help="text file (not needed with a base log-prob file)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk length n_ctx (512)")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="compute threads (default: all cores)")
    p.add_argument("--chunks", type=int, default=-1, help="evaluate at most N chunks")
    p.add_argument("--save-base", metavar="FILE", help="also write the base's log-probs to FILE "
                   "(llama-perplexity's --kl-divergence-base format) for reuse")
    from iqk_studio.commands.external import add_llama_option, add_store_option
    add_llama_option(p, "llama-perplexity")
    p.add_argument("--progress", action="store_true",
                   help="with --llama-perplexity: show the tool's last output line on stderr")
    p.add_argument("--stop-on-nan", action="store_true",
                   help="with --llama-perplexity: stop the run at the first NaN chunk")
    add_store_option(p)
    add_act_quant(p)


def _check(args, base) -> None:
    """Options, the --save-base output against every input, and the memory of the run."""
    check_threads(args.threads, "-t")
    models = [p for p in (base, args.model and resolve_model_arg(args.model))
              if p is not None and not is_base_file(p)]
    if args.save_base:
        inputs = {"text file": args.file}
        for i, p in enumerate(models):
            with open_model(p) as m:
                inputs.update({f"{k} ({i + 1})": v for k, v in model_files(m).items()})
        check_output(args.save_base, inputs)
    if models:
        check_memory(models, args.ctx_size, per_vocab_token=2)


def run(args) -> int:
    for what, path in (("BASE", args.base), ("MODEL", args.model)):
        if path not in (None, "demo"):
            check_text_file(path, what)  # a FIFO would block is_base_file()
    check_text_file(args.file)
    from iqk_studio.commands import external

    base = args.base if is_base_file(args.base) else resolve_model_arg(args.base)
    if args.llama_perplexity is not None:
        if args.model is None and not (args.save_base and args.file):
            raise CliError("give MODEL, or --save-base FILE with -f TEXT to only save the base")
        return external.run_kld(args, base, None if args.model is None
                                else resolve_model_arg(args.model))
    external.no_extra(args, "--llama-perplexity")
    _check(args, base)
    if args.threads is not None:
        set_threads(args.threads)
    if args.model is None:
        if not args.save_base or not args.file:
            raise CliError("give MODEL, or --save-base FILE with -f TEXT to only save the base")
        fin = print_chunks(save_base_job(base, args.file, args.save_base, args.ctx_size,
                                         args.chunks, **act_options(args)), "perplexity")
        print(fin.message)
        print(f"saved base log-probs to {args.save_base}", file=sys.stderr)
        return 0
    model = resolve_model_arg(args.model)
    if not is_base_file(base) and not args.file:
        raise CliError("-f TEXT is needed when BASE is a model")
    job = kld_job(base, model, args.file, args.ctx_size, args.chunks, args.save_base,
                  **act_options(args))
    job = external.recorded(job, args, "kld", model, args.file, args.ctx_size, args.chunks,
                            base_model_path=None if is_base_file(base) else base)
    try:
        return print_kld(job)
    finally:
        job.close()
