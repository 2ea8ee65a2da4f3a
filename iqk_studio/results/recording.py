"""Recording a job into the results store while its events pass through unchanged (RecordedJob),
the identities that make runs comparable, and the RunSpec of an evaluation or imported log."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, RunInfo
from iqk_studio.results.imported import chunk_row
from iqk_studio.results.records import GroupRow, RunSpec
from iqk_studio.results.store import ResultsStore, StoreError


def model_id(path) -> str | None:
    """sha256 of a model's GGUF header bytes (every split part, up to its tensor data): the same
    for copies and renames of the file, different for any other metadata or tensor layout."""
    from iqk_studio.gguf.reader import open_model

    try:
        h = hashlib.sha256()
        with open_model(path) as m:
            for f in m.files:
                with open(f.path, "rb") as fh:
                    h.update(fh.read(f.data_offset))
        return h.hexdigest()
    except (OSError, ValueError):
        return None


def file_id(path) -> str | None:
    """sha256 of a file's bytes (the evaluation text)."""
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def evaluation_spec(kind: str, model_path, text_path=None, n_ctx: int | None = None,
                    chunks: int | None = None, *, source: str = "builtin", recipe=None,
                    plan=None, base_model_path=None, engine: str = "iqk-studio",
                    engine_version: str | None = None, command=(), name: str = "",
                    kv_type: str | None = None, facts: dict | None = None) -> RunSpec:
    """The RunSpec of a run on model_path (and text_path): identities hashed from the files,
    sizes from the plan when a recipe is evaluated, else from the model file. The built-in
    engine's KV cache is f16 (as the reference's default)."""
    from iqk_studio import __version__
    from iqk_studio.gguf.reader import open_model

    model_name = plan_bytes = plan_bpw = None
    try:
        with open_model(model_path) as m:
            model_name = m.metadata.get("general.name")
            plan_bytes, n_el = m.n_bytes, m.n_elements
            plan_bpw = 8 * plan_bytes / n_el if n_el else None
    except (OSError, ValueError):
        pass
    if plan is not None:
        plan_bytes, plan_bpw = plan.total_bytes, plan.bpw
    recipe_text = None
    if recipe is not None:
        from iqk_studio.recipe.textfile import dumps

        recipe_text = dumps(recipe)
    return RunSpec(kind, source, name, str(model_path), model_name, model_id(model_path),
                   str(base_model_path) if base_model_path else None,
                   model_id(base_model_path) if base_model_path else None, recipe_text,
                   plan_bytes, plan_bpw, str(text_path) if text_path else None,
                   file_id(text_path) if text_path else None, n_ctx,
                   chunks if chunks and chunks > 0 else None,
                   kv_type or ("f16" if engine == "iqk-studio" else None), engine,
                   __version__ if engine_version is None and engine == "iqk-studio"
                   else engine_version or "", tuple(command), dict(facts or {}))


def _finals(result, last) -> dict:
    """Final values to store from a Finished.result (or the last chunk when it has none)."""
    out: dict = {}
    stats = getattr(result, "stats", None)
    if stats is not None:  # KldResult
        from dataclasses import asdict

        out.update(final_ppl=stats.ppl, final_ppl_err=stats.ppl_err, final_kld=stats.kld,
                   final_kld_err=stats.kld_err, same_top=stats.same_top)
        summary = {k: v for k, v in asdict(result).items() if k != "stats"}
        summary.update(asdict(stats))
        out["summary"] = summary
    elif hasattr(result, "ppl") and hasattr(result, "ppl_err"):  # PerplexityResult
        out.update(final_ppl=result.ppl, final_ppl_err=result.ppl_err)
    elif isinstance(last, (Chunk, KldChunk)):
        out.update(final_ppl=last.ppl, final_ppl_err=last.ppl_err)
        if isinstance(last, KldChunk):
            out.update(final_kld=last.kld, final_kld_err=last.kld_err, same_top=last.same_top)
    return out


