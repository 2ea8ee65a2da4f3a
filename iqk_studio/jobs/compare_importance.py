"""One recipe quantized in memory with each importance weighting -- each imatrix given, no imatrix
(the quantizers' default weights, w = x² for IQ4_KS), uniform w = 1 -- and evaluated with the
built-in engine: the table of ik_llama.cpp discussion #359. A job of Progress / ImportanceRow
events, then Finished(result=ImportanceTable)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.weights import GGUFWeights
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.perplexity import (
    PerplexityResult,
    TextTooShort,
    n_chunks_for,
    run_perplexity,
    tokenize_file,
)
from iqk_studio.jobs.quantize import quantize_dequantize_tensor
from iqk_studio.jobs.recipe_eval import RecipePoint, plan_types
from iqk_studio.quant.api import QuantError


@dataclass(frozen=True)
class ImportanceMode:
    label: str  # e.g. "imatrix wiki8.dat", "no imatrix (default weights)", "w = 1"
    imatrix: object | None = None  # an Imatrix record (or dict name -> values)
    uniform: bool = False


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

    @property
    def quality_loss(self) -> float:
        """PPL(Q)/PPL(base) - 1 (a fraction), the study's y axis."""
        return self.ppl / self.ppl_base - 1.0 if self.ppl_base > 0 else math.nan


@dataclass(frozen=True)
class ImportanceTable:
    recipe: str
    text: str
    base: PerplexityResult | None
    rows: tuple[ImportanceRow, ...]

    def points(self) -> list[RecipePoint]:
        """The evaluated rows as points of the size-vs-quality chart."""
        return [RecipePoint(f"{self.recipe}, {r.label}", r.total_bytes, r.bpw, r.ppl, r.ppl_err,
                            r.n_chunks, r.n_ctx, self.text)
                for r in self.rows if not math.isnan(r.ppl)]


class ModeWeights:
    """The model's tensors with the plan's ones quantized -> dequantized in one importance mode,
    each once, on first use (the same path as the quantize job: imatrix slices per expert)."""

    def __init__(self, base: GGUFWeights, model, types: dict, mode: ImportanceMode):
        self.base, self.model, self.types, self.mode = base, model, dict(types), mode
        self._cache: dict = {}

    def names(self):
        return self.base.names()

    def shape(self, name: str):
        return self.base.shape(name)

    def get(self, name: str):
        qtype = self.types.get(name)
        if qtype is None or qtype.lower() == "f32":
            return self.base.get(name)
        w = self._cache.get(name)
        if w is None:
            w = quantize_dequantize_tensor(self.model, name, qtype, self.mode.imatrix,
                                           self.mode.uniform)
            self._cache[name] = w
        return w


def _run(fw, tokens, n_ctx, n_chunk, add_bos, bos_id, step0, total, label):
    """Drive run_perplexity, re-numbering its progress; returns its result or raises."""
    result = None
    for ev in run_perplexity(fw, tokens, n_ctx, n_chunk, add_bos, bos_id):
        if isinstance(ev, Progress) and ev.total:
            yield Progress(step0 + ev.done, total, f"{label}: {ev.message}")
        elif isinstance(ev, Failed):
            raise ValueError(ev.message)
        elif isinstance(ev, Finished):
            result = ev.result
    return result


def compare_importance_job(model_path, plan, text_path, modes: list[ImportanceMode],
                           n_ctx: int = 512, chunks: int = 4, base: bool = True,
                           recipe_label: str = "recipe") -> Iterator[object]:
    """Perplexity of the unquantized model (when `base`) and of the plan quantized in each mode,
    over the same chunks of the text."""
    from iqk_studio.gguf.reader import open_model

    if not modes:
        yield Failed("no importance mode to compare")
        return
    with open_model(model_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        tokens, add_bos, bos_id = tokenize_file(model, text_path)
        try:
            n_chunk = n_chunks_for(len(tokens), n_ctx, chunks)
        except TextTooShort as e:
            yield Failed(str(e))
            return
        gw = GGUFWeights(model)
        steps = Forward.from_model(model, weights=gw).cfg.n_layer + 1
        total = (len(modes) + base) * n_chunk * steps
        base_res = None
        if base:
            fw = Forward.from_model(model, weights=gw)
            try:
                base_res = yield from _run(fw, tokens, n_ctx, n_chunk, add_bos, bos_id, 0, total,
                                           "unquantized")
            except ValueError as e:
                yield Failed(f"unquantized model: {e}")
                return
        ppl_base = base_res.ppl if base_res else math.nan
        types = plan_types(plan)
        rows = []
        for k, mode in enumerate(modes):
            t0 = time.perf_counter()
            fw = Forward.from_model(model, weights=ModeWeights(gw, model, types, mode))
            step0 = (k + base) * n_chunk * steps
            try:
                res = yield from _run(fw, tokens, n_ctx, n_chunk, add_bos, bos_id, step0, total,
                                      mode.label)
                row = ImportanceRow(k + 1, len(modes), mode.label, res.ppl, res.ppl_err, ppl_base,
                                    plan.total_bytes, plan.bpw, n_chunk, n_ctx,
                                    time.perf_counter() - t0)
            except (QuantError, ValueError) as e:  # e.g. a type that needs an imatrix
                row = ImportanceRow(k + 1, len(modes), mode.label, math.nan, math.nan, ppl_base,
                                    plan.total_bytes, plan.bpw, n_chunk, n_ctx,
                                    time.perf_counter() - t0, str(e))
            rows.append(row)
            yield row
        table = ImportanceTable(recipe_label, Path(text_path).name, base_res, tuple(rows))
        yield Finished(f"{len(modes)} importance modes over {n_chunk} chunks of {n_ctx}", table)


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
