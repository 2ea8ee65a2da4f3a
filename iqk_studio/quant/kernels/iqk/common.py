"""numba helpers shared by the 4-6 bit IQK kernels: the reference's exact nearest-value lookups
(best_index_iq4nl/iq5nl/iq6nl), QHelper imatrix sanitation, block weights and the p/m scale search.

No fast-math: each a*b+c that GCC 12 -O3 -march=native fused in iqk_quantize.cpp (read from
-fdump-tree-optimized) is an explicit fma32; everything else is rounded step by step.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant import grids
from iqk_studio.quant.common import amax_signed, fma32
from iqk_studio.quant.kernels import MODE_IMATRIX, MODE_UNIFORM

F = np.float32

IQ4K = grids.iq4k_values.astype(np.float32)  # (32,) base | shifted
IQ5NL = grids.iq5nl_values.astype(np.float32)  # (64,)
IQ6NL = grids.iq6nl_values.astype(np.float32)  # (128,)

# Lookup tables keyed on trunc(x) - values[0] (iqk_quantize.cpp): an entry < half is the answer,
# an entry >= half means "compare with the pair (e - half, e - half + 1)". Numeric facts.
IQ4NL_INDEX = np.array([
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 17, 17, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 18, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 19, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 20, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 21, 21, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 22, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 23, 23, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 24, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 25,
    10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 26, 26, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11,
    11, 11, 27, 27, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 28, 13, 13, 13, 13,
    13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 13, 29, 14, 14, 14, 14, 14, 14, 14, 14, 14,
    14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 30, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15], dtype=np.int32)
IQ5NL_INDEX = np.array([
    0, 0, 0, 0, 0, 0, 32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 33, 33, 2, 2, 2, 2, 2, 2, 2, 2, 2, 34,
    34, 3, 3, 3, 3, 3, 3, 3, 3, 35, 35, 4, 4, 4, 4, 4, 4, 4, 36, 36, 5, 5, 5, 5, 5, 5, 5, 37,
    37, 6, 6, 6, 6, 6, 6, 6, 38, 7, 7, 7, 7, 7, 7, 39, 39, 8, 8, 8, 8, 8, 40, 40, 9, 9, 9, 9,
    9, 41, 41, 10, 10, 10, 10, 10, 42, 11, 11, 11, 11, 11, 43, 12, 12, 12, 12, 12, 44, 13, 13,
    13, 13, 13, 45, 14, 14, 14, 14, 14, 46, 15, 15, 15, 15, 47, 47, 16, 16, 16, 16, 48, 17, 17,
    17, 17, 17, 49, 18, 18, 18, 18, 18, 50, 19, 19, 19, 19, 19, 51, 20, 20, 20, 20, 20, 52, 21,
    21, 21, 21, 21, 53, 53, 22, 22, 22, 22, 22, 54, 54, 23, 23, 23, 23, 23, 23, 55, 24, 24, 24,
    24, 24, 24, 24, 56, 25, 25, 25, 25, 25, 25, 25, 57, 57, 26, 26, 26, 26, 26, 26, 26, 58, 58,
    27, 27, 27, 27, 27, 27, 27, 27, 59, 28, 28, 28, 28, 28, 28, 28, 28, 28, 60, 29, 29, 29, 29,
    29, 29, 29, 29, 29, 29, 61, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 62, 31, 31, 31, 31,
    31, 31], dtype=np.int32)
IQ6NL_INDEX = np.array([
    0, 0, 0, 64, 1, 1, 1, 1, 1, 65, 2, 2, 2, 2, 2, 66, 3, 3, 3, 3, 67, 67, 4, 4, 4, 4, 68, 5,
    5, 5, 5, 69, 69, 6, 6, 6, 70, 70, 7, 7, 7, 71, 8, 8, 8, 72, 72, 9, 9, 9, 73, 73, 10, 10,
    10, 74, 11, 11, 11, 75, 12, 12, 12, 76, 13, 13, 13, 77, 14, 14, 14, 78, 15, 15, 79, 79, 16,
    16, 80, 17, 17, 81, 81, 18, 18, 82, 19, 19, 83, 83, 20, 84, 84, 21, 85, 85, 22, 86, 86, 23,
    87, 87, 24, 88, 88, 25, 89, 89, 26, 90, 90, 27, 91, 91, 28, 92, 29, 93, 93, 30, 94, 94, 31,
    95, 95, 32, 96, 33, 97, 97, 34, 98, 98, 35, 99, 99, 36, 100, 100, 37, 101, 38, 102, 102,
    39, 103, 103, 40, 104, 104, 41, 41, 105, 42, 42, 106, 106, 43, 107, 107, 44, 108, 108, 45,
    45, 109, 46, 46, 46, 110, 47, 47, 111, 111, 48, 48, 112, 49, 49, 49, 113, 50, 50, 50, 114,
    51, 51, 51, 115, 52, 52, 52, 116, 116, 53, 53, 53, 117, 54, 54, 54, 118, 118, 55, 55, 55,
    119, 119, 56, 56, 56, 120, 120, 57, 57, 57, 121, 121, 58, 58, 58, 58, 122, 59, 59, 59, 59,
    123, 123, 60, 60, 60, 60, 124, 61, 61, 61, 61, 61, 125, 62, 62, 62, 62, 62, 126, 63, 63, 63],
    dtype=np.int32)

KIND_IQ4, KIND_IQ5, KIND_IQ6 = 4, 5, 6
# default weights: x²; 0.25·σ² + x²; the same with 0.25·σ² fused (IQ5_K's second pass)
W_X2, W_QUARTER_SIGMA, W_QUARTER_SIGMA_FMA = 0, 1, 2


@njit(nogil=True, cache=True, error_model="numpy")
def _resolve(vals, base, x, e, half):
    """Table entry e -> index: e itself, or for e >= half the nearer of e - half and e - half + 1
    by the reference's float32 test `x - v[k] < v[k+1] - x` (ties go up). Branch-free, for
    iq6nl whose table is a quarter pairs (measured 1.8x faster kernel); the sparser iq4nl/iq5nl
    tables are faster with the reference's branches."""
    pair = np.int64(e >= half)
    k = e - half * pair
    k1 = min(k + 1, half - 1)
    lower = np.int64(x - vals[base + k] < vals[base + k1] - x)
    return k + pair * (1 - lower)


