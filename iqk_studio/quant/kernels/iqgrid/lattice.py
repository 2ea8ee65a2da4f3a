"""The lattice search of the iq3_xxs / iq3_s / iq2_s quantizers (ggml-quants.c
quantize_row_iq3_xxs_impl, quantize_row_iq3_s_impl, quantize_row_iq2_s_impl): block weights,
signs folded into |x|, the block-scale search and the nearest listed grid point."""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant.common import F, fma32, nearest_int
from iqk_studio.quant.kernels import MODE_IMATRIX, MODE_UNIFORM

# Fusion as GCC 12 -O3 -march=native -mtune=znver3 compiled the reference (read from
# -fdump-tree-optimized-lineno): the label argument id·x - 1, the candidate id (is·step + base),
# the Σw·x·q / Σw·q² running sums and the neighbour distance terms are fused; Σx² is not.


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _nearest4(o, xval, waux, scale, grid, neighbours, start):
    """Index of the listed 4-value grid point with the smallest Σ waux·(scale·q - x)², first on
    ties; unrolled, branch-free selection (same values and order as the reference's loop)."""
    x0, x1, x2, x3 = -xval[o], -xval[o + 1], -xval[o + 2], -xval[o + 3]
    w0, w1, w2, w3 = waux[o], waux[o + 1], waux[o + 2], waux[o + 3]
    best_d2 = F(3.4028234663852886e38)
    best = np.int64(neighbours[start + 1])  # the reference asserts when no d2 < FLT_MAX
    for j in range(1, neighbours[start] + 1):
        idx = np.int64(neighbours[start + j])
        e = fma32(scale, grid[idx, 0], x0)
        d2 = fma32(w0 * e, e, F(0.0))
        e = fma32(scale, grid[idx, 1], x1)
        d2 = fma32(w1 * e, e, d2)
        e = fma32(scale, grid[idx, 2], x2)
        d2 = fma32(w2 * e, e, d2)
        e = fma32(scale, grid[idx, 3], x3)
        d2 = fma32(w3 * e, e, d2)
        lt = d2 < best_d2
        best = idx if lt else best
        best_d2 = d2 if lt else best_d2
    return best


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _nearest8(o, xval, waux, scale, grid, neighbours, start):
    """_nearest4 for 8-value grid points."""
    best_d2 = F(3.4028234663852886e38)
    best = np.int64(neighbours[start + 1])
    for j in range(1, neighbours[start] + 1):
        idx = np.int64(neighbours[start + j])
        d2 = F(0.0)
        for i in range(8):
            e = fma32(scale, grid[idx, i], -xval[o + i])
            d2 = fma32(waux[o + i] * e, e, d2)
        lt = d2 < best_d2
        best = idx if lt else best
        best_d2 = d2 if lt else best_d2
    return best


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def best_neighbour4(L, o, xval, waux, scale, grid, neighbours, start):
    """iq3_find_best_neighbour: the listed grid point closest to xval/scale in waux-weighted
    distance (first on ties); writes its labels into L[o:o+4], returns its index."""
    best = _nearest4(o, xval, waux, scale, grid, neighbours, start)
    for i in range(4):
        L[o + i] = (np.int64(grid[best, i]) - 1) >> 1
    return best


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def best_neighbour8(L, o, xval, waux, scale, grid, neighbours, start):
    """iq2_find_best_neighbour: best_neighbour4 for groups of 8."""
    best = _nearest8(o, xval, waux, scale, grid, neighbours, start)
    for i in range(8):
        L[o + i] = (np.int64(grid[best, i]) - 1) >> 1
    return best


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def label_group(L, o, xval, idv, g, bits, kmax):
    """Labels clamp(nearest_int((id·x - 1)/2), 0, kmax-1) of one group into L; returns the code."""
    u = 0
    for i in range(g):
        lab = nearest_int(F(0.5) * fma32(idv, xval[o + i], F(-1.0)))
        lab = max(0, min(kmax - 1, lab))
        L[o + i] = lab
        u |= lab << (bits * i)
    return u


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def weighted_sums(xval, weight, L):
    """(Σ w·x·q, Σ w·q²) with q = 2L+1, both running sums fused."""
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for i in range(xval.shape[0]):
        q = F(2 * L[i] + 1)
        sumqx = fma32(q, weight[i] * xval[i], sumqx)
        sumq2 = fma32(q, weight[i] * q, sumq2)
    return sumqx, sumq2


