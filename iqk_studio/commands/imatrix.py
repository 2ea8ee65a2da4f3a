"""`iqk-studio-cli imatrix MODEL -f TEXT -o FILE [-c 512] [--chunks N]`: as llama-imatrix."""

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
from iqk_studio.commands._print import print_chunks
from iqk_studio.commands.perplexity import act_options, add_act_quant
from iqk_studio.demo import resolve_model_arg
from iqk_studio.engine.threads import set_threads
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.imatrix import imatrix_job

PASSTHROUGH = True  # `-- EXTRA ARGS` go to llama-imatrix


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF model (first split part), or `demo`")
    p.add_argument("-f", "--file", required=True, help="calibration text file")
    p.add_argument("-o", "--output", default="imatrix.dat",
                   help="output file (imatrix.dat); a .gguf name writes mainline's GGUF format")
    p.add_argument("--output-format", choices=("dat", "gguf"), default=None,
                   help="dat (ik_llama.cpp's llama-quantize reads only this) or gguf (mainline)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk length n_ctx (512)")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="compute threads (default: all cores)")
    p.add_argument("--chunks", type=int, default=-1, help="use at most N chunks")
    p.add_argument("--progress", action="store_true", help="show per-layer progress on stderr")
    from iqk_studio.commands.external import add_llama_option, add_store_option
    add_llama_option(p, "llama-imatrix")
    add_store_option(p)
    add_act_quant(p)


def run(args) -> int:
    check_threads(args.threads, "-t")
    check_text_file(args.file)
    from iqk_studio.commands import external

    model = resolve_model_arg(args.model)
    if args.llama_imatrix is not None:
        return external.run_imatrix(args, model)
    external.no_extra(args, "--llama-imatrix")
    if not model.exists():
        raise CliError(f"{model}: no such model file")
    with open_model(model) as m:
        inputs = {**model_files(m), "text file": args.file}
    check_output(args.output, inputs)
    check_memory([model], args.ctx_size)
    if args.threads is not None:
        set_threads(args.threads)
    job = imatrix_job(model, args.file, args.output, args.ctx_size, args.chunks,
                      fmt=args.output_format, **act_options(args))
    job = external.recorded(job, args, "imatrix", model, args.file, args.ctx_size, args.chunks)
    try:
        fin = print_chunks(job, "compute_imatrix", args.progress)
    finally:
        job.close()
    *notes, final, saved = fin.message.split("\n")
    for line in notes + [saved]:
        print(line, file=sys.stderr)
    print(final)
    return 0
