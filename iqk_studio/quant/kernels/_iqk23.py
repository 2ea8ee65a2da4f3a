"""Private helpers of the 2-3 bit IQK kernels (iq2_k, iq2_ks, iq3_k, iq3_ks, iq2_kl): value
tables, the QHelper imatrix sanitation, importance weights, nearest-value search, explicit FMA.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from iqk_studio.quant.common import F

FM = {"contract"}  # GCC -O3 -march=native contracts a*b+c into FMA (quant-formats.md §0)

# ggml-common.h tables (quant-formats.md §5): base half then shifted half
IQ2NL = np.array([-31, -13, 1, 17, -26, -8, 6, 22], dtype=np.float32)
IQ3NL = np.array([-63, -40, -23, -10, 1, 13, 28, 47, -59, -36, -19, -6, 5, 17, 32, 51],
                 dtype=np.float32)
# iqk_quantize.cpp iq3nl_index[111]: entries < 8 are final, 8 + i means "i or i + 1"
IQ3NL_INDEX = np.array(
    [0] * 11 + [8, 8] + [1] * 18 + [9, 9] + [2] * 13 + [10, 10] + [3] * 10 + [11, 11]
    + [4] * 10 + [12] + [5] * 12 + [13, 13] + [6] * 15 + [14, 14] + [7] * 9, dtype=np.int64)
assert IQ3NL_INDEX.shape[0] == 111

MODE_DEFAULT, MODE_IMATRIX, MODE_UNIFORM = 0, 1, 2


@intrinsic
def fmaf(typingctx, a, b, c):
    """float32 fused multiply-add (one rounding), like _mm256_fmadd_ps on one lane."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        flt = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [flt], ir.FunctionType(flt, [flt] * 3))
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def fence(typingctx, a):
    """llvm.arithmetic.fence: a rounded float32 that LLVM may not fuse into a following add
    (a helper compiled without `contract` is not enough: LLVM still fuses once inlined)."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        flt = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.arithmetic.fence", [flt],
                                              ir.FunctionType(flt, [flt]))
        return builder.call(fn, args)

    return sig, codegen


@njit(nogil=True, cache=True)
def hsum8(v):
    """hsum_float_8 of iqk_common.h: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))."""
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))


@njit(nogil=True, cache=True, fastmath=FM)
def sanitize(out, x, qw, bs):
    """QHelper::row_weights: copy qw; a block of bs whose Σqw², Σx² or Σqw|x| is tiny gets 1e-9."""
    thr = F(bs) * F(1e-18)
    for b0 in range(0, x.shape[0], bs):
        sw2 = F(0.0)
        sx2 = F(0.0)
        swx = F(0.0)
        for j in range(b0, b0 + bs):
            w = qw[j]
            out[j] = w
            sw2 += w * w
            sx2 += x[j] * x[j]
            swx += w * abs(x[j])
        if not (sw2 > thr and sx2 > thr and swx > thr):
            out[b0:b0 + bs] = F(1e-9)


@njit(nogil=True, cache=True, fastmath=FM)
def sum_sq(x, j0, n):
    """Σx² in order with each x² rounded: GCC vectorizes this loop as an in-order reduction,
    so the squares are not fused into the adds."""
    s = F(0.0)
    for j in range(j0, j0 + n):
        s += fence(x[j] * x[j])
    return s


@njit(nogil=True, cache=True, fastmath=FM)
def weights_sigma(w, x, qw, j0, n, sigma2, mode, fused):
    """IQ2_K/IQ2_KS/IQ3_K weights: qw·sqrt(σ²+x²) with imatrix, else 0.25·σ² + x² (or 1).

    Without imatrix GCC emitted fma(x, x, 0.25·σ²) in some functions and a separately rounded
    x² in others (when the squares are shared with another vectorized use): `fused` selects."""
    c = F(0.25) * sigma2
    for j in range(n):
        xj = x[j0 + j]
        if mode == MODE_IMATRIX:
            w[j] = qw[j0 + j] * np.sqrt(sigma2 + xj * xj)
        elif mode == MODE_UNIFORM:
            w[j] = F(1.0)
        elif fused:
            w[j] = c + xj * xj
        else:
            w[j] = c + fence(xj * xj)


@njit(nogil=True, cache=True)
def amax_signed(x, j0, n):
    """(max |x|, the signed x reaching it; first on ties) over x[j0:j0+n]."""
    amax = F(0.0)
    mx = F(0.0)
    for j in range(j0, j0 + n):
        ax = abs(x[j])
        if ax > amax:
            amax = ax
            mx = x[j]
    return amax, mx


@njit(nogil=True, cache=True)
def best_index_iq2nl(values, off, x):
    """iqk best_index_iq2nl on values[off:off+4]: nearest, ties to the higher index."""
    idx = 0 if x < values[off + 1] else (2 if x > values[off + 2] else 1)
    return idx if x - values[off + idx] < values[off + idx + 1] - x else idx + 1


@njit(nogil=True, cache=True)
def best_index_iq3nl(values, off, x):
    """iqk best_index_iq3nl on values[off:off+8] via the iq3nl_index table (trunc of x)."""
    ix = np.int64(np.int32(x)) - np.int64(values[off])
    if ix < 0:
        return 0
    if ix >= 111:
        return 7
    ix = IQ3NL_INDEX[ix]
    if ix < 8:
        return ix
    return ix - 8 if x - values[off + ix - 8] < values[off + ix - 7] - x else ix - 7


@njit(nogil=True, cache=True)
def nearest_int_mul(a, b):
    """ggml nearest_int(a*b) as GCC compiled it: fma(a, b, 1.5·2^23), i.e. the exact product
    rounded half to even (|a·b| < 2^22)."""
    t = fmaf(a, b, F(12582912.0))
    return np.int64(t - F(12582912.0))


@njit(nogil=True, cache=True)
def _qx_sums(x, w, nmax, iscale):
    sumlx = F(0.0)
    suml2 = F(0.0)
    for i in range(x.shape[0]):
        lf = F(max(-nmax, min(nmax - 1, nearest_int_mul(iscale, x[i]))))
        sumlx = fmaf(w[i] * x[i], lf, sumlx)
        suml2 = fmaf(w[i] * lf, lf, suml2)
    return sumlx, suml2


@njit(nogil=True, cache=True)
def make_qx_quants_iqk(x, w, nmax, L):
    """iqk_quantize.cpp make_qx_quants (IQ2_K/IQ2_KS block scales): L[i] = l + nmax, returns
    the scale. FMA placement from GCC's tree dump: nearest_int(iscale·x) = fma(iscale, x, C),
    sums fma(w·x, l, s) and fma(w·l, l, s), iscale = -fma(0.1, is, nmax)/max."""
    amax, mx = amax_signed(x, 0, x.shape[0])
    if amax == 0:
        L[:] = 0
        return F(0.0)
    iscale = F(-nmax) / mx
    for i in range(x.shape[0]):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int_mul(iscale, x[i])))
    sumlx, suml2 = _qx_sums(x, w, nmax, iscale)
    scale = sumlx / suml2 if suml2 != 0 else F(0.0)
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = -fmaf(F(is_), F(0.1), F(nmax)) / mx
        sumlx, suml2 = _qx_sums(x, w, nmax, iscale)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(x.shape[0]):
                L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int_mul(iscale, x[i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


def check_quant(x, qw, mode, qk=256):
    """Thin-wrapper checks: x (rows, n) float32 C-contiguous; qw (n,) in MODE_IMATRIX."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % qk:
        raise ValueError(f"expected (rows, n) with n a multiple of {qk}, got {x.shape}")
    if mode == MODE_IMATRIX:
        qw = np.ascontiguousarray(qw, dtype=np.float32).reshape(-1)
        if qw.shape[0] != x.shape[1]:
            raise ValueError(f"importance has {qw.shape[0]} values for rows of {x.shape[1]}")
    else:
        qw = np.zeros(1, np.float32)
    return x, qw


def check_raw(raw, n, row_bytes, qk=256):
    """Thin-wrapper checks for a dequantizer; returns (raw, empty output)."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if n % qk or raw.ndim != 2 or raw.shape[1] != row_bytes:
        raise ValueError(f"expected (rows, {row_bytes}) bytes for rows of {n}, got {raw.shape}")
    return raw, np.empty((raw.shape[0], n), np.float32)
