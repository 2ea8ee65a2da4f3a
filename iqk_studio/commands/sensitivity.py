"""iqk-studio-cli sensitivity: KLD cost of quantizing each tensor group to a type."""

from __future__ import annotations

import sys

from iqk_studio.cli import CliError, interruptible
from iqk_studio.commands._checks import check_memory, check_text_file
from iqk_studio.demo import resolve_model_arg
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.sensitivity import GROUPINGS, Sensitivity, candidates, sensitivity_job


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF model (the reference precision), or `demo`")
    p.add_argument("-f", "--file", required=True, help="evaluation text")
    p.add_argument("--type", required=True, help="type to test, as llama-quantize spells it")
    p.add_argument("--by", choices=GROUPINGS, default="role",
                   help="group tensors by role (attn_v, ffn_down, ...), single tensor, or layer")
    p.add_argument("--only", metavar="REGEX", help="only tensors whose name the regex finds")
    p.add_argument("-c", "--ctx-size", type=int, default=512)
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--imatrix", help="imatrix file (.dat or GGUF)")
    from iqk_studio.commands.external import add_store_option
    add_store_option(p)


def run(args) -> int:
    from iqk_studio.gguf.imatrix import load_imatrix
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.quant.types import by_name

    path = resolve_model_arg(args.model)
    by_name(args.type)  # a clear error for an unknown or miss-cased type
    if args.chunks < 1:
        raise CliError("--chunks must be at least 1")
    check_text_file(args.file)
    check_memory([path], args.ctx_size, copies=2, per_vocab_token=args.chunks)
    with open_model(path) as m:
        cands = candidates(m, args.type, args.by, args.only)
    imatrix = load_imatrix(args.imatrix) if args.imatrix else None
    rows = []
    print(f"{'group':<28} {'MiB before':>11} {'MiB after':>10} {'mean KLD':>12} {'+/-':>10} "
          f"{'same top':>9}")
    from iqk_studio.commands.external import recorded

    job = recorded(sensitivity_job(path, args.file, cands, args.ctx_size, args.chunks, imatrix),
                   args, "sensitivity", path, args.file, args.ctx_size, args.chunks,
                   facts={"type": args.type, "by": args.by, "only": args.only,
                          "imatrix": args.imatrix})
    try:
        return _print(job, rows)
    finally:
        job.close()


def _print(job, rows) -> int:
    for ev in interruptible(job):
        if isinstance(ev, Sensitivity):
            rows.append(ev)
            print(f"{ev.label:<28} {ev.bytes_before / 2**20:>11.3f} {ev.bytes_after / 2**20:>10.3f}"
                  f" {ev.kld:>12.6f} {ev.kld_err:>10.6f} {100 * ev.same_top:>8.2f}%", flush=True)
        elif isinstance(ev, Progress) and ev.message and sys.stderr.isatty():
            print(f"\r{ev.message[:70]:<70}", end="", file=sys.stderr, flush=True)
        elif isinstance(ev, Failed):
            raise CliError(ev.message)
        elif isinstance(ev, Finished):
            print(ev.message, file=sys.stderr)
    saved = [(r.bytes_before - r.bytes_after, r) for r in rows if r.bytes_before > r.bytes_after]
    if saved:
        print("\ncheapest savings first (mean KLD per MiB saved):")
        for b, r in sorted(saved, key=lambda t: t[1].kld / t[0]):
            print(f"  {r.label:<28} {r.kld / (b / 2**20):.6f}")
    return 0
