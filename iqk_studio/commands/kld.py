"""`iqk-studio-cli kld BASE MODEL -f TEXT [--chunks N] [--save-base FILE]`: KL-divergence of MODEL
against BASE (a GGUF, or a base log-prob file as written by --save-base or llama-perplexity's
--kl-divergence-base), printed like llama-perplexity --kl-divergence."""

from __future__ import annotations

import sys

from iqk_studio.cli import CliError
from iqk_studio.commands.perplexity import act_options, add_act_quant, print_chunks
from iqk_studio.demo import resolve_model_arg
from iqk_studio.engine.threads import set_threads
from iqk_studio.jobs.events import Failed, Finished, KldChunk, Progress
from iqk_studio.jobs.kld import format_chunk, format_header, is_base_file, kld_job, save_base_job


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
    add_act_quant(p)


def run(args) -> int:
    if args.threads is not None:
        set_threads(args.threads)
    base = args.base if is_base_file(args.base) else resolve_model_arg(args.base)
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
    first = True
    for ev in job:
        if isinstance(ev, Progress) and not ev.total and ev.message:
            print(f"kl_divergence: {ev.message} ..", file=sys.stderr, flush=True)
        elif isinstance(ev, KldChunk):
            if first:
                print(f"kl_divergence: {ev.tokens_per_second:.1f} tokens/s", file=sys.stderr)
                print(format_header())
                first = False
            print(format_chunk(ev), flush=True)
        elif isinstance(ev, Failed):
            raise CliError(ev.message)
        elif isinstance(ev, Finished):
            print()
            if ev.message:
                print(ev.message)
            return 0
    raise CliError("the job ended without a result")
