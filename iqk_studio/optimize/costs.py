"""The cost model: a group's predicted KLD at any types, from its measured KLD at one or a few
types and the activation-weighted squared quantization error of its tensors at every type
(KLD grows with that error; between two measured points the curve is interpolated in log-log,
outside them it is proportional). Also the predicted loss of any plan (the editor's live value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from iqk_studio.optimize.space import group_of

SAMPLE_ROWS = 128  # rows per tensor (per expert: at least 16) quantized to estimate its error
_BLOCK = 16  # rows are sampled in blocks (interleaved types pack up to 16 rows)


def sample_rows(n_rows: int, max_rows: int = SAMPLE_ROWS) -> np.ndarray:
    """Indices of evenly spread blocks of 16 rows (all rows when few)."""
    if n_rows <= max_rows or n_rows % _BLOCK:
        return np.arange(n_rows)
    n_blocks = n_rows // _BLOCK
    take = max(1, max_rows // _BLOCK)
    starts = np.linspace(0, n_blocks - 1, take).round().astype(np.int64) * _BLOCK
    return (starts[:, None] + np.arange(_BLOCK)[None, :]).reshape(-1)


def weighted_error(w: np.ndarray, qtype: str, weight: np.ndarray | None,
                   importance: np.ndarray | None, max_rows: int = SAMPLE_ROWS) -> float:
    """Σ_rows Σ_j weight_j (w_ij - q(w)_ij)² of a tensor (numpy shape (..., rows, n); 3-D: one
    weight/importance row per expert), estimated on sampled rows and scaled to all rows.
    importance: what quantization itself uses (the imatrix), weight: the error's weighting
    (mean squared activation per input column; None = 1)."""
    from iqk_studio.quant.api import dequantize, quantize

    n = w.shape[-1]
    mats = w.reshape(-1, *w.shape[-2:])
    per = max(_BLOCK, max_rows // mats.shape[0]) if mats.shape[0] > 1 else max_rows
    total = 0.0
    for e in range(mats.shape[0]):
        rows = sample_rows(mats.shape[1], per)
        x = np.ascontiguousarray(mats[e][rows], np.float32)
        imp = None if importance is None else np.asarray(importance, np.float32).reshape(-1, n)
        imp = None if imp is None else imp[min(e, imp.shape[0] - 1)]
        d = dequantize(quantize(x, qtype, imp), qtype, n).reshape(x.shape) - x
        sq = np.einsum("ij,ij->j", d, d, dtype=np.float64)
        if weight is not None:
            wt = np.asarray(weight, np.float64).reshape(-1, n)
            sq = sq * wt[min(e, wt.shape[0] - 1)]
        total += float(sq.sum()) * mats.shape[1] / len(rows)
    return total


@dataclass
class CostTable:
    """Per-tensor errors and per-group KLD measurements -> predicted KLD of any assignment."""

    errors: dict = field(default_factory=dict)  # (tensor, type) -> weighted error
    measured: dict = field(default_factory=dict)  # group -> {key: (err, kld, kld_err)}
    sources: dict = field(default_factory=dict)  # tensor -> source type (error 0)
    scale: float = math.nan  # median kld/err over measured groups (for unmeasured ones)

    def tensor_error(self, name: str, qtype: str) -> float | None:
        if self.sources.get(name) == qtype:
            return 0.0
        return self.errors.get((name, qtype))

    def group_error(self, names, types) -> float | None:
        total = 0.0
        for n, t in zip(names, types):
            e = self.tensor_error(n, t)
            if e is None:
                return None
            total += e
        return total

    def finish(self) -> CostTable:
        """Set the fallback scale from the measured groups."""
        r = [k / e for pts in self.measured.values() for e, k, _ in pts.values()
             if e > 0 and k > 0]
        self.scale = float(np.median(r)) if r else math.nan
        return self

    def group_cost(self, group: str, names, types) -> float | None:
        """Predicted KLD of a group whose tensors get these types; None when unknown."""
        key = "+".join(sorted(set(types)))
        pts = self.measured.get(group, {})
        if key in pts and math.isfinite(pts[key][1]):
            return max(pts[key][1], 0.0)
        err = self.group_error(names, types)
        if err is None:
            return None
        if err == 0:
            return 0.0
        curve = sorted((e, max(k, 1e-12)) for e, k, _ in pts.values()
                       if e > 0 and math.isfinite(k))
        if not curve:
            return err * self.scale if math.isfinite(self.scale) else None
        return _interpolate(curve, err)

    def predict(self, plan) -> Prediction:
        """Predicted KLD of a plan: the sum over groups of the tensors it quantizes."""
        by_group: dict[str, tuple[list, list]] = {}
        for e in plan.entries:
            if e.quantized:
                names, types = by_group.setdefault(group_of(e.name), ([], []))
                names.append(e.name)
                types.append(e.type)
        total, missing = 0.0, []
        for g, (names, types) in by_group.items():
            c = self.group_cost(g, names, types)
            if c is None:
                missing.append(g)
            else:
                total += c
        return Prediction(total, len(by_group) - len(missing), len(by_group), tuple(missing))


@dataclass(frozen=True)
class Prediction:
    kld: float  # predicted mean KLD against the source model, summed over the covered groups
    covered: int  # quantized groups with a prediction
    groups: int  # quantized groups
    missing: tuple[str, ...]  # groups without measurements for their types

    @property
    def complete(self) -> bool:
        return not self.missing


def _interpolate(curve: list[tuple[float, float]], err: float) -> float:
    """log-log interpolation through measured (error, kld) points; proportional outside."""
    if err <= curve[0][0]:
        return curve[0][1] * err / curve[0][0]
    if err >= curve[-1][0]:
        return curve[-1][1] * err / curve[-1][0]
    for (e0, k0), (e1, k1) in zip(curve, curve[1:]):
        if e0 <= err <= e1:
            if e1 == e0:
                return k0
            f = (math.log(err) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return math.exp(math.log(k0) + f * (math.log(k1) - math.log(k0)))
    return curve[-1][1]


def table_from_rows(rows, sources: dict, groups: dict | None = None) -> CostTable:
    """A CostTable from stored CostRows: rows whose group is a tensor name hold that tensor's
    error at a type; rows of a group label hold its KLD at an option key. groups (label ->
    tensor names) gives each measured point its error; without it a point's error is the
    row's own err column."""
    t = CostTable(sources=dict(sources))
    for r in rows:
        if r.group.startswith("recipe:"):
            continue
        if r.group.endswith(".weight") and math.isfinite(r.err):
            t.errors[(r.group, r.type)] = r.err
    for r in rows:
        if r.group.startswith("recipe:") or r.group.endswith(".weight") or not math.isfinite(
                r.kld):
            continue
        err = r.err
        if groups is not None and r.group in groups:
            names = groups[r.group]
            types = r.type.split("+") if "+" in r.type else [r.type] * len(names)
            e = t.group_error(names, types) if len(types) == len(names) else None
            err = e if e is not None else err
        t.measured.setdefault(r.group, {})[r.type] = (err if math.isfinite(err) else 0.0,
                                                      r.kld, r.kld_err)
    return t.finish()
