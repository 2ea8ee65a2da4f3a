"""Shared numba helpers for the quantizers: fp16/bf16 conversion, nearest_int, the ggml/iqk
scale searches (make_qx/qkx2/qkx3/qp_quants) and nearest-value search in a sorted table.

All arithmetic is float32 unless the reference uses double. No fast-math at all: every fused
multiply-add of the reference build is written out as fma32/fma64, and nothing else is fused.
Which a*b+c GCC 12 fused (-O3 -march=native on AMD Zen, i.e. -mtune=znver3) was read from its
-fdump-tree-optimized-lineno output: nearest_int(a*b) and most one-off a*b+c are fused; running
sums inside loops are often not (FMA-chain avoidance, vectorized in-order reductions).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F = np.float32
FM = False  # fastmath for kernels: off; fusion is explicit (fma32/fma64)


@intrinsic
def fma32(typingctx, a, b, c):
    """float32 a*b + c with one rounding (llvm.fma.f32)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        t = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t] * 3))
        return builder.call(fn, args)
    return sig, codegen


@intrinsic
def fma64(typingctx, a, b, c):
    """float64 a*b + c with one rounding (llvm.fma.f64)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        t = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t] * 3))
        return builder.call(fn, args)
    return sig, codegen

# f(h) for every half bit pattern (exact, so a table is as good as F16C)
FP16_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(nogil=True, cache=True)
def fp32_to_fp16(f):
    """IEEE half bits (int) of float32 f, round to nearest even (F16C _cvtss_sh(x, 0))."""
    u = np.int64(np.float32(f).view(np.uint32))
    sign = (u >> 16) & 0x8000
    ex = (u >> 23) & 0xFF
    mant = u & 0x7FFFFF
    if ex == 255:
        return sign | 0x7C00 | (0x200 if mant else 0)
    e = ex - 112
    if e >= 31:
        return sign | 0x7C00
    if e <= 0:  # half subnormal (or zero): units of 2^-24
        s = 14 - e
        if s > 25:
            return sign
        m = mant | 0x800000
        q = m >> s
        rem = m & ((1 << s) - 1)
        half = 1 << (s - 1)
        if rem > half or (rem == half and (q & 1)):
            q += 1
        return sign | q
    h = (e << 10) | (mant >> 13)
    rem = mant & 0x1FFF
    if rem > 0x1000 or (rem == 0x1000 and (h & 1)):
        h += 1
    return sign | h


@njit(nogil=True, cache=True)
def fp16_to_fp32(h):
    return FP16_TABLE[h & 0xFFFF]


@njit(nogil=True, cache=True)
def fp16_round(f):
    """float32 value of fp16(f): what a stored half scale reads back as."""
    return FP16_TABLE[fp32_to_fp16(f)]


@njit(nogil=True, cache=True)
def fp32_to_bf16(f):
    """bf16 bits of f as ggml_compute_fp32_to_bf16: NaN quieted, else round to nearest even."""
    u = np.int64(np.float32(f).view(np.uint32))
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 64
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


@njit(nogil=True, cache=True)
def bf16_to_fp32(h):
    return np.uint32((np.int64(h) & 0xFFFF) << 16).view(np.float32)


@njit(nogil=True, cache=True)
def nearest_int(v):
    """ggml nearest_int: add 1.5*2^23 in float32 and read the mantissa (round half to even)."""
    t = np.float32(np.float32(v) + F(12582912.0))
    return np.int64(t.view(np.int32) & 0x007FFFFF) - 0x00400000


@njit(nogil=True, cache=True)
def nearest_int_mul(a, b):
    """nearest_int(a*b) as GCC compiles it: fma(a, b, 1.5*2^23), i.e. the exact product rounded."""
    t = np.float32(fma32(np.float32(a), np.float32(b), F(12582912.0)))
    return np.int64(t.view(np.int32) & 0x007FFFFF) - 0x00400000


@njit(nogil=True, cache=True)
def put_fp16(out, pos, f):
    """Store fp16(f) little-endian at out[pos:pos+2]."""
    h = fp32_to_fp16(f)
    out[pos] = h & 0xFF
    out[pos + 1] = h >> 8


@njit(nogil=True, cache=True)
def get_fp16(raw, pos):
    return FP16_TABLE[np.int64(raw[pos]) | (np.int64(raw[pos + 1]) << 8)]


@njit(nogil=True, cache=True)
def _amax_signed(x):
    """(max |x|, the signed element reaching it, first on ties)."""
    amax = F(0.0)
    mx = F(0.0)
    for i in range(x.shape[0]):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    return amax, mx


@njit(nogil=True, cache=True)
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


@njit(nogil=True, cache=True)
def _qx_labels(L, x, nmax, iscale):
    for i in range(x.shape[0]):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int_mul(iscale, x[i])))


@njit(nogil=True, cache=True)
def make_qx_quants(x, w, nmax, L):
    """iqk_quantize.cpp make_qx_quants (used by IQ2_K/IQ2_KS scales): L[i] = l + nmax; returns scale.

    The running sums are fused in both loops (scalar loops in the reference build)."""
    amax, mx = _amax_signed(x)
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


@njit(nogil=True, cache=True)
def make_qx_quants_ggml(x, w, nmax, L):
    """ggml-quants.c make_qx_quants, rmse_type 1 with weights w (Q6_K, Q6_0, Q4_0/Q5_0 imatrix).

    Two candidates per step and a greedy refinement; L[i] = l + nmax; returns scale.
    Reference build: first sums fused, candidate sums not (vectorized in order)."""
    n = x.shape[0]
    amax, mx = _amax_signed(x)
    if amax < F(1e-15):
        L[:] = 0
        return F(0.0)
    iscale = F(-nmax) / mx
    _qx_labels(L, x, nmax, iscale)
    sumlx, suml2 = _qx_sums(x, w, nmax, iscale, True)
    scale = sumlx / suml2 if suml2 != 0 else F(0.0)
    best = scale * sumlx
    best_sumlx = sumlx
    best_suml2 = suml2
    for is_ in range(-9, 10):
        for cand in range(2):
            if cand == 0:
                iscale = -(F(nmax) + F(0.1) * F(is_)) / mx
            else:
                iscale = (F(nmax - 1) + F(0.1) * F(is_)) / mx
            sumlx, suml2 = _qx_sums(x, w, nmax, iscale, False)
            if suml2 > 0 and sumlx * sumlx > best * suml2:
                _qx_labels(L, x, nmax, iscale)
                scale = sumlx / suml2
                best = scale * sumlx
                best_sumlx = sumlx
                best_suml2 = suml2
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


@njit(nogil=True, cache=True)
def make_qkx2_quants(x, w, nmax, L, Laux, rmin, rdelta, nstep, use_mad=False, fuse_sum_x=False):
    """ggml-quants.c make_qkx2_quants: returns (scale, the_min >= 0); L in 0..nmax.
    use_mad: weighted |error| instead of squared (Q2_K); fuse_sum_x: Σw·x fused (Q2_K's copy)."""
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        mn = min(mn, x[i])
        mx = max(mx, x[i])
        sum_w += w[i]
        if fuse_sum_x:
            sum_x = fma32(w[i], x[i], sum_x)
        else:
            sum_x = sum_x + w[i] * x[i]
    if mn > 0:
        mn = F(0.0)
    if mx - mn < F(1e-10):
        L[:] = 0
        return F(0.0), -mn
    iscale = F(nmax) / (mx - mn)
    scale = F(1.0) / iscale
    best_mad = F(0.0)
    for i in range(n):
        li = max(0, min(nmax, nearest_int_mul(iscale, x[i] - mn)))
        L[i] = li
        diff = fma32(scale, F(li), mn) - x[i]
        best_mad = fma32(w[i], abs(diff) if use_mad else diff * diff, best_mad)
    if nstep < 1:
        return scale, -mn
    for is_ in range(nstep + 1):
        iscale = (fma32(rdelta, F(is_), rmin) + F(nmax)) / (mx - mn)
        sum_l = F(0.0)
        sum_l2 = F(0.0)
        sum_xl = F(0.0)
        for i in range(n):
            li = max(0, min(nmax, nearest_int_mul(iscale, x[i] - mn)))
            Laux[i] = li
            wl = w[i] * F(li)
            sum_l = sum_l + wl
            sum_l2 = fma32(wl, F(li), sum_l2)
            sum_xl = fma32(wl, x[i], sum_xl)
        D = fma32(sum_w, sum_l2, -(sum_l * sum_l))
        if D > 0:
            this_scale = fma32(-sum_l, sum_x, sum_xl * sum_w) / D  # GCC fused the 2nd product here
            this_min = fma32(sum_l2, sum_x, -(sum_l * sum_xl)) / D
            if this_min > 0:
                this_min = F(0.0)
                this_scale = sum_xl / sum_l2
            mad = F(0.0)
            for i in range(n):
                diff = fma32(this_scale, F(Laux[i]), this_min) - x[i]
                mad = fma32(w[i], abs(diff) if use_mad else diff * diff, mad)
            if mad < best_mad:
                L[:n] = Laux[:n]
                best_mad = mad
                scale = this_scale
                mn = this_min
    return scale, -mn


@njit(nogil=True, cache=True)
def _qkx3_score(s, m, sum_xl, sum_x, sum_l, sum_l2, sum_w):
    """2s·Σxl + 2m·Σx − 2sm·Σl − s²·Σl² − m²·Σw, fused as GCC did."""
    t = fma64(2 * s, sum_xl, 2 * m * sum_x)
    t = fma64(-(2 * s * m), sum_l, t)
    t = fma64(-(s * s), sum_l2, t)
    return fma64(-(m * m), sum_w, t)


@njit(nogil=True, cache=True)
def _qkx3_solve(sum_w, sum_x, sum_l, sum_l2, sum_xl, D):
    this_scale = fma64(-sum_l, sum_x, sum_xl * sum_w) / D  # the 2nd product is the fused one
    this_min = fma64(sum_l2, sum_x, -(sum_l * sum_xl)) / D
    if this_min > 0:
        this_min = 0.0
        this_scale = sum_xl / sum_l2
    return this_scale, this_min


@njit(nogil=True, cache=True)
def make_qkx3_quants(x, w, nmax, L, Laux, rmin, rdelta, nstep, fuse_sum_x2=False):
    """ggml-quants.c make_qkx3_quants (use_mad false; sums in float64) with weights w.

    Returns (scale, the_min >= 0); L in 0..nmax. fuse_sum_x2: Σw·x² fused (Q2_K's copy)."""
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = np.float64(w[0])
    sum_x = sum_w * np.float64(x[0])
    sum_x2 = sum_w * np.float64(x[0]) * np.float64(x[0])
    for i in range(1, n):
        mn = min(mn, x[i])
        mx = max(mx, x[i])
        wd = np.float64(w[i])
        xd = np.float64(x[i])
        sum_w += wd
        sum_x = sum_x + wd * xd
        if fuse_sum_x2:
            sum_x2 = fma64(wd * xd, xd, sum_x2)
        else:
            sum_x2 = sum_x2 + wd * xd * xd
    if mn > 0:
        mn = F(0.0)
    if mx - mn < F(1e-10):
        L[:] = 0
        return F(0.0), -mn
    iscale = F(nmax) / (mx - mn)
    scale = F(1.0) / iscale
    best_mad = 0.0
    for i in range(n):
        li = max(0, min(nmax, nearest_int_mul(iscale, x[i] - mn)))
        L[i] = li
        diff = fma64(np.float64(scale), np.float64(li), np.float64(mn)) - np.float64(x[i])
        best_mad = fma64(np.float64(w[i]), diff * diff, best_mad)
    for is_ in range(nstep + 1):
        iscale = (fma32(rdelta, F(is_), rmin) + F(nmax)) / (mx - mn)
        sum_l = 0.0
        sum_l2 = 0.0
        sum_xl = 0.0
        for i in range(n):
            li = max(0, min(nmax, nearest_int_mul(iscale, x[i] - mn)))
            Laux[i] = li
            ld = np.float64(li)
            wl = np.float64(w[i]) * ld
            sum_l = sum_l + wl
            sum_l2 = fma64(wl, ld, sum_l2)
            sum_xl = fma64(wl, np.float64(x[i]), sum_xl)
        D = fma64(sum_w, sum_l2, -(sum_l * sum_l))
        if D > 0:
            ts, tm = _qkx3_solve(sum_w, sum_x, sum_l, sum_l2, sum_xl, D)
            mad = fma64(-(2 * ts), sum_xl, sum_x2)
            mad = fma64(-(2 * tm), sum_x, mad)
            mad = fma64(2 * ts * tm, sum_l, mad)
            mad = fma64(ts * ts, sum_l2, mad)
            mad = fma64(tm * tm, sum_w, mad)
            if mad < best_mad:
                L[:n] = Laux[:n]
                best_mad = mad
                scale = F(ts)
                mn = F(tm)
    sum_l = 0.0
    sum_l2 = 0.0
    sum_xl = 0.0
    for i in range(n):
        ld = np.float64(L[i])
        wl = np.float64(w[i]) * ld
        sum_l = sum_l + wl
        sum_l2 = fma64(wl, ld, sum_l2)
        sum_xl = fma64(wl, np.float64(x[i]), sum_xl)
    best = _qkx3_score(np.float64(scale), np.float64(mn), sum_xl, sum_x, sum_l, sum_l2, sum_w)
    last_j = -1
    last_dir = 0
    for _ in range(nmax * n):
        gmax = F(0.0)
        best_j = -1
        dr = 0
        for j in range(n):
            g = fma32(-scale, F(L[j]), x[j]) - mn
            if g > 0 and L[j] < nmax and g > gmax:
                gmax = g
                best_j = j
                dr = 1
            elif g < 0 and L[j] > 0 and -g > gmax:
                gmax = -g
                best_j = j
                dr = -1
        if best_j < 0 or (best_j == last_j and dr == -last_dir):
            break
        wd = np.float64(w[best_j])
        sum_l = fma64(wd, np.float64(dr), sum_l)
        sum_l2 = fma64(wd, np.float64(2 * np.int64(L[best_j]) * dr + 1), sum_l2)
        sum_xl = fma64(wd * np.float64(x[best_j]), np.float64(dr), sum_xl)
        D = fma64(sum_w, sum_l2, -(sum_l * sum_l))
        if D <= 0:
            break
        ts, tm = _qkx3_solve(sum_w, sum_x, sum_l, sum_l2, sum_xl, D)
        if ts < 0:
            break
        score = _qkx3_score(ts, tm, sum_xl, sum_x, sum_l, sum_l2, sum_w)
        if score <= best:
            break
        best = score
        scale = F(ts)
        mn = F(tm)
        L[best_j] += dr
        last_j = best_j
        last_dir = dr
    return scale, -mn


@njit(nogil=True, cache=True)
def make_qp_quants(x, w, nmax, L):
    """ggml-quants.c make_qp_quants: positive scales/mins to 0..nmax (Q2_K/Q4_K/Q5_K imatrix).
    n = 8 in the reference is fully unrolled, so every running sum is fused."""
    n = x.shape[0]
    mx = F(0.0)
    for i in range(n):
        mx = max(mx, x[i])
    if mx < F(1e-16):
        L[:] = 0
        return F(0.0)
    iscale = F(nmax) / mx
    for i in range(n):
        L[i] = nearest_int_mul(iscale, x[i])
    scale = F(1.0) / iscale
    best_mse = F(0.0)
    for i in range(n):
        diff = fma32(-scale, F(L[i]), x[i])
        best_mse = fma32(w[i] * diff, diff, best_mse)
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = fma32(F(0.1), F(is_), F(nmax)) / mx
        scale_is = F(1.0) / iscale_is
        mse = F(0.0)
        for i in range(n):
            li = min(nmax, nearest_int_mul(iscale_is, x[i]))
            diff = fma32(-scale_is, F(li), x[i])
            mse = fma32(w[i] * diff, diff, mse)
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F(0.0)
    suml2 = F(0.0)
    for i in range(n):
        li = min(nmax, nearest_int_mul(iscale, x[i]))
        L[i] = li
        sumlx = fma32(w[i] * x[i], F(li), sumlx)
        suml2 = fma32(w[i] * F(li), F(li), suml2)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            wi = w[i]
            li = F(L[i])
            slx = fma32(-(wi * x[i]), li, sumlx)
            sl2 = fma32(-(wi * li), li, suml2)
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    slx = fma32(wi * x[i], F(new_l), slx)
                    sl2 = fma32(wi * F(new_l), F(new_l), sl2)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2


@njit(nogil=True, cache=True)
def best_index(values, x):
    """Index of the value in sorted float32 `values` nearest to x; ties go to the higher index
    (the ggml/iqk best_index_* lookup tables compare `x - v[lo] < v[hi] - x` the same way)."""
    n = values.shape[0]
    if x <= values[0]:
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


@njit(nogil=True, cache=True)
def best_index_lut(values, table, x):
    """Same result as best_index (nearest, ties to the higher index) for integer-valued values."""
    n = values.shape[0]
    if x <= values[0]:
        return 0
    if x >= values[n - 1]:
        return n - 1
    lo = table[np.int64(np.floor(x)) - np.int64(values[0])]
    return lo if x - values[lo] < values[lo + 1] - x else lo + 1
