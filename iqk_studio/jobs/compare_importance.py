"""One recipe quantized in memory with each importance weighting -- each imatrix given, no imatrix
(the quantizers' default weights, w = x² for IQ4_KS), uniform w = 1 -- and evaluated with the
built-in engine over the same chunks (jobs.evaluate, one run per mode): the table of ik_llama.cpp
discussion #359. A job of Progress / ImportanceRow events, then Finished(result=ImportanceTable)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iqk_studio.jobs.evaluate import EvalSpec, RunResult, evaluate
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.quant.api import QuantError


@dataclass(frozen=True)
class ImportanceMode:
    label: str  # e.g. "imatrix wiki8.dat", "no imatrix (default weights)", "no imatrix, w = 1"
    imatrix: object | None = None  # an Imatrix record (or dict name -> values)
    uniform: bool = False

    @property
    def importance(self) -> str:
        """jobs.evaluate's name of the weighting: imatrix / default / uniform."""
        return "uniform" if self.uniform else "imatrix" if self.imatrix is not None else "default"


def importance_modes(imatrices=(), default: bool = True, uniform: bool = True) -> list:
    """Modes for (label, Imatrix) pairs, then the default weighting, then w = 1."""
    modes = [ImportanceMode(f"imatrix {label}", im) for label, im in imatrices]
    if default:
        modes.append(ImportanceMode("no imatrix (default weights)"))
    if uniform:
        modes.append(ImportanceMode("no imatrix, w = 1", uniform=True))
    return modes


@dataclass(frozen=True)
class ImportanceRow:
    index: int  # 1-based
    count: int
    label: str
    ppl: float  # nan when the mode could not be evaluated (see note)
    ppl_err: float
    ppl_base: float  # the unquantized model's PPL over the same chunks (nan if not run)
    total_bytes: int
    bpw: float
    n_chunks: int
    n_ctx: int
    seconds: float
    note: str = ""
    result: RunResult | None = None  # the run, for the results list and the chart

    @property
    def quality_loss(self) -> float:
        """PPL(Q)/PPL(base) - 1 (a fraction), the study's y axis."""
        return self.ppl / self.ppl_base - 1.0 if self.ppl_base > 0 else math.nan


@dataclass(frozen=True)
class ImportanceTable:
    recipe: str
    text: str
    base: RunResult | None  # the file as it is
    rows: tuple[ImportanceRow, ...]

    def results(self) -> list[tuple[str, RunResult]]:
        """(name, run) of the base and of every evaluated mode, for the results list."""
        out = [(f"{Path(self.base.model_path).name} (file)", self.base)] if self.base else []
        return out + [(f"{self.recipe}: {r.label}", r.result) for r in self.rows
                      if r.result is not None]


