"""Shared numba helpers for the quantizers: fp16/bf16, nearest_int, explicit FMA, the ggml/iqk
scale searches (make_qx/qkx2/qkx3/qp_quants) and nearest-value search in a sorted table.
One import point: the primitives live in _fp.py, the k-quant searches in _common_qk.py."""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant._fp import (
    FP16_TABLE,
    F,
    bf16_to_fp32,
    fma32,
    fma64,
    fp16_round,
    fp16_to_fp32,
    fp32_to_bf16,
    fp32_to_fp16,
    get_fp16,
    nearest_int,
    nearest_int_mul,
    put_fp16,
)

# Exactness: all arithmetic is float32 unless the reference uses double, and there is no
# fast-math at all; every fused multiply-add of the reference build is written out as
# fma32/fma64 and nothing else is fused. Which a*b+c GCC 12 fused (-O3 -march=native on an AMD
# Zen host, i.e. -mtune=znver3) was read from -fdump-tree-optimized-lineno of ggml-quants.c and
# iqk_quantize.cpp: nearest_int(a*b) and most one-off a*b+c are fused; running sums in loops
# often are not (FMA-chain avoidance, vectorized in-order reductions), and the same helper can
# differ per call site once inlined (hence the fused/fuse_* flags). error_model="numpy": a
# division by zero gives inf/NaN as in C instead of raising, so degenerate blocks (all-zero
# importance) come out as the reference writes them.


@njit(nogil=True, cache=True, error_model="numpy")
def amax_signed(x, j0, n):
    """(max |x|, the signed element reaching it; first on ties) over x[j0:j0+n]."""
    amax = F(0.0)
    mx = F(0.0)
    for j in range(j0, j0 + n):
        ax = abs(x[j])
        if ax > amax:
            amax = ax
            mx = x[j]
    return amax, mx


@njit(nogil=True, cache=True, error_model="numpy")
def _qx_sums(x, w, nmax, iscale, fused):
    """Σw·x·l and Σw·l² for labels clamp(nearest_int(iscale·x)); fused: the running sums use FMA."""
    sumlx = F(0.0)
    suml2 = F(0.0)
    lo = F(-nmax)
    hi = F(nmax - 1)
    for i in range(x.shape[0]):
        # nearest_int_mul in the float domain: fma(a, b, 1.5*2^23) - 1.5*2^23 is exact
        lf = min(hi, max(lo, fma32(iscale, x[i], F(12582912.0)) - F(12582912.0)))
        if fused:
            sumlx = fma32(w[i] * x[i], lf, sumlx)
            suml2 = fma32(w[i] * lf, lf, suml2)
        else:
            sumlx = sumlx + w[i] * x[i] * lf
            suml2 = suml2 + w[i] * lf * lf
    return sumlx, suml2


@njit(nogil=True, cache=True, error_model="numpy")
def _qx_labels(L, x, nmax, iscale):
    for i in range(x.shape[0]):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int_mul(iscale, x[i])))


@njit(nogil=True, cache=True, error_model="numpy")
def make_qx_quants(x, w, nmax, L):
    """iqk_quantize.cpp make_qx_quants (used by IQ2_K/IQ2_KS scales): L[i] = l + nmax; returns scale.

    The running sums are fused in both loops (scalar loops in the reference build)."""
    amax, mx = amax_signed(x, 0, x.shape[0])
    if amax == 0:
        L[:] = 0
        return F(0.0)
    iscale = F(-nmax) / mx
    _qx_labels(L, x, nmax, iscale)
    sumlx, suml2 = _qx_sums(x, w, nmax, iscale, True)
    scale = sumlx / suml2 if suml2 != 0 else F(0.0)
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = -(F(nmax) + F(0.1) * F(is_)) / mx  # not fused in the reference build
        sumlx, suml2 = _qx_sums(x, w, nmax, iscale, True)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            _qx_labels(L, x, nmax, iscale)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(nogil=True, cache=True, error_model="numpy")
def _qx_cand_sums(sc, x, w, nmax):
    """Unfused Σw·x·l, Σw·l² of all 38 candidates of make_qx_quants_ggml at once: sc[0] gets
    the iscales (order is = -9..9, then -nmax-based before nmax-1-based), sc[1] / sc[2] the sums.
    Each candidate's sums are still added element by element in order, so the results equal
    _qx_sums(fused=False); the loop over candidates is what LLVM vectorizes."""
    iscales = sc[0]
    sx = sc[1]
    s2 = sc[2]
    _, mx = amax_signed(x, 0, x.shape[0])
    for k in range(19):
        iscales[2 * k] = -(F(nmax) + F(0.1) * F(k - 9)) / mx
        iscales[2 * k + 1] = (F(nmax - 1) + F(0.1) * F(k - 9)) / mx
    for c in range(38):
        sx[c] = F(0.0)
        s2[c] = F(0.0)
    lo = F(-nmax)
    hi = F(nmax - 1)
    for i in range(x.shape[0]):
        xi = x[i]
        wi = w[i]
        wx = wi * xi
        for c in range(38):
            lf = min(hi, max(lo, fma32(iscales[c], xi, F(12582912.0)) - F(12582912.0)))
            sx[c] = sx[c] + wx * lf
            s2[c] = s2[c] + wi * lf * lf


