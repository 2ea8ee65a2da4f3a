"""Quantization error of every quantizable type on one tensor's weights (a job of TypeScore events)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from iqk_studio.gguf.types import by_name
from iqk_studio.quant import api, registry

MAX_SAMPLE = 1 << 18  # weights: enough for stable error figures, fast for every type


@dataclass(frozen=True)
class TypeScore:
    qtype: str
    bpw: float  # exact, row meta included, for this row length
    rel_rmse: float  # sqrt(mean (x - q)^2) / sqrt(mean x^2)
    weighted_rel_rmse: float  # same with the importance weights (= rel_rmse without them)
    seconds: float
    note: str = ""  # why there is no figure (e.g. the type needs an imatrix); errors are then NaN


def sample_rows(model, name: str, max_elements: int = MAX_SAMPLE) -> np.ndarray:
    """The first rows of a tensor (all of ne0, as many rows as fit), as float32 (rows, ne0)."""
    info = model.tensors[name]
    ne0 = info.shape[0]
    rows = max(1, min(info.n_rows, max_elements // max(ne0, 1)))
    raw = model.tensor_data(name)[:rows]
    return api.dequantize(raw, info.qtype.name, ne0)


def score(x: np.ndarray, qtype: str, importance: np.ndarray | None = None) -> TypeScore:
    t0 = time.perf_counter()
    q = api.dequantize(api.quantize(x, qtype, importance), qtype, x.shape[1])
    d2 = (x.astype(np.float64) - q) ** 2
    x2 = x.astype(np.float64) ** 2
    rel = float(np.sqrt(d2.sum() / max(x2.sum(), 1e-300)))
    if importance is None:
        wrel = rel
    else:
        w = np.asarray(importance, dtype=np.float64)[None, :]
        wrel = float(np.sqrt((w * d2).sum() / max((w * x2).sum(), 1e-300)))
    t = by_name(qtype)
    bpw = t.row_bytes(x.shape[1]) * 8 / x.shape[1]
    return TypeScore(qtype, bpw, rel, wrel, time.perf_counter() - t0)


def default_types() -> list[str]:
    """Every registered quantizer by bits per weight, without the _R4/_R8 interleaved forms
    (their values are their base type's)."""
    return sorted((n for n in registry.quantizers() if by_name(n).interleave == 1),
                  key=lambda n: by_name(n).bpw)


def type_errors(x: np.ndarray, importance: np.ndarray | None = None, types=None):
    """Yield a TypeScore for each type fitting the rows (default: default_types())."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    names = types if types is not None else default_types()
    for name in names:
        t = by_name(name)
        if not t.is_quantized or x.shape[1] % t.block:
            continue
        try:
            yield score(x, name, importance)
        except ValueError as e:  # QuantError: e.g. iq1_s needs an imatrix; rows per group
            bpw = t.row_bytes(x.shape[1]) * 8 / x.shape[1]
            yield TypeScore(name, bpw, float("nan"), float("nan"), 0.0, str(e))
