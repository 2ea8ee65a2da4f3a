"""The results list over the SQLite results store (iqk_studio.results): StoreSource implements
RunSource, lists runs of earlier sessions and of the CLI, records the app's runs as they run, and
turns store records into the RunResult the list and the chart are drawn from. No Qt here.

When the store cannot be opened, StoreSource.open() falls back to a store in memory (the same
code, nothing kept at exit) and says why in `warning`.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iqk_studio.gui.results import Run
from iqk_studio.jobs.evaluate import RunResult
from iqk_studio.results import ChunkRow, RecordedJob, ResultsStore, RunSpec, StoreError
from iqk_studio.results import Run as StoredRun
from iqk_studio.results.records import RunSummary

NAN = math.nan
RESULT_KIND = {"perplexity": "ppl", "kld": "kld", "imatrix": "imatrix"}
STORE_KIND = {v: k for k, v in RESULT_KIND.items()}
LISTED_KINDS = ("perplexity", "kld")  # the default filter; imatrix runs on request


@dataclass(frozen=True)
class RunFilter:
    """Which runs the list shows: their kinds, and all models or one (model_id, general.name)."""

    kinds: tuple[str, ...] = LISTED_KINDS
    model_id: str | None = None
    model_name: str | None = None
    this_model: bool = False

    def admits(self, s: RunSummary) -> bool:
        if s.kind not in self.kinds:
            return False
        if s.n_done == 0 and s.status != "running" and not math.isfinite(s.final_ppl):
            return False  # nothing to show (failed at start)
        if not self.this_model or not (self.model_id or self.model_name):
            return True  # all models, or no model open to compare with
        if self.model_id and self.model_id in (s.model_id, s.base_model_id):
            return True
        if self.model_name and s.model_name and s.model_name == self.model_name:
            return True
        # a pasted log that names no model at all: kept in view
        return s.source == "imported" and not (s.model_id or s.model_name or s.model_path)


def _first(*values, default=NAN):
    for v in values:
        if v is not None and (not isinstance(v, float) or math.isfinite(v)):
            return v
    return default


def result_of(run: StoredRun) -> RunResult:
    """The RunResult of a stored run (running values of its last chunk when it has no final)."""
    s, f, summ = run.info, run.info.facts, run.info.summary
    rows = run.chunks
    last = rows[-1] if rows else ChunkRow(0)
    kind = RESULT_KIND.get(s.kind, s.kind)
    total = int(s.plan_bytes or 0)
    n_el = int(f.get("n_elements") or (round(8 * total / s.plan_bpw) if total and s.plan_bpw
                                       else 0))
    common = dict(
        model_path=s.model_path or s.model_name or "", recipe_text=s.recipe or "",
        recipe_name=f.get("recipe_name", ""), types=f.get("types", ""),
        importance=f.get("importance", ""), text_path=s.text_path or "", n_ctx=int(s.n_ctx or 0),
        n_chunks=len(rows) or int(f.get("n_chunks") or 0), total_bytes=total, n_elements=n_el,
        ppl=_first(s.final_ppl, last.ppl), ppl_err=_first(s.final_ppl_err, last.ppl_err),
        curve=tuple(r.ppl for r in rows), curve_err=tuple(r.ppl_err for r in rows),
        chunk_nll=tuple(r.nll for r in rows), base_path=s.base_model_path or "",
        base_bytes=int(f.get("base_bytes") or 0),
        seconds=float(f["seconds"] if "seconds" in f else (s.finished - s.created)
                      if s.finished else 0.0),
        finished_at=s.finished or s.created, text_id=s.text_id or "")
    if kind != "kld":
        return RunResult(kind, **common)
    ratio = _first(summ.get("ppl_ratio"), math.exp(last.ln_ratio))
    return RunResult(
        "kld", ppl_base=_first(summ.get("ppl_base"), last.ppl_base),
        ppl_base_err=_first(summ.get("ppl_base_err")), ppl_ratio=ratio,
        ppl_ratio_err=_first(summ.get("ppl_ratio_err"), ratio * last.ln_ratio_err),
        kld=_first(s.final_kld, last.kld), kld_err=_first(s.final_kld_err, last.kld_err),
        same_top=_first(s.same_top, last.same_top), **common)


def _default_name(s: RunSummary, r: RunResult) -> str:
    return run_name(r, s.source, s.engine, s.label)


def run_name(r: RunResult, source: str, engine: str = "", label: str = "") -> str:
    """The name a run gets unless the user gives one: recipe + types + weighting, the file's
    name with the engine that measured it, or the log's model."""
    kld = " KLD" if r.kind == "kld" else ""
    if source == "imported":
        return f"{label} (log)"
    if source == "external" and r.is_file:
        return f"{Path(r.model_path).name} ({engine.split()[0] if engine else 'llama.cpp'}){kld}"
    if r.recipe_text and not r.types:  # recorded by the CLI: no type mix known, its base is
        m = re.search(r"^@base\s+(\S+)", r.recipe_text, re.M)
        return f"{Path(r.model_path).name} + {m.group(1) + ' ' if m else ''}recipe{kld}"
    return r.default_name()


