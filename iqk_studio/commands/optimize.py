"""iqk-studio-cli optimize MODEL (--target-gib X | --target-bpw X | --gpu-gib X --cpu-gib Y
--placement RULES) -f TEXT: the mix that loses least for a size budget, as a recipe on stdout
(or --json); progress on stderr; Ctrl-C keeps every measurement already made."""

from __future__ import annotations

import json
import sys

from iqk_studio.cli import CliError


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF model at the precision to start from (F32/BF16/F16), "
                   "or `demo`")
    p.add_argument("-f", "--file", required=True, help="text the losses are measured on")
    size = p.add_argument_group("budget (one of)")
    size.add_argument("--target-gib", type=float, metavar="X", help="total tensor GiB")
    size.add_argument("--target-bpw", type=float, metavar="X", help="bits per weight")
    size.add_argument("--gpu-gib", type=float, metavar="X", help="GiB on the GPU (with --cpu-gib)")
    size.add_argument("--cpu-gib", type=float, metavar="Y", help="GiB on the CPU (with --gpu-gib)")
    p.add_argument("--placement", action="append", default=[], metavar="RULES",
                   help="regex=DEVICE[,...] like -ot (e.g. exps=CPU); the rest stays on GPU")
    p.add_argument("--types", metavar="LIST",
                   help="types to choose from, comma-separated (default: "
                   "q2_K,q3_K,iq4_xs,q4_0,q4_K,q5_0,q5_K,q6_K,q8_0)")
    p.add_argument("-c", "--ctx-size", type=int, default=512)
    p.add_argument("--chunks", type=int, default=1, help="chunks the losses are measured on")
    p.add_argument("--imatrix", metavar="FILE", help="imatrix used to quantize (and written "
                   "into the recipe)")
    p.add_argument("--probes", type=int, default=1,
                   help="types measured per layer group (the others are scaled by their "
                   "quantization error)")
    p.add_argument("--verify", type=int, default=2,
                   help="best candidates evaluated for real before choosing (0: none)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the recipe to FILE")
    p.add_argument("--json", action="store_true",
                   help='print {"recipe", "total_bytes", "bpw", "predicted"} on stdout')
    p.add_argument("--no-store", action="store_true",
                   help="neither read nor keep measurements in the results store")


def budget_from_args(args, n_elements: int):
    from iqk_studio.optimize.job import Budget

    given = [n for n in ("target_gib", "target_bpw", "gpu_gib", "cpu_gib")
             if getattr(args, n) is not None]
    if not given:
        raise CliError("give a budget: --target-gib, --target-bpw, or --gpu-gib with --cpu-gib")
    for n in given:
        if not getattr(args, n) > 0:
            raise CliError(f"--{n.replace('_', '-')} must be positive")
    split = {"gpu_gib", "cpu_gib"} & set(given)
    if len(given) > 1 and not (split == set(given) and len(split) == 2):
        raise CliError("give one budget: --target-gib, --target-bpw, or --gpu-gib with --cpu-gib")
    if split and len(split) != 2:
        raise CliError("--gpu-gib and --cpu-gib go together")
    if args.target_gib is not None:
        return Budget(total=int(args.target_gib * 2**30))
    if args.target_bpw is not None:
        return Budget(total=int(args.target_bpw * n_elements / 8))
    if not args.placement:
        raise CliError("--gpu-gib/--cpu-gib need --placement (which tensors go to the CPU)")
    return Budget(gpu=int(args.gpu_gib * 2**30), cpu=int(args.cpu_gib * 2**30))


def _placement(args):
    from iqk_studio.recipe.cmdline import split_placement

    items = [item for arg in args.placement for item in arg.split(",")]
    bad = next((item for item in items if not item.partition("=")[0]), None)
    if bad is not None:
        raise CliError(f"bad placement {bad!r} (expected regex=DEVICE)")
    return tuple(p for arg in args.placement for p in split_placement(arg))


def run(args) -> int:
    from iqk_studio.demo import resolve_model_arg
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.events import Failed, Finished, Progress
    from iqk_studio.optimize.job import Measured, optimize_job
    from iqk_studio.optimize.space import DEFAULT_TYPES
    from iqk_studio.recipe.textfile import dumps, save

    path = resolve_model_arg(args.model)
    if args.chunks < 1 or args.probes < 1 or args.verify < 0:
        raise CliError("--chunks and --probes must be at least 1, --verify at least 0")
    types = tuple(t.strip() for t in args.types.split(",") if t.strip()) if args.types \
        else DEFAULT_TYPES
    with open_model(path) as m:
        n_el = sum(t.n_elements for t in m.tensors.values())
    budget = budget_from_args(args, n_el)
    job = optimize_job(path, args.file, budget, types, args.ctx_size, args.chunks, args.imatrix,
                       args.probes, args.verify, False if args.no_store else None,
                       _placement(args))
    tty = sys.stderr.isatty()
    result = None
    try:
        for ev in job:
            if isinstance(ev, Measured):
                _clear(tty)
                print(f"  {ev.group:<28} {ev.key:<10} KLD {ev.kld:.6f} ± {ev.kld_err:.6f}  "
                      f"({ev.seconds:.1f} s)", file=sys.stderr, flush=True)
            elif isinstance(ev, Progress) and ev.message:
                if ev.total == 0:
                    _clear(tty)
                    print(ev.message, file=sys.stderr, flush=True)
                elif tty:
                    print(f"\r{ev.message[:76]:<76}", end="", file=sys.stderr, flush=True)
            elif isinstance(ev, Failed):
                raise CliError(ev.message)
            elif isinstance(ev, Finished):
                result = ev.result
                _clear(tty)
                _summary(ev.result)
    finally:
        job.close()
    if result is None:
        raise CliError("the optimization ended without a result")
    if args.output:
        save(result.recipe, args.output)
    if args.json:
        print(json.dumps({"recipe": dumps(result.recipe), "total_bytes": result.plan.total_bytes,
                          "bpw": result.plan.bpw, "predicted": result.predicted}))
    else:
        sys.stdout.write(dumps(result.recipe))
    return 0


def _clear(tty: bool) -> None:
    if tty:
        print("\r" + " " * 76 + "\r", end="", file=sys.stderr)


def _summary(r) -> None:
    p = r.plan
    print(f"{p.total_bytes / 2**30:.4f} GiB ({p.total_bytes} bytes), {p.bpw:.3f} bpw; GPU "
          f"{p.gpu_bytes / 2**30:.4f} GiB, CPU {p.cpu_bytes / 2**30:.4f} GiB", file=sys.stderr)
    for k, c in enumerate(r.candidates, 1):
        meas = f"{c.measured:.6f} ± {c.measured_err:.6f}" if c.measured == c.measured else "-"
        print(f"candidate {k}: {c.total_bytes} bytes, KLD predicted {c.predicted:.6f}, "
              f"measured {meas}{'  <- chosen' if c.recipe == r.recipe else ''}", file=sys.stderr)
    t = r.timings
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()), file=sys.stderr)
