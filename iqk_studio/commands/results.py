"""`iqk-studio-cli results list|show|export|rename|delete`: the runs kept in the results store."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict

from iqk_studio.cli import CliError


def add_arguments(p) -> None:
    p.add_argument("--db", metavar="FILE", help="results database (default: results.sqlite3 in "
                   "$IQK_STUDIO_DATA or the user data folder)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list runs, newest first")
    ls.add_argument("--json", action="store_true", help="one JSON array of runs")
    ls.add_argument("--kind", choices=("perplexity", "kld", "imatrix", "sensitivity"))
    ls.add_argument("--source", choices=("builtin", "external", "imported"))
    ls.add_argument("--search", metavar="TEXT", help="in the name, model and recipe")
    ls.add_argument("-n", "--limit", type=int, default=None)
    show = sub.add_parser("show", help="a run's settings and per-chunk values")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    ex = sub.add_parser("export", help="a run's per-chunk values as CSV")
    ex.add_argument("id", type=int)
    ex.add_argument("--csv", action="store_true", help="CSV (the only format, the default)")
    ex.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    rn = sub.add_parser("rename", help="give a run a name")
    rn.add_argument("id", type=int)
    rn.add_argument("name")
    rm = sub.add_parser("delete", help="delete a run")
    rm.add_argument("id", type=int)


def _store(args):
    from iqk_studio.results import StoreError, open_store

    try:
        return open_store(args.db)
    except StoreError as e:
        raise CliError(str(e)) from None


def _fmt(v: float, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _result_text(r) -> str:
    if r.kind in ("kld", "sensitivity") and not math.isnan(r.final_kld):
        return f"KLD {_fmt(r.final_kld, 6)}"
    if not math.isnan(r.final_ppl):
        err = "" if math.isnan(r.final_ppl_err) else f" ± {_fmt(r.final_ppl_err)}"
        return f"PPL {_fmt(r.final_ppl)}{err}"
    return "-"


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def run(args) -> int:
    from iqk_studio.results import StoreError

    with _store(args) as store:
        try:
            return _ACTIONS[args.action](store, args)
        except StoreError as e:
            raise CliError(str(e)) from None


def _list(store, args) -> int:
    runs = store.list_runs(kind=args.kind, source=args.source, search=args.search,
                           limit=args.limit)
    if args.json:
        print(json.dumps([_jsonable(asdict(r)) for r in runs], indent=1))
        return 0
    if not runs:
        print(f"no runs in {store.path}", file=sys.stderr)
        return 0
    print(f"{'id':>4}  {'date':<16}  {'kind':<11} {'source':<8} {'status':<11} {'chunks':>9}  "
          f"{'n_ctx':>5}  {'result':<24} {'engine':<14} run")
    for r in runs:
        done = f"{r.n_done}/{r.chunks}" if r.chunks else str(r.n_done)
        print(f"{r.id:>4}  {_when(r.created):<16}  {r.kind:<11} {r.source:<8} {r.status:<11} "
              f"{done:>9}  {r.n_ctx or '-':>5}  {_result_text(r):<24} {r.engine[:14]:<14} "
              f"{r.label}")
    return 0


def _show(store, args) -> int:
    run = store.get_run(args.id)
    r = run.info
    if args.json:
        print(json.dumps(_jsonable(asdict(run)), indent=1))
        return 0
    size = f"{r.plan_bytes / 2**20:.2f} MiB" if r.plan_bytes else "-"
    bpw = f" ({r.plan_bpw:.4f} bpw)" if r.plan_bpw else ""
    rows = [("run", f"{r.id} {r.name!r}" if r.name else str(r.id)), ("kind", r.kind),
            ("source", r.source), ("status", r.status),
            ("started", _when(r.created)), ("ended", _when(r.finished)),
            ("model", r.model_path or "-"), ("model name", r.model_name or "-"),
            ("model id", r.model_id or "-"), ("base model", r.base_model_path or "-"),
            ("size", size + bpw), ("text", r.text_path or "-"), ("text id", r.text_id or "-"),
            ("n_ctx", r.n_ctx or "-"), ("chunks", f"{r.n_done} of {r.chunks or 'all'}"),
            ("KV type", r.kv_type or "-"), ("engine", f"{r.engine} {r.engine_version}".strip()),
            ("result", _result_text(r)), ("message", r.message or "-")]
    if r.command:
        import shlex

        rows.append(("command", " ".join(shlex.quote(a) for a in r.command)))
    for k, v in rows:
        print(f"{k:>11}: {v}")
    if r.recipe:
        print("     recipe:\n" + "\n".join("    " + ln for ln in r.recipe.splitlines()))
    if run.chunks:
        kld = r.kind == "kld"
        print(f"\n{'chunk':>5} {'PPL':>12} {'± err':>10}" + (
            f" {'KLD':>10} {'± err':>9} {'same top':>9}" if kld else f" {'NLL':>9}"))
        for c in run.chunks:
            tail = (f" {_fmt(c.kld, 6):>10} {_fmt(c.kld_err, 6):>9} "
                    f"{_fmt(100 * c.same_top, 3):>9}" if kld else f" {_fmt(c.nll):>9}")
            print(f"{c.index:>5} {_fmt(c.ppl):>12} {_fmt(c.ppl_err, 5):>10}{tail}")
    for g in run.groups:
        print(f"{g.index:>4} {g.label:<28} {g.bytes_before / 2**20:>10.3f} -> "
              f"{g.bytes_after / 2**20:>10.3f} MiB  KLD {_fmt(g.kld, 6)}")
    return 0


def _export(store, args) -> int:
    from iqk_studio.results.records import CHUNK_FIELDS

    run = store.get_run(args.id)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        w = csv.writer(out)
        if run.groups:
            w.writerow(["index", "label", "bytes_before", "bytes_after", "kld", "kld_err",
                        "ln_ratio", "same_top", "seconds"])
            for g in run.groups:
                w.writerow([_cell(v) for v in asdict(g).values()])
        else:
            w.writerow(("chunk",) + CHUNK_FIELDS)
            for c in run.chunks:
                w.writerow([_cell(v) for v in asdict(c).values()])
    finally:
        if args.output:
            out.close()
    return 0


def _cell(v):
    return "" if isinstance(v, float) and math.isnan(v) else repr(v) if isinstance(v, float) \
        else v


def _rename(store, args) -> int:
    store.rename_run(args.id, args.name)
    return 0


def _delete(store, args) -> int:
    store.delete_run(args.id)
    return 0


_ACTIONS = {"list": _list, "show": _show, "export": _export, "rename": _rename,
            "delete": _delete}
