"""`iqk-studio-cli import-log FILE [--json]`: read a llama-perplexity / KLD / llama-imatrix log as
pasted into a forum or a model card, print what it states, and keep it in the results store."""

from __future__ import annotations

import json
import math
import sys

from iqk_studio.cli import CliError


def add_arguments(p) -> None:
    p.add_argument("file", help="the log (`-` reads standard input)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: {"chunks": [...], "final": {"ppl", "ppl_err"}, '
                   '"n_ctx", "model", "kld": {...} or null, ...}')
    p.add_argument("--name", default="", help="a name for the run in the results store")
    p.add_argument("--no-store", action="store_true", help="do not add it to the results store")


def run(args) -> int:
    from iqk_studio.external.logimport import parse_log

    if args.file == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(args.file, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            raise CliError(f"{args.file}: {e.strerror or e}") from None
    try:
        log = parse_log(text)
    except ValueError as e:
        raise CliError(f"{args.file}: {e}") from None
    run_id = None
    if not args.no_store:
        from iqk_studio.results import StoreError, open_store

        try:
            with open_store() as store:
                run_id = store.add_imported(log, args.name,
                                            None if args.file == "-" else args.file)
        except StoreError as e:
            print(f"import-log: not stored: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps(log.to_json()))
    else:
        _print(log)
    if run_id is not None:
        print(f"import-log: stored as run {run_id}", file=sys.stderr)
    return 0


def _print(log) -> None:
    f = log.facts
    print(f"{log.kind} log: {len(log.chunks)} chunks, n_ctx={log.n_ctx or '?'}, "
          f"model {log.model or '?'}" + (f" ({f['model_name']})" if f.get("model_name") else ""))
    if log.engine or log.version:
        print(f"engine: {log.engine or '?'} {log.version}".rstrip())
    if log.chunks:
        print("".join(f"[{i}]{p:.4f}," for i, p in enumerate(log.chunks, 1)))
    if log.final:
        ppl, err = log.final
        print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}" if math.isfinite(err)
              else f"Final estimate: PPL = {ppl:.4f}")
    if log.kld:
        k = log.kld
        print(f"Mean KLD: {k.get('kld', math.nan):.6f} ± {k.get('kld_err', math.nan):.6f}"
              + (f", same top p: {100 * k['same_top']:.3f} %" if "same_top" in k else ""))
