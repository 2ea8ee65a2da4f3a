"""Rows and RunSpec of a published log (external.logimport.ImportedLog) and the store row of a
chunk event: what both recording and import need, below the store."""

from __future__ import annotations

import math

from iqk_studio.jobs.events import KldChunk
from iqk_studio.results.records import ChunkRow, RunSpec


def chunk_row(ev, seconds: float) -> ChunkRow:
    if isinstance(ev, KldChunk):
        return ChunkRow(ev.index, ev.ppl, ev.ppl_err, math.nan, ev.ppl_base, ev.ln_ratio,
                        ev.ln_ratio_err, ev.kld, ev.kld_err, ev.rms_dp, ev.rms_dp_err,
                        ev.same_top, ev.same_top_err, seconds)
    return ChunkRow(ev.index, ev.ppl, ev.ppl_err, ev.nll, seconds=seconds)


def imported_spec(log, name: str = "", source_path: str | None = None) -> RunSpec:
    f = dict(log.facts)
    if source_path:
        f["log_file"] = str(source_path)
    n = f.get("n_chunks") or len(log.chunks)
    size, unit = f.get("model_size"), f.get("model_size_unit")
    nbytes = int(size * (2**30 if unit == "GiB" else 2**20)) if size else None
    return RunSpec(log.kind, "imported", name, f.get("model_path"), f.get("model_name"),
                   None, None, None, None, nbytes, f.get("bpw"), None, None,
                   log.n_ctx, n, _kv(f), log.engine or "", log.version, (), f)


def _kv(f: dict) -> str | None:
    k, v = f.get("kv_k"), f.get("kv_v")
    return None if k is None else k if k == v else f"{k}/{v}"


def import_rows(log) -> list[ChunkRow]:
    if log.kld_rows:
        return [chunk_row(r, math.nan) for r in log.kld_rows]
    rows, prev = [], None
    for i, ppl in enumerate(log.chunks, 1):
        nll = math.nan
        if ppl > 0 and math.isfinite(ppl) and (i == 1 or (prev and prev > 0)):
            nll = i * math.log(ppl) - ((i - 1) * math.log(prev) if i > 1 else 0.0)
        rows.append(ChunkRow(i, ppl, nll=nll))
        prev = ppl
    return rows
