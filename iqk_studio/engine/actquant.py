"""Activation quantizers of ik_llama.cpp's CPU matmul (q8_2_x4, q8_K, ...; see ik_paths.py for the
formats): float32 rows in, the dequantized activations d·q (float32) out."""

from __future__ import annotations

import numpy as np
from numba import njit

# act type: (block, lanes, scale rounding, inverse)
#   block: elements sharing a scale (lanes == 0), or the lane width when lanes > 0: element j of a
#          row uses scale (j % (block*lanes)) // block (one set of `lanes` scales per row);
#   rounding: "bf16" | "f16" | "f32" of d = amax/127;  inverse: "127/amax" or "1/d".
ACT_FORMATS: dict[str, tuple[int, int, str, str]] = {
    "q8_2_x4": (32, 0, "bf16", "1/d"),
    "q8_K": (256, 0, "f32", "127/amax"),
    "q8_K32": (256, 0, "f32", "127/amax"),
    "q8_KR8": (256, 0, "f32", "127/amax"),
    "q8_K128": (128, 0, "f32", "127/amax"),
    "q8_0": (32, 0, "f16", "127/amax"),
    "q8_KV": (0, 0, "f32", "1/d"),  # block 0: the whole row
    "q8_K64": (4, 4, "f32", "1/d"),
    "q8_K16": (16, 4, "f32", "1/d"),
}


# Serial kernels: a call is ~1 ms of work, less than what waking numba's OpenMP threads costs.
@njit(nogil=True, cache=True, fastmath={"nnan", "ninf", "reassoc"})
def _amax(out, x, block, lanes):
    # x: f32 (R, n) | out: f32 (R, nb) max |x| per block (or per lane group when lanes > 0);
    # a NaN makes its block's value undefined, but _apply still turns that element into NaN
    for r in range(x.shape[0]):
        row = x[r]
        for b in range(out.shape[1]):
            out[r, b] = np.float32(0.0)
        if lanes == 0:
            for b in range(out.shape[1]):
                m = np.float32(0.0)
                for j in range(b * block, (b + 1) * block):
                    m = max(m, abs(row[j]))
                out[r, b] = m
        else:
            for j in range(row.shape[0]):
                b = (j % (block * lanes)) // block
                v = abs(row[j])
                if v > out[r, b]:
                    out[r, b] = v


@njit(nogil=True, cache=True)
def _apply(out, x, d, inv, block, lanes):
    # out[r, j] = d[r, b] * clamp(rint(x[r, j] * inv[r, b]), -128, 127), b the scale of element j
    lo = np.float32(-128.0)
    hi = np.float32(127.0)
    for r in range(x.shape[0]):
        if lanes == 0:
            row, orow, dr, ir = x[r], out[r], d[r], inv[r]
            for b in range(dr.shape[0]):
                s = dr[b]
                iv = ir[b]
                for j in range(b * block, (b + 1) * block):
                    q = np.rint(row[j] * iv)
                    qc = min(max(q, lo), hi)
                    orow[j] = s * (qc if q == q else q)  # NaN stays NaN
        else:
            for j in range(x.shape[1]):
                b = (j % (block * lanes)) // block
                q = np.rint(x[r, j] * inv[r, b])
                qc = min(max(q, lo), hi)
                out[r, j] = d[r, b] * (qc if q == q else q)


def round_bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even, as GGML_FP32_TO_BF16 for finite values), as float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    u = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    return (u << np.uint32(16)).view(np.float32)


def quantize_acts(x: np.ndarray, act: str) -> np.ndarray:
    """Rows x (R, n) float32 -> d·q (R, n) float32 as `act` quantizes them (ik_paths.py)."""
    block, lanes, rounding, inverse = ACT_FORMATS[act]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"activations must be 2-D, got shape {x.shape}")
    n = x.shape[1]
    if block == 0:
        block = n
    nb = lanes if lanes else n // block
    if n % (block * max(lanes, 1)):
        raise ValueError(f"{act}: a row of {n} is not a multiple of {block * max(lanes, 1)}")
    amax = np.empty((x.shape[0], nb), np.float32)
    _amax(amax, x, block, lanes)
    d = amax / np.float32(127.0)
    if rounding == "bf16":
        d = round_bf16(d)
    elif rounding == "f16":
        d16 = d.astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore"):
        if inverse == "1/d":
            inv = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
        else:
            inv = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    if rounding == "f16":
        d = d16
    out = np.empty_like(x)
    _apply(out, x, np.ascontiguousarray(d), np.ascontiguousarray(inv), block, lanes)
    return out