def engine_label(s: RunSummary) -> str:
    if s.source == "imported":
        return "log" + (f" ({s.engine} {s.engine_version})".rstrip() if s.engine else "")
    return f"{s.engine} {s.engine_version}".strip()


def run_of(stored: StoredRun) -> Run:
    s = stored.info
    r = result_of(stored)
    return Run(str(s.id), s.name or _default_name(s, r), r, s.source, s.status, engine_label(s),
               s.created, s.chunks)


def spec_of(r: RunResult, name: str) -> RunSpec:
    """The RunSpec of a RunResult that was not recorded as it ran."""
    return RunSpec(STORE_KIND.get(r.kind, r.kind), "builtin", name, r.model_path or None,
                   recipe=r.recipe_text or None, plan_bytes=r.total_bytes or None,
                   plan_bpw=r.bpw or None, text_path=r.text_path or None,
                   text_id=r.text_id or None, n_ctx=r.n_ctx or None, chunks=r.n_chunks or None,
                   base_model_path=r.base_path or None, kv_type="f16",
                   facts=gui_facts(r))


def gui_facts(r: RunResult) -> dict:
    """What the app knows of a run that the store has no column for."""
    return {"importance": r.importance, "recipe_name": r.recipe_name, "types": r.types,
            "n_elements": r.n_elements, "base_bytes": r.base_bytes, "seconds": r.seconds}


def finals_of(r: RunResult) -> dict:
    out = {"final_ppl": r.ppl, "final_ppl_err": r.ppl_err}
    if r.kind == "kld":
        out.update(final_kld=r.kld, final_kld_err=r.kld_err, same_top=r.same_top)
    return out


def kld_summary(r: RunResult) -> dict:
    return {k: getattr(r, k) for k in ("ppl", "ppl_err", "ppl_base", "ppl_base_err",
                                       "ppl_ratio", "ppl_ratio_err", "kld", "kld_err",
                                       "same_top")}