class RecordedJob:
    """Iterates `job` and records it as a run of `spec`: each Chunk / KldChunk / Sensitivity as it
    arrives, facts of a RunInfo, then the final status and values. Events pass through unchanged.
    Closing it (cancel) closes the job and marks the run "cancelled"; the store is opened on the
    first next() so that it belongs to the thread that iterates. `run_id` is set from then on."""

    def __init__(self, job, spec: RunSpec, store: ResultsStore | str | Path | None = None,
                 on_error=None):
        self._job = job
        self._on_error = on_error  # called once with a message when recording stops
        self.spec = spec
        self._store_arg = store
        self.store: ResultsStore | None = None
        self.run_id: int | None = None
        self.error: str | None = None  # why recording stopped (the job goes on regardless)
        self._gen = self._run()

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _open(self) -> None:
        try:
            s = self._store_arg
            self.store = s if isinstance(s, ResultsStore) else ResultsStore(s)
            self.run_id = self.store.start_run(self.spec)
        except (StoreError, OSError) as e:
            self._fail(str(e))

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
            if self._on_error is not None:
                self._on_error(message)

    def _write(self, method: str, *args, **kw) -> None:
        if self.run_id is None or self.error:
            return
        try:
            getattr(self.store, method)(self.run_id, *args, **kw)
        except Exception as e:  # a full disk must not stop the evaluation itself
            self._fail(f"results store: {e}")

    def _finish(self, status: str, message: str, finals: dict) -> None:
        self._finished = True
        self._write("finish_run", status, message, **finals)

    def _run(self):
        self._finished = False
        self._open()
        t0 = time.monotonic()
        status, message, last = "failed", "the job ended without a result", None
        ended = False  # a Finished or Failed was seen: closing afterwards changes nothing
        try:
            for ev in self._job:
                if isinstance(ev, (Chunk, KldChunk)):
                    last = ev
                    self._write("add_chunk", chunk_row(ev, time.monotonic() - t0))
                elif _is_sensitivity(ev):
                    self._write("add_group", GroupRow(ev.index, ev.label, ev.bytes_before,
                                                      ev.bytes_after, ev.kld, ev.kld_err,
                                                      ev.ln_ratio, ev.same_top, ev.seconds))
                elif isinstance(ev, RunInfo):
                    self._write("update_run", **info_values(ev))
                elif isinstance(ev, Failed):
                    status, message, ended = "failed", ev.message, True
                    self._finish(status, message, _finals(None, last) if last else {})
                elif isinstance(ev, Finished):
                    ended = True
                    status, message = "finished", ev.message.split("\n")[-1] if ev.message else ""
                    # written before the event goes on: whoever receives it (the window, on
                    # another thread) finds the run's final values in the store
                    self._finish(status, message, _finals(ev.result, last))
                yield ev
        except GeneratorExit:
            if not ended:
                status, message = "cancelled", "cancelled"
            raise
        except BaseException as e:
            if not ended:
                status, message = ("cancelled", "interrupted") if isinstance(
                    e, KeyboardInterrupt) else ("failed", f"{type(e).__name__}: {e}")
            raise
        finally:
            close = getattr(self._job, "close", None)
            if close:
                close()
            if not self._finished:
                self._finish(status, message, _finals(None, last) if last is not None else {})
            if self.store is not None and not isinstance(self._store_arg, ResultsStore):
                self.store.close()


def _is_sensitivity(ev) -> bool:
    """jobs.sensitivity.Sensitivity, without importing the engine for runs that have none."""
    return type(ev).__name__ == "Sensitivity" and type(ev).__module__ == (
        "iqk_studio.jobs.sensitivity")


def info_values(ev: RunInfo) -> dict:
    """Run columns from an external run's RunInfo."""
    f = ev.facts
    out = {"engine": ev.engine, "engine_version": ev.version, "command": ev.command,
           "facts": f}
    if f.get("kv_k"):
        k, v = f["kv_k"], f.get("kv_v", f["kv_k"])
        out["kv_type"] = k if k == v else f"{k}/{v}"
    if f.get("n_ctx"):
        out["n_ctx"] = f["n_ctx"]
    return out


def builtin_spec(spec, name: str = "") -> RunSpec:
    """The RunSpec of a built-in evaluation (jobs.evaluate.EvalSpec), named `name`; hashes the
    model and the text, so call it on the thread that runs the job. The recipe is kept as typed
    (comments too)."""
    from dataclasses import replace

    from iqk_studio.jobs.evaluate import type_mix

    p = spec.plan
    facts = {"importance": spec.importance if p is not None else "",
             "recipe_name": spec.recipe_name if p is not None else ""}
    if p is not None:
        facts.update(types=type_mix(p.entries), n_elements=p.n_elements)
    rs = evaluation_spec("kld" if spec.base_path else "perplexity", spec.model_path,
                         spec.text_path, spec.n_ctx, spec.chunks, plan=p,
                         base_model_path=spec.base_path, facts=facts, name=name)
    return replace(rs, recipe=spec.recipe_text or None) if p is not None else rs
