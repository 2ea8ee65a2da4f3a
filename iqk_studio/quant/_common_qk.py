"""The k-quant min/scale searches of ggml-quants.c: make_qkx2_quants, make_qkx3_quants,
make_qp_quants, with the reference build's FMA pattern written out. Import them from
iqk_studio.quant.common (this module is loaded from there).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant._fp import F, fma32, fma64, nearest_int, nearest_int_mul


@njit(nogil=True, cache=True, error_model="numpy")
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


@njit(nogil=True, cache=True, error_model="numpy")
def _qkx3_score(s, m, sum_xl, sum_x, sum_l, sum_l2, sum_w):
    """2s·Σxl + 2m·Σx − 2sm·Σl − s²·Σl² − m²·Σw, fused as GCC did."""
    t = fma64(2 * s, sum_xl, 2 * m * sum_x)
    t = fma64(-(2 * s * m), sum_l, t)
    t = fma64(-(s * s), sum_l2, t)
    return fma64(-(m * m), sum_w, t)


@njit(nogil=True, cache=True, error_model="numpy")
def _qkx3_solve(sum_w, sum_x, sum_l, sum_l2, sum_xl, D):
    this_scale = fma64(-sum_l, sum_x, sum_xl * sum_w) / D  # the 2nd product is the fused one
    this_min = fma64(sum_l2, sum_x, -(sum_l * sum_xl)) / D
    if this_min > 0:
        this_min = 0.0
        this_scale = sum_xl / sum_l2
    return this_scale, this_min


@njit(nogil=True, cache=True, error_model="numpy")
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


@njit(nogil=True, cache=True, error_model="numpy")
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