class StoreSource:
    """RunSource over a ResultsStore. Ids are the store's run ids as text."""

    def __init__(self, store: ResultsStore, persistent: bool = True, warning: str = ""):
        self.store = store
        self.persistent = persistent
        self.warning = warning
        self.filter = RunFilter()
        self._cache: dict[int, tuple[tuple, Run]] = {}
        self._unsaved: list[Run] = []  # runs the store refused (a full disk): kept in memory

    @classmethod
    def in_memory(cls, warning: str = "") -> StoreSource:
        return cls(ResultsStore(":memory:"), persistent=False, warning=warning)

    @classmethod
    def open(cls, path=None) -> StoreSource:
        """The store at path (default: the user data folder), else one in memory that says
        why in `warning`."""
        try:
            return cls(ResultsStore(path))
        except (StoreError, OSError, sqlite3.Error) as e:
            return cls.in_memory(f"results are kept in memory only: {e}")

    @property
    def location(self) -> str:
        return str(self.store.path) if self.persistent else "memory"

    def close(self) -> None:
        self.store.close()

    # --- reading -------------------------------------------------------------------------------
    def _summaries(self) -> list[RunSummary]:
        try:
            rows = self.store.list_runs()
        except sqlite3.Error as e:
            raise StoreError(f"results store: {e}") from None
        return sorted((s for s in rows if self.filter.admits(s)), key=lambda s: s.id)

    def signature(self) -> tuple:
        return (self.filter, len(self._unsaved),
                tuple((s.id, s.status, s.n_done, s.name, s.finished) for s in self._summaries()))

    def runs(self) -> list[Run]:
        out, names = [], set()
        for s in self._summaries():
            key = (s.status, s.n_done, s.name, s.finished, s.plan_bytes, s.final_ppl,
                   s.final_kld)
            hit = self._cache.get(s.id)
            if hit is None or hit[0] != key:
                try:
                    hit = self._cache[s.id] = (key, run_of(self.store.get_run(s.id)))
                except StoreError:  # deleted in between
                    continue
            run = hit[1]
            if not s.name and run.name in names:  # two unnamed runs: the id tells them apart
                from dataclasses import replace

                run = replace(run, name=f"{run.name} (run {s.id})")
            names.add(run.name)
            out.append(run)
        return out + list(self._unsaved)

    def get(self, run_id: str) -> Run:
        if run_id.startswith("m"):
            return next(r for r in self._unsaved if r.id == run_id)
        return run_of(self.store.get_run(int(run_id)))

    # --- writing -------------------------------------------------------------------------------
    def record(self, job: Iterator, spec: RunSpec, on_error=None) -> RecordedJob:
        """Call on the thread that iterates: a persistent store gets a connection of its own."""
        where = self.store.path if self.persistent else self.store
        return RecordedJob(job, spec, where, on_error=on_error)

    @staticmethod
    def recorded_id(job) -> str | None:
        rid = getattr(job, "run_id", None)
        return None if rid is None or getattr(job, "error", None) else str(rid)

    def add(self, result: RunResult, name: str, recorded_id: str | None = None) -> Run:
        try:
            if recorded_id is not None:
                rid = int(recorded_id)
                info = self.store.get_run(rid).info
                extra = {"summary": kld_summary(result)} if (
                    result.kind == "kld" and not info.summary) else {}
                self.store.update_run(rid, name=name, facts={**info.facts, **gui_facts(result)},
                                      **finals_of(result), **extra)
            else:
                rid = self.store.start_run(spec_of(result, name))
                for i, ppl in enumerate(result.curve):
                    self.store.add_chunk(rid, ChunkRow(
                        i + 1, ppl, _at(result.curve_err, i), _at(result.chunk_nll, i)))
                extra = {"summary": kld_summary(result)} if result.kind == "kld" else {}
                self.store.finish_run(rid, "finished", **finals_of(result), **extra)
            return self.get(str(rid))
        except (StoreError, sqlite3.Error, OSError, ValueError) as e:
            self.warning = f"a run could not be written to the results store: {e}"
            run = Run(f"m{len(self._unsaved) + 1}", name, result)
            self._unsaved.append(run)
            return run

    def add_imported(self, log, name: str = "", source_path: str | None = None,
                     size_bytes: int | None = None) -> Run:
        rid = self.store.add_imported(log, name, source_path)
        if size_bytes:
            info = self.store.get_run(rid).info
            if not info.plan_bytes:
                self.store.update_run(rid, plan_bytes=int(size_bytes), facts={
                    **info.facts, "model_size_given": size_bytes / 2**30})
        return self.get(str(rid))

    def rename(self, run_id: str, name: str) -> Run:
        if run_id.startswith("m"):
            from dataclasses import replace

            i = next(i for i, r in enumerate(self._unsaved) if r.id == run_id)
            self._unsaved[i] = replace(self._unsaved[i], name=name)
            return self._unsaved[i]
        self.store.rename_run(int(run_id), name)
        return self.get(run_id)

    def remove(self, run_id: str) -> None:
        if run_id.startswith("m"):
            self._unsaved = [r for r in self._unsaved if r.id != run_id]
            return
        self.store.delete_run(int(run_id))
        self._cache.pop(int(run_id), None)


def _at(seq, i: int) -> float:
    return seq[i] if i < len(seq) else NAN
