"""`iqk-studio-cli compare-importance MODEL --recipe R -f TEXT [--imatrix A.dat ...] [--chunks N]`:
one recipe quantized with each imatrix, with no imatrix (default weights) and with w = 1, each
evaluated, as the table of ik_llama.cpp discussion #359. Built-in: in memory. With
--llama-perplexity (big models): each mode is written to a GGUF by our quantizer (bit-exact with
llama-quantize, which has no w = 1) in --workdir, evaluated by your llama-perplexity, deleted."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from iqk_studio.cli import CliError


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF model (the unquantized reference), or `demo`")
    p.add_argument("--recipe", required=True, help="recipe file, or the name of a library recipe")
    p.add_argument("-f", "--file", required=True, help="evaluation text (e.g. wiki.test.raw)")
    p.add_argument("--imatrix", action="append", default=[], metavar="FILE",
                   help="an imatrix to compare (.dat or GGUF; repeatable; default: the "
                   "recipe's @imatrix, if any)")
    p.add_argument("--chunks", type=int, default=4, help="chunks evaluated per mode (4)")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk length n_ctx (512)")
    p.add_argument("-t", "--threads", type=int, default=None, help="compute threads")
    p.add_argument("--allow-requantize", action="store_true",
                   help="the model is already quantized: quantize its dequantized weights")
    p.add_argument("--no-base", action="store_true", help="skip the unquantized model's PPL")
    p.add_argument("--no-default", action="store_true", help="skip the default weighting")
    p.add_argument("--no-uniform", action="store_true", help="skip w = 1")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    from iqk_studio.commands.external import add_llama_option, add_store_option

    add_llama_option(p, "llama-perplexity")
    add_store_option(p)
    p.add_argument("--workdir", metavar="DIR",
                   help="with --llama-perplexity: where each mode's GGUF is written and deleted "
                   "after its run (default: the model's folder)")


PASSTHROUGH = True  # arguments after `--` go to llama-perplexity


def _plan(path, args):
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.recipe import plan
    from iqk_studio.recipe.library import resolve

    recipe = resolve(args.recipe)
    if args.allow_requantize:
        recipe = recipe.with_(allow_requantize=True)
    with open_model(path) as model:
        pl = plan(model, recipe)
    if pl.errors:
        raise CliError(pl.errors[0].message)
    return recipe, pl


def _modes(recipe, args):
    from iqk_studio.gguf.imatrix import load_imatrix
    from iqk_studio.jobs.compare_importance import importance_modes

    paths = args.imatrix or ([recipe.imatrix] if recipe.imatrix else [])
    return importance_modes([(Path(p).name, load_imatrix(p)) for p in paths],
                            not args.no_default, not args.no_uniform)


def print_table(table, out=None) -> None:
    out = out or sys.stdout
    w = max([len(r.label) for r in table.rows] + [32])
    print(f"{'importance':<{w}} {'PPL':>9} {'+/-':>8} {'PPL/base-1':>11} {'GiB':>8}", file=out)
    if table.base is not None:
        print(f"{'unquantized (the file as stored)':<{w}} {table.base.ppl:>9.4f} "
              f"{table.base.ppl_err:>8.4f} {'':>11}", file=out)
    for r in table.rows:
        if math.isnan(r.ppl):
            print(f"{r.label:<{w}} {'-':>9}  {r.note}", file=out)
            continue
        loss = "" if math.isnan(r.quality_loss) else f"{100 * r.quality_loss:+.2f}%"
        print(f"{r.label:<{w}} {r.ppl:>9.4f} {r.ppl_err:>8.4f} {loss:>11} "
              f"{r.total_bytes / 2**30:>8.3f}", file=out)


def run(args) -> int:
    from iqk_studio.demo import resolve_model_arg
    from iqk_studio.engine.threads import set_threads
    from iqk_studio.jobs.compare_importance import ImportanceRow, compare_importance_job
    from iqk_studio.jobs.events import Failed, Finished, Progress

    if args.chunks < 1:
        raise CliError("--chunks must be at least 1")
    if args.threads is not None:
        set_threads(args.threads)
    path = resolve_model_arg(args.model)
    if not path.exists():
        raise CliError(f"{path}: no such model file")
    if not Path(args.file).is_file():
        raise CliError(f"{args.file}: no such text file")
    recipe, pl = _plan(path, args)
    # the name runs get in the results store and the table: a file's stem, or the library name
    label = Path(args.recipe).stem if Path(args.recipe).is_file() else args.recipe
    modes = _modes(recipe, args)
    print(f"compare-importance: {args.recipe} ({pl.total_bytes / 2**20:.2f} MiB, {pl.bpw:.4f} bpw)"
          f", {len(modes)} mode(s), {args.chunks} chunk(s) of {args.ctx_size}", file=sys.stderr)
    if args.llama_perplexity is not None:
        from iqk_studio.commands.external import binary

        job = external_job(binary(args, "llama-perplexity"), path, pl, args.file, modes,
                           args.ctx_size, args.chunks, not args.no_base, label,
                           Path(args.workdir or path.parent), args.extra_args, args.threads)
    else:
        from iqk_studio.commands.external import no_extra
        from iqk_studio.recipe.textfile import dumps

        no_extra(args, "--llama-perplexity")
        job = compare_importance_job(path, pl, args.file, modes, args.ctx_size, args.chunks,
                                     not args.no_base, label, dumps(recipe),
                                     wrap=None if args.no_store else _record)
    table = None
    tty = sys.stderr.isatty()
    for ev in job:
        if isinstance(ev, Progress) and ev.message and tty:
            print(f"\r{ev.message[:76]:<76}", end="", file=sys.stderr, flush=True)
        elif isinstance(ev, ImportanceRow) and not args.json:
            print(("\r" + " " * 76 + "\r" if tty else "")
                  + f"{ev.label}: PPL {ev.ppl:.4f} ({ev.seconds:.0f} s)"
                  + (f" -- {ev.note}" if ev.note else ""), file=sys.stderr, flush=True)
        elif isinstance(ev, Failed):
            raise CliError(ev.message)
        elif isinstance(ev, Finished):
            table = ev.result
    if table is None:
        raise CliError("the job ended without a result")
    if args.json:
        json.dump(table_json(table), sys.stdout, indent=1)
        print()
    else:
        print_table(table)
    return 0


def _record(job, spec, name):
    """A built-in run of the comparison recorded in the results store under `name`."""
    from iqk_studio.results import RecordedJob
    from iqk_studio.results.recording import builtin_spec

    def warn(msg: str) -> None:
        print(f"iqk-studio-cli: warning: the run is not recorded: {msg}", file=sys.stderr)

    return RecordedJob(job, builtin_spec(spec, name), on_error=warn)


def table_json(table) -> dict:
    nan = lambda v: None if math.isnan(v) else v  # noqa: E731 - JSON has no NaN
    return {"recipe": table.recipe, "text": table.text,
            "base": None if table.base is None else {"ppl": table.base.ppl,
                                                     "ppl_err": nan(table.base.ppl_err)},
            "rows": [{"label": r.label, "ppl": nan(r.ppl), "ppl_err": nan(r.ppl_err),
                      "quality_loss": nan(r.quality_loss), "total_bytes": r.total_bytes,
                      "bpw": r.bpw, "n_chunks": r.n_chunks, "n_ctx": r.n_ctx, "note": r.note}
                     for r in table.rows]}


def _external_ppl(binary, model, text, n_ctx, chunks, extra, label):
    """Drive perplexity_run; returns its PerplexityResult, or raises ValueError."""
    from iqk_studio.external.runs import perplexity_run
    from iqk_studio.jobs.events import Failed, Finished, Progress

    for ev in perplexity_run(binary, model, text, n_ctx, chunks, extra):
        if isinstance(ev, Progress):
            yield Progress(ev.done, ev.total, f"{label}: {ev.message}")
        elif isinstance(ev, Failed):
            raise ValueError(ev.message)
        elif isinstance(ev, Finished):
            return ev.result
    raise ValueError("llama-perplexity ended without a result")


def external_job(binary, model_path, plan, text, modes, n_ctx, chunks, base, label, workdir,
                 extra=(), threads=None):
    """The comparison through the user's llama-perplexity: the file as it is, then per mode our
    quantize job writes workdir/.iqk-compare-N.gguf (removed after its run, also on failure or
    cancel), which llama-perplexity evaluates. Events as compare_importance_job; rows carry no
    RunResult and the base is a PerplexityResult (the runs are external)."""
    from iqk_studio.jobs.compare_importance import ImportanceRow, ImportanceTable
    from iqk_studio.jobs.events import Failed, Finished, Progress
    from iqk_studio.jobs.quantize import plan_targets, quantize_model

    if not workdir.is_dir():
        yield Failed(f"{workdir}: no such folder (--workdir)")
        return
    base_res = None
    if base:
        try:
            base_res = yield from _external_ppl(binary, model_path, text, n_ctx, chunks, extra,
                                                "unquantized")
        except ValueError as e:
            yield Failed(f"unquantized model: {e}")
            return
    ppl_base = base_res.ppl if base_res else math.nan
    rows = []
    for k, mode in enumerate(modes):
        out = workdir / f".iqk-compare-{k + 1}.gguf"
        note, res = "", None
        try:
            for ev in quantize_model(str(model_path), plan_targets(plan), out, mode.imatrix, mode.uniform,
                                     threads, allow_requantize=True):
                if isinstance(ev, Failed):
                    raise ValueError(ev.message)
                if isinstance(ev, Progress) and ev.message:
                    yield Progress(ev.done, ev.total, f"{mode.label}: quantizing {ev.message}")
            res = yield from _external_ppl(binary, out, text, n_ctx, chunks, extra, mode.label)
        except ValueError as e:
            note = str(e)
        finally:
            out.unlink(missing_ok=True)
        row = ImportanceRow(k + 1, len(modes), mode.label, res.ppl if res else math.nan,
                            res.ppl_err if res else math.nan, ppl_base, plan.total_bytes,
                            plan.bpw, res.n_chunks if res else 0, n_ctx,
                            res.seconds if res else 0.0, note)
        rows.append(row)
        yield row
    yield Finished(f"{len(modes)} importance modes through {binary.path.name}",
                   ImportanceTable(label, Path(text).name, base_res, tuple(rows)))