@njit(nogil=True, cache=True, error_model="numpy")
def best_index_iq4nl(vals, base, x):
    """iqk best_index_iq4nl on the 16 values vals[base:base+16]: key trunc(x) - values[0]."""
    ix = np.int64(np.int32(x)) - np.int64(vals[base])
    if ix < 0:
        return 0
    if ix >= 241:
        return 15
    e = IQ4NL_INDEX[ix]
    if e < 16:
        return e
    k = e - 16
    return k if x - vals[base + k] < vals[base + k + 1] - x else k + 1


@njit(nogil=True, cache=True, error_model="numpy")
def best_index_iq5nl(vals, base, x):
    """iqk best_index_iq5nl on the 32 values vals[base:base+32] (its range test is >= 247)."""
    ix = np.int64(np.int32(x)) - np.int64(vals[base])
    if ix < 0:
        return 0
    if ix >= 247:
        return 31
    e = IQ5NL_INDEX[ix]
    if e < 32:
        return e
    k = e - 32
    return k if x - vals[base + k] < vals[base + k + 1] - x else k + 1


@njit(nogil=True, cache=True, error_model="numpy")
def best_index_iq6nl(vals, base, x):
    """iqk best_index_iq6nl: the key is trunc(x - values[0]) computed in float32."""
    ix = np.int64(np.int32(x - vals[base]))
    if ix < 0:
        return 0
    if ix >= 249:
        return 63
    return _resolve(vals, base, x, np.int64(IQ6NL_INDEX[ix]), 64)


@njit(nogil=True, cache=True, error_model="numpy")
def best_index_kind(kind, vals, base, x):
    if kind == KIND_IQ4:
        return best_index_iq4nl(vals, base, x)
    if kind == KIND_IQ5:
        return best_index_iq5nl(vals, base, x)
    return best_index_iq6nl(vals, base, x)


@njit(nogil=True, cache=True, error_model="numpy")
def sanitize_weights(out, qw, x, block):
    """QHelper::row_weights: copy qw; a block whose Σqw², Σx² or Σqw|x| is <= block·1e-18 gets
    all weights 1e-9. No FMA: GCC vectorizes these sums as in-order reductions of separately
    rounded products."""
    eps = F(1e-9)
    thr = F(block) * (eps * eps)
    for b0 in range(0, x.shape[0], block):
        sw2 = F(0.0)
        sx2 = F(0.0)
        swx = F(0.0)
        for j in range(b0, b0 + block):
            out[j] = qw[j]
            sw2 += qw[j] * qw[j]
            sx2 += x[j] * x[j]
            swx += qw[j] * abs(x[j])
        if not (sw2 > thr and sx2 > thr and swx > thr):
            for j in range(b0, b0 + block):
                out[j] = eps


@njit(nogil=True, cache=True, error_model="numpy")
def sigma2_of(xbl):
    """2·Σx²/256 over a 256-block, without FMA: GCC vectorizes this loop as an in-order reduction
    of separately rounded squares (vmulps + vaddss)."""
    s = F(0.0)
    for j in range(xbl.shape[0]):
        s += xbl[j] * xbl[j]
    return s * F(2.0 / 256.0)


