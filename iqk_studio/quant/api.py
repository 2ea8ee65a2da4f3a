"""Public quantize / dequantize (checks input, picks the kernel from the index) and the one way a
tensor is worked through in row blocks: tensor_blocks for the quantize job, quantize_rows
(and round_trip, quantize -> dequantize) in memory for evaluating a recipe without writing a file."""

from __future__ import annotations

import math

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
    reference's default weighting; uniform=True uses w = 1 (ignores importance). Shapes, block
    and row-group multiples are checked by the kernel's wrapper (kernels/wrap.py)."""
    t = _qtype(qtype)
    fn = registry.quantizers().get(t.name)
    if fn is None:
        raise QuantError(f"quantizing to {t.name} is not implemented")
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantError(f"expected a 2-D (rows, n) array, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise QuantError(f"input has NaN or Inf (first in row {bad})")
    qw = None
    mode = MODE_DEFAULT
    if uniform:
        mode = MODE_UNIFORM
    elif importance is not None:
        qw = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
        if not np.isfinite(qw).all():
            raise QuantError("importance has NaN or Inf")
        mode = MODE_IMATRIX
    return fn(x, qw, mode)


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


# ------------------------------------------------------------------ tensors in row blocks

ELEMENTS_PER_BLOCK = 1 << 18  # per kernel call: a few ms (q8_0) to ~100 ms (slow types) of work


def rows_per_block(ne0: int, qtype: str, threads: int = 1) -> int:
    """Rows per kernel call: about ELEMENTS_PER_BLOCK per thread, a multiple of the type's row
    group (interleaved types)."""
    group = _qtype(qtype).interleave
    rows = max(1, ELEMENTS_PER_BLOCK * max(1, threads) // max(1, ne0))
    return max(group, rows // group * group)


def tensor_blocks(shape: tuple[int, ...], qtype: str, threads: int = 1):
    """(expert, r0, r1) over the rows of a tensor of ggml shape (ne0, ne1[, ne2]): rows r0:r1 of
    its (ne2·ne1, ne0) matrix in order, never crossing an expert, one kernel call each."""
    ne0 = int(shape[0])
    ne1 = int(shape[1]) if len(shape) > 1 else 1
    ne2 = math.prod(int(d) for d in shape[2:])
    step = rows_per_block(ne0, qtype, threads)
    for e in range(ne2):
        for r0 in range(e * ne1, (e + 1) * ne1, step):
            yield e, r0, min((e + 1) * ne1, r0 + step)


def expert_importance(importance: np.ndarray | None, e: int, ne0: int) -> np.ndarray | None:
    """Expert e's slice [e·ne0, (e+1)·ne0) of an imatrix vector of ne0·ne2 values (as
    llama-quantize passes it); a vector of ne0 values serves every expert."""
    if importance is None:
        return None
    v = np.asarray(importance, dtype=np.float32).reshape(-1)
    if v.size == ne0:
        return v
    if v.size < (e + 1) * ne0 or v.size % ne0:
        raise QuantError(f"importance has {v.size} values for rows of {ne0}")
    return v[e * ne0:(e + 1) * ne0]


def quantize_rows(x: np.ndarray, qtype: str, importance: np.ndarray | None = None,
                  uniform: bool = False, threads: int = 1):
    """Quantize a tensor in memory, one row block per step: yields (r0, r1, q) with q the bytes
    (r1 - r0, row_bytes) of rows r0:r1 of x viewed as (rows, ne0). x: float32 in numpy order
    (ne2, ne1, ne0), (ne1, ne0) or (ne0,); experts get their importance slices, as in a quantized
    file. Stop iterating to cancel: at most one block of work is lost."""
    x = np.asarray(x, dtype=np.float32)
    ne0 = x.shape[-1]
    shape = tuple(reversed(x.shape)) if x.ndim > 1 else (ne0, 1)
    rows = x.reshape(-1, ne0)
    for e, r0, r1 in tensor_blocks(shape, qtype, threads):
        qw = expert_importance(importance, e, ne0)
        yield r0, r1, quantize(rows[r0:r1], qtype, qw, uniform)


def round_trip(x: np.ndarray, qtype: str, importance: np.ndarray | None = None,
               uniform: bool = False, threads: int = 1):
    """quantize_rows, each block dequantized back: yields (r0, r1, y) with y float32
    (r1 - r0, ne0)."""
    ne0 = np.shape(x)[-1]
    for r0, r1, q in quantize_rows(x, qtype, importance, uniform, threads):
        yield r0, r1, dequantize(q, qtype, ne0)


__all__ = ["QuantError", "quantize", "dequantize", "rows_per_block", "tensor_blocks",
           "expert_importance", "quantize_rows", "round_trip", "ELEMENTS_PER_BLOCK", "MODE_DEFAULT", "MODE_IMATRIX",
           "MODE_UNIFORM"]