@njit(nogil=True, cache=True, error_model="numpy")
def make_qx_quants_ggml(x, w, nmax, L):
    """ggml-quants.c make_qx_quants, rmse_type 1 with weights w (Q6_K, Q6_0, Q4_0/Q5_0 imatrix).

    Two candidates per step and a greedy refinement; L[i] = l + nmax; returns scale.
    Reference build: first sums fused, candidate sums not (vectorized in order)."""
    return make_qx_quants_ggml_sc(x, w, nmax, L, np.empty((3, 40), np.float32))


@njit(nogil=True, cache=True, error_model="numpy")
def make_qx_quants_ggml_sc(x, w, nmax, L, sc):
    """make_qx_quants_ggml with caller-owned scratch sc (3 x >= 38 float32)."""
    n = x.shape[0]
    amax, mx = amax_signed(x, 0, x.shape[0])
    if amax < F(1e-15):
        L[:] = 0
        return F(0.0)
    iscale = F(-nmax) / mx
    sumlx, suml2 = _qx_sums(x, w, nmax, iscale, True)
    scale = sumlx / suml2 if suml2 != 0 else F(0.0)
    best = scale * sumlx
    best_sumlx = sumlx
    best_suml2 = suml2
    _qx_cand_sums(sc, x, w, nmax)
    for c in range(38):  # the reference's order; the labels are those of the last accepted
        sumlx = sc[1, c]
        suml2 = sc[2, c]
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            iscale = sc[0, c]
            scale = sumlx / suml2
            best = scale * sumlx
            best_sumlx = sumlx
            best_suml2 = suml2
    _qx_labels(L, x, nmax, iscale)
    sumlx = best_sumlx
    suml2 = best_suml2
    for _ in range(n * (2 * nmax - 1)):
        abs_gmax = F(0.0)
        gmax = F(0.0)
        best_j = -1
        for j in range(n):
            lj = np.int64(L[j]) - nmax
            g = scale * w[j] * fma32(-scale, F(lj), x[j])
            if (g > 0 and lj < nmax - 1) or (g < 0 and lj > -nmax):
                ag = abs(g)
                if ag > abs_gmax:
                    abs_gmax = ag
                    gmax = g
                    best_j = j
        if best_j < 0:
            break
        wj = w[best_j]
        lj = np.int64(L[best_j]) - nmax
        if gmax > 0:
            new_sumlx = sumlx + wj * x[best_j]
            new_suml2 = fma32(wj, F(2 * lj + 1), suml2)
            lj += 1
        else:
            new_sumlx = sumlx - wj * x[best_j]
            new_suml2 = fma32(-wj, F(2 * lj - 1), suml2)
            lj -= 1
        if new_suml2 > 0 and new_sumlx * new_sumlx > best * new_suml2:
            sumlx = new_sumlx
            suml2 = new_suml2
            scale = sumlx / suml2
            best = scale * sumlx
            L[best_j] = lj + nmax
        else:
            break
    return scale


@njit(nogil=True, cache=True, error_model="numpy")
def best_index(values, x):
    """Index of the value in sorted float32 `values` nearest to x; ties go to the higher index
    (the ggml/iqk best_index_* lookup tables compare `x - v[lo] < v[hi] - x` the same way)."""
    n = values.shape[0]
    if not x > values[0]:  # also NaN -> 0, as the C table lookup does ((int)NaN < 0)
        return 0
    if x >= values[n - 1]:
        return n - 1
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if values[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo if x - values[lo] < values[hi] - x else hi


def index_table(values: np.ndarray) -> np.ndarray:
    """For integer-valued sorted `values`: table[k] = last i with values[i] <= values[0] + k,
    k = 0 .. values[-1] - values[0]; lets best_index_lut find the bracket with one lookup."""
    v = np.asarray(values, np.float64)
    ks = np.arange(int(v[-1] - v[0]) + 1) + v[0]
    return (np.searchsorted(v, ks, side="right") - 1).astype(np.int64)


@njit(nogil=True, cache=True, error_model="numpy")
def best_index_lut(values, table, x):
    """Same result as best_index (nearest, ties to the higher index) for integer-valued values."""
    n = values.shape[0]
    if not x > values[0]:  # also NaN -> 0 (never index the table with a NaN)
        return 0
    if x >= values[n - 1]:
        return n - 1
    lo = table[np.int64(np.floor(x)) - np.int64(values[0])]
    return lo if x - values[lo] < values[lo + 1] - x else lo + 1


# The min/scale searches of the k-quants live in _common_qk.py (module size); import them from here.
from iqk_studio.quant._common_qk import (  # noqa: E402
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
)

__all__ = [
    "F", "FP16_TABLE", "best_index", "best_index_lut", "bf16_to_fp32", "fma32", "fma64",
    "fp16_round", "fp16_to_fp32", "fp32_to_bf16", "fp32_to_fp16", "get_fp16", "index_table",
    "make_qkx2_quants", "make_qkx3_quants", "make_qp_quants", "make_qx_quants",
    "make_qx_quants_ggml", "make_qx_quants_ggml_sc", "nearest_int", "nearest_int_mul", "put_fp16",
]