@njit(nogil=True, cache=True, error_model="numpy")
def block_weights(w, xb, qwb, mode, sigma2, wkind):
    """Importance of each element of a block: imatrix qw·sqrt(σ²+x²) (one FMA inside the root);
    uniform 1; default the type's own (wkind W_X2, W_QUARTER_SIGMA or W_QUARTER_SIGMA_FMA)."""
    n = xb.shape[0]
    if mode == MODE_IMATRIX:
        for j in range(n):
            w[j] = qwb[j] * np.sqrt(fma32(xb[j], xb[j], sigma2))
    elif mode == MODE_UNIFORM:
        for j in range(n):
            w[j] = F(1.0)
    elif wkind == W_X2:
        for j in range(n):
            w[j] = xb[j] * xb[j]
    elif wkind == W_QUARTER_SIGMA:
        c = F(0.25) * sigma2
        for j in range(n):
            w[j] = c + xb[j] * xb[j]
    else:
        for j in range(n):
            w[j] = fma32(sigma2, F(0.25), xb[j] * xb[j])


@njit(nogil=True, cache=True, error_model="numpy")
def trial_pm(xb, w, kind, vals, base, id_):
    """Σw·q·x and Σw·q² for labels of id·x ("p") and of -id·x ("m") on one table half."""
    sqp = F(0.0)
    s2p = F(0.0)
    sqm = F(0.0)
    s2m = F(0.0)
    for j in range(xb.shape[0]):
        al = id_ * xb[j]
        q = vals[base + best_index_kind(kind, vals, base, al)]
        t = w[j] * q
        sqp = fma32(t, xb[j], sqp)
        s2p = fma32(t, q, s2p)
        q = vals[base + best_index_kind(kind, vals, base, -al)]
        t = w[j] * q
        sqm = fma32(t, xb[j], sqm)
        s2m = fma32(t, q, s2m)
    return sqp, s2p, sqm, s2m


@njit(nogil=True, cache=True, error_model="numpy")
def search_scale(xb, w, kind, vals, half, ntry, refit):
    """The per-block scale search of quantize_row_iq{4,5,6}_k*: p/m trials at d = max/|v0|, then
    id = (itry + v0)/max on the base and shifted halves for itry in [-ntry, ntry]; with refit
    (IQ5_K, IQ6_K) a last relabel at 1/d. Returns (d, shifted); (0, False) for a ~zero block."""
    amax, mx = amax_signed(xb, 0, xb.shape[0])
    if amax < F(1e-16):
        return F(0.0), False
    v0 = vals[0]
    d = -mx / v0
    sqp, s2p, sqm, s2m = trial_pm(xb, w, kind, vals, 0, F(1.0) / d)
    d = sqp / s2p
    best = d * sqp
    if s2m > 0 and sqm * sqm > best * s2m:
        d = sqm / s2m
        best = d * sqm
    shifted = False
    for itry in range(-ntry, ntry + 1):
        for sh in range(2):
            base = sh * half
            sqp, s2p, sqm, s2m = trial_pm(xb, w, kind, vals, base, (F(itry) + vals[base]) / mx)
            if s2p > 0 and sqp * sqp > best * s2p:
                d = sqp / s2p
                best = d * sqp
                shifted = sh == 1
            if s2m > 0 and sqm * sqm > best * s2m:
                d = sqm / s2m
                best = d * sqm
                shifted = sh == 1
    if refit and d != 0:
        base = half if shifted else 0
        id_ = F(1.0) / d
        sqx = F(0.0)
        sq2 = F(0.0)
        for j in range(xb.shape[0]):
            q = vals[base + best_index_kind(kind, vals, base, id_ * xb[j])]
            t = w[j] * q
            sqx = fma32(t, xb[j], sqx)
            sq2 = fma32(t, q, sq2)
        if sq2 > 0:
            d = sqx / sq2
    return d, shifted


@njit(nogil=True, cache=True, error_model="numpy")
def scramble_inverse(v):
    """IQ4_KSS scramble_table[v & 0x7fff]: the 15-bit j with j ^ (j << 1) == v (even parity v)."""
    j = 0
    prev = 0
    for k in range(15):
        b = ((v >> k) & 1) ^ prev
        j |= b << k
        prev = b
    return j


@njit(nogil=True, cache=True, error_model="numpy")
def put_f32(out, pos, f):
    out[pos:pos + 4].view(np.float32)[0] = f


@njit(nogil=True, cache=True, error_model="numpy")
def get_f32(raw, pos):
    return raw[pos:pos + 4].view(np.float32)[0]


@njit(nogil=True, cache=True, error_model="numpy")
def row_importance(x, qw, mode, block):
    """QHelper's sanitized copy of the imatrix row for one row of x (mode 1), else qw itself."""
    if mode != MODE_IMATRIX:
        return qw
    out = np.empty(x.shape[0], dtype=np.float32)
    sanitize_weights(out, qw, x, block)
    return out