@njit(nogil=True, cache=True, error_model="numpy")
def search_block(L, og, xval, weight, waux, Laux, oga, tabs, par, vmax):
    """Best block scale for |x| (xval) on the grid; L / og (on-grid flags) hold the result.

    tabs = (grid, kmap, neighbours). par = (group, bits, kmax, nsteps, step, og_reset,
    relabel_all): candidates id = (2·kmax-1 + is·step)/vmax for |is| <= nsteps; og_reset 0/1
    resets og before the search, -1 keeps the previous block's state (IQ3_XXS: the reference
    never resets it); relabel_all: the refinement relabels on-grid groups too (IQ3_S).
    If no candidate is accepted (every Σw·x·q or Σw·q² is 0, e.g. an importance that is zero over
    the whole block), L / og keep what the previous block left, as the reference's reused arrays
    do (IQ3_XXS, IQ2_S; IQ3_S resets and relabels everything)."""
    grid, kmap, nbr = tabs
    g, bits, kmax, nsteps, step, og_reset, relabel_all = par
    ng = xval.shape[0] // g
    best = F(0.0)
    scale = vmax / F(2 * kmax - 1)
    if og_reset >= 0:
        og[:] = og_reset == 1
    for s in range(-nsteps, nsteps + 1):
        idv = fma32(F(s), step, F(2 * kmax - 1)) / vmax
        this_scale = F(1.0) / idv
        for k in range(ng):
            u = label_group(Laux, g * k, xval, idv, g, bits, kmax)
            oga[k] = kmap[u] >= 0
            if not oga[k]:
                if g == 4:
                    best_neighbour4(Laux, g * k, xval, waux, this_scale, grid, nbr, -kmap[u] - 1)
                else:
                    best_neighbour8(Laux, g * k, xval, waux, this_scale, grid, nbr, -kmap[u] - 1)
        sumqx, sumq2 = weighted_sums(xval, weight, Laux)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = Laux
            og[:] = oga
    n_off = 0
    for k in range(ng):
        n_off += not og[k]
    if n_off > 0 and scale > 0:
        idv = F(1.0) / scale
        for k in range(ng):
            if og[k] and not relabel_all:
                continue
            u = label_group(L, g * k, xval, idv, g, bits, kmax)
            if kmap[u] < 0:
                if g == 4:
                    best_neighbour4(L, g * k, xval, waux, scale, grid, nbr, -kmap[u] - 1)
                else:
                    best_neighbour8(L, g * k, xval, waux, scale, grid, nbr, -kmap[u] - 1)
        sumqx, sumq2 = weighted_sums(xval, weight, L)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale


@njit(nogil=True, cache=True, error_model="numpy")
def group_code(L, o, g, bits):
    u = 0
    for i in range(g):
        u |= np.int64(L[o + i]) << (bits * i)
    return u


@njit(nogil=True, cache=True, error_model="numpy")
def block_weights(weight, waux, x, j0, qw, sigma2, mode, add_sigma):
    """weight = qw·sqrt(σ² + x²) (imatrix, fused), x² (IQ3), σ²/4 + x² (IQ2_S, not fused) or 1
    (uniform); waux = sqrt(weight)."""
    for i in range(weight.shape[0]):
        xi = x[j0 + i]
        if mode == MODE_IMATRIX:
            weight[i] = qw[j0 + i] * np.sqrt(fma32(xi, xi, sigma2))
        elif mode == MODE_UNIFORM:
            weight[i] = F(1.0)
        elif add_sigma:
            weight[i] = F(0.25) * sigma2 + xi * xi
        else:
            weight[i] = xi * xi
        waux[i] = np.sqrt(weight[i])


@njit(nogil=True, cache=True, error_model="numpy")
def block_sigma2(x, j0):
    """2·Σx²/256 over the 256-block at j0 (sequential float32 sum, not fused)."""
    s = F(0.0)
    for i in range(256):
        s += x[j0 + i] * x[j0 + i]
    return s * F(2.0) / F(256.0)


QK = 256


EPS = F(1e-8)  # GROUP_MAX_EPS_IQ3_XXS, GROUP_MAX_EPS_IQ2_S


@njit(nogil=True, cache=True, error_model="numpy")
def abs_signs(xval, s, x, j0, n):
    """xval = |x| over n values, s[k] = sign bits of the 8-group k (bit i set: x < 0)."""
    for k in range(n // 8):
        b = 0
        for i in range(8):
            v = x[j0 + 8 * k + i]
            if v >= 0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                b |= 1 << i
        s[k] = b


@njit(nogil=True, cache=True, error_model="numpy")
def even_signs(xval, s, x, j0, weight):
    """IQ3_XXS: an 8-group with an odd number of negatives keeps the least important one
    (smallest w·x², first on ties) positive-signed by negating its xval; 7 sign bits stored."""
    for k in range(4):
        b = s[k]
        nflip = 0
        for i in range(8):
            nflip += (b >> i) & 1
        if nflip % 2:
            imin = 0
            vmin = weight[8 * k] * x[j0 + 8 * k] * x[j0 + 8 * k]
            for i in range(1, 8):
                a = weight[8 * k + i] * x[j0 + 8 * k + i] * x[j0 + 8 * k + i]
                if a < vmin:
                    vmin = a
                    imin = i
            xval[8 * k + imin] = -xval[8 * k + imin]
            b ^= 1 << imin
        s[k] = b & 127


@njit(nogil=True, cache=True, error_model="numpy")
def group_max(xval):
    m = xval[0]
    for i in range(1, xval.shape[0]):
        if not m > xval[i]:
            m = xval[i]
    return m


@njit(nogil=True, cache=True, error_model="numpy")
def scale_nibble(idv, s):
    return max(0, min(15, nearest_int(F(0.5) * fma32(idv, s, F(-1.0)))))
