"""Public quantize / dequantize: checks input, picks the kernel, works in row blocks."""

from __future__ import annotations

import numpy as np

from iqk_studio.gguf.types import by_name
from iqk_studio.quant import registry
from iqk_studio.quant.errors import QuantError
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX, MODE_UNIFORM


def _qtype(qtype: str):
    try:
        return by_name(qtype)
    except KeyError as e:
        raise QuantError(str(e.args[0])) from None


def quantize(x: np.ndarray, qtype: str, importance: np.ndarray | None = None,
             uniform: bool = False) -> np.ndarray:
    """Quantize rows of x (rows, n) float32 to (rows, row_bytes) uint8 exactly as ggml stores them.

    importance: one weight per column (imatrix values already divided by ncall), or None for the
    reference's default weighting; uniform=True uses w = 1 (ignores importance).
    """
    t = _qtype(qtype)
    fn = registry.quantizers().get(t.name)
    if fn is None:
        raise QuantError(f"quantizing to {t.name} is not implemented")
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantError(f"expected a 2-D (rows, n) array, got shape {x.shape}")
    n = x.shape[1]
    if n == 0 or n % t.block:
        raise QuantError(f"{t.name} needs rows that are a multiple of {t.block}; got {n}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise QuantError(f"input has NaN or Inf (first in row {bad})")
    if t.interleave > 1 and x.shape[0] % t.interleave:
        raise QuantError(f"{t.name} interleaves rows in groups of {t.interleave}; "
                         f"got {x.shape[0]} rows")
    qw = None
    mode = MODE_DEFAULT
    if uniform:
        mode = MODE_UNIFORM
    elif importance is not None:
        qw = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
        if qw.shape[0] != n:
            raise QuantError(f"importance has {qw.shape[0]} values for rows of {n}")
        if not np.isfinite(qw).all():
            raise QuantError("importance has NaN or Inf")
        mode = MODE_IMATRIX
    out = fn(x, qw, mode)
    assert out.shape == (x.shape[0], t.row_bytes(n)) and out.dtype == np.uint8
    return out


def dequantize(raw: np.ndarray, qtype: str, n: int) -> np.ndarray:
    """Dequantize (rows, row_bytes) uint8 (or flat bytes) of rows of n elements to float32 (rows, n)."""
    t = _qtype(qtype)
    fn = registry.dequantizers().get(t.name)
    if fn is None:
        raise QuantError(f"dequantizing {t.name} is not implemented")
    if n <= 0 or n % t.block:
        raise QuantError(f"{t.name} needs rows that are a multiple of {t.block}; got {n}")
    rb = t.row_bytes(n)
    raw = np.ascontiguousarray(np.asarray(raw).view(np.uint8)).reshape(-1)
    if raw.size % rb:
        raise QuantError(f"{raw.size} bytes is not a whole number of {t.name} rows of {rb} bytes")
    return fn(raw.reshape(-1, rb), n)


def quantize_blocks(x: np.ndarray, qtype: str, importance: np.ndarray | None = None,
                    uniform: bool = False, rows_per_block: int = 256):
    """Yield (row_start, row_end, bytes) so a job can report progress and cancel between blocks."""
    x = np.asarray(x)
    for r0 in range(0, x.shape[0], rows_per_block):
        r1 = min(x.shape[0], r0 + rows_per_block)
        yield r0, r1, quantize(x[r0:r1], qtype, importance, uniform)


__all__ = ["QuantError", "quantize", "dequantize", "quantize_blocks",
           "MODE_DEFAULT", "MODE_IMATRIX", "MODE_UNIFORM"]
