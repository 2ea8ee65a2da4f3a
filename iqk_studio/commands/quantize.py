"""iqk-studio-cli quantize MODEL OUT [BASE_TYPE]: llama-quantize with our own kernels, printing its
per-tensor lines and totals; Ctrl-C (or any error) leaves no output file behind."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iqk_studio.cli import CliError
from iqk_studio.jobs.events import Failed, Finished, TensorDone


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="source GGUF (first part of a split model)")
    p.add_argument("out", help="output GGUF (written to a temp file, renamed when complete)")
    p.add_argument("base_type", nargs="?", default=None,
                   help="llama-quantize type (Q4_K_M, IQ4_KS, ...; default: the recipe's, else Q8_0)")
    p.add_argument("--custom-q", action="append", default=[], metavar="REGEX=TYPE[,...]",
                   help="per-tensor rules as llama-quantize's --custom-q (repeatable, first match wins)")
    p.add_argument("--recipe", metavar="FILE",
                   help="text file of REGEX=TYPE lines (# comments); rules go before --custom-q's")
    p.add_argument("--imatrix", metavar="FILE", help="importance matrix (.dat or GGUF)")
    p.add_argument("--uniform", action="store_true",
                   help="quantize with weights 1 (no default weighting, imatrix ignored)")
    p.add_argument("--allow-requantize", action="store_true",
                   help="allow quantized source tensors (they are dequantized first)")
    p.add_argument("--pure", action="store_true", help="no mixture rules (llama-quantize --pure)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")


def parse_rules(text: str, where: str) -> list[tuple[str, str]]:
    """`--custom-q` items: split on every comma, each at its first '='."""
    rules = []
    for item in text.split(","):
        if "=" not in item:
            raise CliError(f"{where}: rule {item!r} has no '=' (expected REGEX=TYPE)")
        pat, typ = item.split("=", 1)
        rules.append((pat, typ))
    return rules


def read_recipe_file(path: str) -> list[tuple[str, str]]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise CliError(f"cannot read recipe {path}: {e.strerror or e}") from None
    rules = []
    for i, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if line:
            rules += parse_rules(line, f"{path}:{i}")
    return rules


def build_plan(model, args, rules):
    from iqk_studio.quant.types import BY_NAME
    from iqk_studio.recipe import Recipe, Rule, plan

    for pat, typ in rules:
        if typ not in BY_NAME:
            raise CliError(f"invalid quantization type {typ!r} in rule {pat}={typ}")
    recipe = Recipe(base=args.base_type or "Q8_0", rules=tuple(Rule(p, t) for p, t in rules),
                    pure=args.pure, allow_requantize=args.allow_requantize,
                    imatrix=args.imatrix)
    pl = plan(model, recipe)
    if pl.errors:
        raise CliError(pl.errors[0].message)
    return pl


def _line(i: int, count: int, name: str, info, entry, nbytes: int) -> str:
    ne = list(info.shape) + [1] * (4 - len(info.shape))
    head = (f"[{i:4d}/{count:4d}] {name:>36s} - [{ne[0]:5d}, {ne[1]:5d}, {ne[2]:5d}, {ne[3]:5d}], "
            f"type = {info.qtype.name:>6s}, ")
    if entry.type == info.qtype.name:
        return head + f"size = {info.nbytes / 2**20:8.3f} MB"
    return head + (f"converting to {entry.type} .. size = {info.nbytes / 2**20:8.2f} MiB -> "
                   f"{nbytes / 2**20:8.2f} MiB")


def run(args) -> int:
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.quantize import quantize_model
    from iqk_studio.quant.types import parse_ftype

    rules = read_recipe_file(args.recipe) if args.recipe else []
    for text in args.custom_q:
        rules += parse_rules(text, "--custom-q")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CliError(f"output directory {str(out.parent)!r} does not exist")
    try:
        ftype = parse_ftype(args.base_type or "Q8_0")
    except KeyError as e:
        raise CliError(e.args[0]) from None
    imatrix = None
    if args.imatrix and not args.uniform:
        from iqk_studio.gguf.imatrix import load_imatrix
        imatrix = load_imatrix(args.imatrix)
    with open_model(args.model) as model:
        pl = build_plan(model, args, rules)
        entries = {e.name: e for e in pl.entries}
        print(f"quantizing {args.model!r} to {args.out!r} as {ftype.name}")
        job = quantize_model(model, pl, out, imatrix=imatrix, uniform=args.uniform,
                             threads=args.threads, allow_requantize=args.allow_requantize,
                             ftype=ftype, imatrix_path=args.imatrix)
        try:
            for ev in job:
                if isinstance(ev, TensorDone):
                    print(_line(ev.index, ev.count, ev.name, model.tensors[ev.name],
                                entries[ev.name], ev.bytes), flush=True)
                elif isinstance(ev, Failed):
                    raise CliError(f"failed to quantize: {ev.message}")
                elif isinstance(ev, Finished):
                    r = ev.result
                    print(f"model size  = {r.source_bytes / 2**20:8.2f} MB")
                    print(f"quant size  = {r.bytes / 2**20:8.2f} MB")
                    print(f"quantize time = {r.seconds * 1000:8.2f} ms")
        finally:
            job.close()  # Ctrl-C between events: the job removes its temp file
    sys.stdout.flush()
    return 0