def _run(spec: EvalSpec, step0: int, total: int, label: str, wrap=None, name: str = ""):
    """Drive one evaluate() run (through `wrap(job, spec, name)` when given, e.g. to record it),
    re-numbering its progress; returns its RunResult, or raises ValueError with the reason it
    failed."""
    result = None
    job = evaluate(spec) if wrap is None else wrap(evaluate(spec), spec, name or label)
    for ev in job:
        if isinstance(ev, Progress) and ev.total and ev.message.startswith("chunk"):
            yield Progress(step0 + ev.done * 100 // ev.total, total, f"{label}: {ev.message}")
        elif isinstance(ev, Progress):
            yield Progress(step0, total, f"{label}: {ev.message}")
        elif isinstance(ev, Failed):
            raise ValueError(ev.message)
        elif isinstance(ev, Finished):
            result = ev.result
    if result is None:
        raise ValueError("the run ended without a result")
    return result


def compare_importance_job(model_path, plan, text_path, modes: list[ImportanceMode],
                           n_ctx: int = 512, chunks: int = 4, base: bool = True,
                           recipe_label: str = "recipe", recipe_text: str = "", wrap=None
                           ) -> Iterator[object]:
    """Perplexity of the file as it is (when `base`) and of the plan quantized in each mode,
    over the same chunks of the text. Progress counts 100 steps per run. `wrap(job, spec,
    name)`, when given, wraps each run's evaluate() job (the CLI records them in the results
    store); `name` is the run's name in the results list."""
    if not modes:
        yield Failed("no importance mode to compare")
        return
    total = 100 * (len(modes) + base)
    base_res = None
    common = dict(model_path=str(model_path), text_path=str(text_path), n_ctx=n_ctx,
                  chunks=chunks)
    if base:
        try:
            base_res = yield from _run(EvalSpec(**common), 0, total, "unquantized", wrap,
                                      f"{Path(model_path).name} (file)")
        except ValueError as e:
            yield Failed(f"unquantized model: {e}")
            return
    ppl_base = base_res.ppl if base_res else math.nan
    rows = []
    for k, mode in enumerate(modes):
        spec = EvalSpec(**common, plan=plan, importance=mode.importance, imatrix=mode.imatrix,
                        recipe_text=recipe_text or recipe_label, recipe_name=recipe_label)
        try:
            r = yield from _run(spec, 100 * (k + base), total, mode.label, wrap,
                               f"{recipe_label}: {mode.label}")
            row = ImportanceRow(k + 1, len(modes), mode.label, r.ppl, r.ppl_err, ppl_base,
                                r.total_bytes, r.bpw, r.n_chunks, r.n_ctx, r.seconds, "", r)
        except (QuantError, ValueError) as e:  # e.g. a type that needs an imatrix
            row = ImportanceRow(k + 1, len(modes), mode.label, math.nan, math.nan, ppl_base,
                                plan.total_bytes, plan.bpw, 0, n_ctx, 0.0, str(e))
        rows.append(row)
        yield row
    n = base_res.n_chunks if base_res else max((r.n_chunks for r in rows), default=0)
    yield Finished(f"{len(modes)} importance modes over {n} chunks of {n_ctx}",
                   ImportanceTable(recipe_label, Path(text_path).name, base_res, tuple(rows)))


# ------------------------------------------------------------- one tensor, no evaluation

@dataclass(frozen=True)
class ModeError:
    """Quantization error of one tensor's sample in one importance mode."""

    label: str
    rel_rmse: float  # sqrt(Σ(x - q)² / Σx²); nan when the type refused (see note)
    weighted_rel_rmse: float  # the same weighted by the first imatrix's values (nan: none)
    note: str = ""


def tensor_mode_errors(model, name: str, qtype: str, modes: list[ImportanceMode],
                       x=None) -> Iterator[ModeError]:
    """The importance comparison as quantization error of (a sample of) one tensor: the first
    rows (one expert's for 3-D tensors), each mode's imatrix slice for those rows."""
    import numpy as np

    from iqk_studio.jobs.type_errors import sample_rows
    from iqk_studio.quant import api
    from iqk_studio.quant.importance import imatrix_values, importance_for

    if x is None:
        x = sample_rows(model, name)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[1]
    info = model.tensors[name]
    ne2 = info.shape[2] if len(info.shape) > 2 else 1

    def imp(im):
        v = importance_for(imatrix_values(im), name, n, ne2) if im is not None else None
        return None if v is None else np.asarray(v[:n], np.float64)

    ref = next((imp(m.imatrix) for m in modes if m.imatrix is not None), None)
    x64 = x.astype(np.float64)
    for mode in modes:
        qw = imp(mode.imatrix)
        try:
            q = api.dequantize(api.quantize(x, qtype, None if qw is None else qw.astype(
                np.float32), mode.uniform), qtype, n).astype(np.float64)
        except ValueError as e:
            yield ModeError(mode.label, math.nan, math.nan, str(e))
            continue
        d2 = (x64 - q) ** 2
        rel = math.sqrt(d2.sum() / max((x64 * x64).sum(), 1e-300))
        wrel = math.nan if ref is None else math.sqrt(
            (ref * d2).sum() / max((ref * x64 * x64).sum(), 1e-300))
        missing = mode.imatrix is not None and qw is None
        yield ModeError(mode.label, rel, wrel,
                        "the imatrix has no entry for this tensor: default weights" if missing
                        else "")
