"""Quantizers for the imatrix-only grid types IQ2_XXS, IQ2_XS (here) and IQ1_S, IQ1_M
(_grid2_iq1): bit-exact ports of ik_llama.cpp 8337e4cd3 ggml-quants.c quantize_row_*_impl, with
the a·b+c that GCC 12 (-O3 -march=znver3) fuses written as fma32. Like llama-quantize, they
refuse to run without an importance matrix; MODE_UNIFORM runs the imatrix path with w = 1.
Where the C reads uninitialised memory (IQ2_XS levels before a call's first block with weight,
IQ1_M shift bits before its first block above 1e-7) we start from 0; the reference usually aborts.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, nearest_int, put_fp16
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_UNIFORM
from iqk_studio.quant.kernels._grid2_common import (
    NO_NEIGHBOUR,
    OFF_GRID,
    ZERO_BLOCK,
    argsort_stable,
    grid_lookup,
    iq2_best_neighbour,
    level_key,
    make_qp_quants_nf,
    search_tables,
)
from iqk_studio.quant.kernels._grid2_iq1 import iq1_m_rows, iq1_s_rows

F = np.float32
_EPS = F(1e-15)  # GROUP_MAX_EPS


@njit(nogil=True, cache=True, error_model="numpy")
def _weights_signs(w, waux, xval, signs, xb, qw, sigma2):
    """w = qw·sqrt(σ² + x²) (fused), waux = sqrt(w); xval = |x| with an even number of sign
    flips per 8-group: on odd parity the smallest w·x·x keeps its sign (7 stored sign bits)."""
    n = xb.shape[0]
    for i in range(n):
        w[i] = qw[i] * np.sqrt(fma32(xb[i], xb[i], sigma2))
        waux[i] = np.sqrt(w[i])
    for k in range(n // 8):
        s = 0
        nflip = 0
        for i in range(8):
            v = xb[8 * k + i]
            if v >= 0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                nflip += 1
                s |= 1 << i
        if nflip % 2:
            imin = 0
            mn = w[8 * k] * xb[8 * k] * xb[8 * k]
            for i in range(1, 8):
                ax = w[8 * k + i] * xb[8 * k + i] * xb[8 * k + i]
                if ax < mn:
                    mn = ax
                    imin = i
            xval[8 * k + imin] = -xval[8 * k + imin]
            s ^= 1 << imin
        signs[k] = s & 127


@njit(nogil=True, cache=True, error_model="numpy")
def _levels(L, o, xval, waux, id_, scale, codes, kmap, nb_off, nb_idx):
    """Levels nearest_int(0.5·(id·x - 1)) clamped to 0..2 for the 8-group at o; off the grid,
    the best neighbour at `scale`. Returns the grid index (-1: no neighbour)."""
    for i in range(8):
        li = nearest_int(F(0.5) * fma32(id_, xval[o + i], F(-1.0)))
        L[o + i] = max(0, min(2, li))
    u = level_key(L, o)
    gi = kmap[u]
    if gi < 0:
        gi = iq2_best_neighbour(L, o, codes, nb_off, nb_idx, u, xval, waux, scale)
    return gi


@njit(nogil=True, cache=True, error_model="numpy")
def _sums(L, w, xval, n):
    """sum w·x·q and sum w·q·q for q = 2L+1 (both running sums fused)."""
    sqx = F(0.0)
    sq2 = F(0.0)
    for i in range(n):
        q = F(2 * L[i] + 1)
        sqx = fma32(w[i] * xval[i], q, sqx)
        sq2 = fma32(w[i] * q, q, sq2)
    return sqx, sq2


# ---------------------------------------------------------------- IQ2_XXS (256, 66 B)
# d:f16 | qs:u32[16]: per 32-block ib, qs[2ib] = 4 grid bytes, qs[2ib+1] = 4 × 7-bit signs
# | 4-bit scale << 28; y = d·(0.5 + scale)·0.25 · grid · sign

@njit(nogil=True, cache=True, error_model="numpy")
def _iq2_xxs_block(q2, xb, qw, sigma2, codes, kmap, nb_off, nb_idx, w, waux, xval, L, Laux, sg):
    """One 32-block: fills q2[0:2] (grid bytes, signs), returns (scale, status)."""
    _weights_signs(w, waux, xval, sg, xb, qw, sigma2)
    mx = xval[0]
    for i in range(1, 32):
        mx = max(mx, xval[i])
    if mx < _EPS:
        return F(0.0), 0
    scale = make_qp_quants_nf(xval, w, 4, L.view(np.uint8))  # (uint8_t*)L in the C
    eff_max = scale * F(3.0)
    best = F(0.0)
    for is_ in range(-6, 7):
        id_ = fma32(F(is_), F(0.1), F(5.0)) / eff_max
        this_scale = F(1.0) / id_
        for k in range(4):
            if _levels(Laux, 8 * k, xval, waux, id_, this_scale, codes, kmap, nb_off, nb_idx) < 0:
                return scale, NO_NEIGHBOUR
        sqx, sq2 = _sums(Laux, w, xval, 32)
        if sq2 > 0 and sqx * sqx > best * sq2:
            scale = sqx / sq2
            best = scale * sqx
            L[:] = Laux
    if scale > 0:
        id_ = F(1.0) / scale
        for k in range(4):
            if _levels(L, 8 * k, xval, waux, id_, scale, codes, kmap, nb_off, nb_idx) < 0:
                return scale, NO_NEIGHBOUR
        sqx, sq2 = _sums(L, w, xval, 32)
        if sq2 > 0:
            scale = sqx / sq2
    if scale < 0:
        scale = -scale
        for k in range(4):
            sg[k] = (~sg[k]) & 127
    for k in range(4):
        gi = grid_lookup(kmap, L, 8 * k)
        if gi < 0 or not scale >= 0:  # NaN: GGML_ASSERT(scale >= 0) after the lookups
            return scale, OFF_GRID
        q2[0] |= np.uint32(gi) << np.uint32(8 * k)
        q2[1] |= np.uint32(sg[k]) << np.uint32(7 * k)
    return scale, 0


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq2_xxs_rows(out, x, qw, codes, kmap, nb_off, nb_idx, status):
    nbl = x.shape[1] // 256
    for r in prange(x.shape[0]):
        w = np.empty(32, F)
        waux = np.empty(32, F)
        xval = np.empty(32, F)
        L = np.zeros(32, np.int8)
        Laux = np.zeros(32, np.int8)
        sg = np.zeros(4, np.int64)
        q2 = np.zeros(16, np.uint32)
        scales = np.zeros(8, F)
        for ibl in range(nbl):
            xbl = x[r, 256 * ibl:256 * ibl + 256]
            q2[:] = 0
            sumx2 = F(0.0)
            for i in range(256):
                sumx2 += xbl[i] * xbl[i]
            sigma2 = sumx2 / F(256.0)
            max_scale = F(0.0)
            for ib in range(8):
                sc, st = _iq2_xxs_block(q2[2 * ib:2 * ib + 2], xbl[32 * ib:32 * ib + 32],
                                        qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32], sigma2,
                                        codes, kmap, nb_off, nb_idx, w, waux, xval, L, Laux, sg)
                if st:
                    status[r] = st
                scales[ib] = sc
                max_scale = max_scale if max_scale > sc else sc
            o = 66 * ibl
            out[r, o:o + 66] = 0
            if max_scale == 0:
                continue
            d = max_scale / F(31.0)
            put_fp16(out[r], o, d)
            id_ = F(1.0) / d
            for ib in range(8):
                li = nearest_int(F(0.5) * fma32(id_, scales[ib], F(-1.0)))
                q2[2 * ib + 1] |= np.uint32(max(0, min(15, li))) << np.uint32(28)
            out[r, o + 2:o + 66] = q2.view(np.uint8)


# ---------------------------------------------------------------- IQ2_XS (256, 74 B)
# d:f16 | qs:u16[32] (9-bit grid index | 7-bit signs << 9) | scales:u8[8] (4 bits per 16-block)
# y = d·(0.5 + scale)·0.25 · grid · sign

@njit(nogil=True, cache=True, error_model="numpy")
def _best_split(xval, w, idx, sumx, sumw):
    """Exhaustive 3-level split of the sorted 16 values (q = 1, 3, 5): the best scale, 0 if none."""
    argsort_stable(idx, xval, 16)
    sumx[0] = F(0.0)
    sumw[0] = F(0.0)
    for j in range(16):
        i = idx[j]
        sumx[j + 1] = fma32(w[i], xval[i], sumx[j])
        sumw[j + 1] = sumw[j] + w[i]
    best = F(0.0)
    scale = F(0.0)
    for i1 in range(17):
        for i2 in range(i1, 17):
            sqx = fma32(sumx[16] - sumx[i2], F(5.0),
                        fma32(sumx[i2] - sumx[i1], F(3.0), sumx[i1] - sumx[0]))
            sq2 = fma32(sumw[16] - sumw[i2], F(25.0),
                        fma32(sumw[i2] - sumw[i1], F(9.0), sumw[i1] - sumw[0]))
            if sq2 > 0 and sqx * sqx > best * sq2:
                scale = sqx / sq2
                best = scale * sqx
    return scale


@njit(nogil=True, cache=True, error_model="numpy")
def _iq2_xs_block(q2, xb, qw, sigma2, tabs, w, waux, xval, L, Laux, sg, idx, sumx, sumw):
    """One 16-block: fills q2[0:2], returns (scale, status, whether L was set). L carries over as
    in the C: a block whose search never accepts a scale (all w = 0) keeps the previous levels."""
    codes, kmap, nb_off, nb_idx = tabs
    _weights_signs(w, waux, xval, sg, xb, qw, sigma2)
    mx = xval[0]
    for i in range(1, 16):
        mx = max(mx, xval[i])
    if mx < _EPS:
        L[:] = 0
        return F(0.0), 0, True
    scale = _best_split(xval, w, idx, sumx, sumw)
    fresh = False
    best = F(0.0)
    eff_max = scale * F(5.0)
    index = np.zeros(2, np.int64)
    aux = np.zeros(2, np.int64)
    for is_ in range(-7, 8):
        id_ = fma32(F(is_), F(0.1), F(5.0)) / eff_max
        this_scale = F(1.0) / id_
        for k in range(2):
            aux[k] = _levels(Laux, 8 * k, xval, waux, id_, this_scale, codes, kmap, nb_off, nb_idx)
            if aux[k] < 0:
                return scale, NO_NEIGHBOUR, fresh
        sqx, sq2 = _sums(Laux, w, xval, 16)
        if sq2 > 0 and sqx * sqx > best * sq2:
            scale = sqx / sq2
            best = scale * sqx
            L[:] = Laux
            index[:] = aux
            fresh = True
    if scale != 0:
        for _ in range(3):
            id_ = F(1.0) / scale
            changed = False
            for k in range(2):
                aux[k] = _levels(Laux, 8 * k, xval, waux, id_, scale, codes, kmap, nb_off, nb_idx)
                if aux[k] < 0:
                    return scale, NO_NEIGHBOUR, fresh
                changed = changed or aux[k] != index[k]
            if not changed:
                break
            sqx, sq2 = _sums(Laux, w, xval, 16)
            if sq2 > 0 and sqx * sqx > best * sq2:
                scale = sqx / sq2
                best = scale * sqx
                L[:] = Laux
                index[:] = aux
            else:
                break
    if scale < 0:
        scale = -scale
        for k in range(2):
            sg[k] = (~sg[k]) & 127
    for k in range(2):
        gi = grid_lookup(kmap, L, 8 * k)
        if gi < 0:
            return scale, OFF_GRID, fresh
        q2[k] = np.uint16(gi | (sg[k] << 9))
    return scale, 0, fresh


@njit(nogil=True, cache=True, error_model="numpy")
def _iq2_xs_d(y, q2, scales, xbl, qwb, sigma2, max_scale, codes, ksigns, w):
    """4-bit block scales into y[66:74], then d = 1.05·Σw·q·x / Σw·q² over the chosen grid points
    (d = max_scale/31 when that has no weight)."""
    d = max_scale / F(31.0)
    id_ = F(1.0) / d
    sqx = F(0.0)
    sq2 = F(0.0)
    for ib in range(16):
        li = max(0, min(15, nearest_int(F(0.5) * fma32(scales[ib], id_, F(-1.0)))))
        y[66 + ib // 2] |= li << (4 * (ib % 2))
        lf = F(2 * li + 1)
        for i in range(16):
            xi = xbl[16 * ib + i]
            w[i] = qwb[16 * ib + i] * np.sqrt(fma32(xi, xi, sigma2))
        for k in range(2):
            gi = q2[2 * ib + k] & 511
            sgn = ksigns[q2[2 * ib + k] >> 9]
            for j in range(8):
                gv = F((8, 25, 43)[(codes[gi, j] - 1) // 2])
                q = F(0.125) * lf * gv
                if (sgn >> j) & 1:
                    q = -q
                wq = w[8 * k + j] * q
                sqx = fma32(wq, xbl[16 * ib + 8 * k + j], sqx)
                sq2 = fma32(wq, q, sq2)
    if sq2 > 0:
        d = F(1.05) * sqx / sq2
    put_fp16(y, 0, d)


@njit(nogil=True, cache=True, error_model="numpy")
def _iq2_xs_row(yr, xr, qw, tabs, ksigns, L):
    """One row into yr, starting from the levels L; returns (status, whether the row's first
    blocks used those incoming levels)."""
    codes = tabs[0]
    w = np.empty(16, F)
    waux = np.empty(16, F)
    xval = np.empty(16, F)
    Laux = np.zeros(16, np.int8)
    sg = np.zeros(2, np.int64)
    idx = np.zeros(16, np.int64)
    sumx = np.zeros(17, F)
    sumw = np.zeros(17, F)
    q2 = np.zeros(32, np.uint16)
    scales = np.zeros(16, F)
    status = 0
    fresh = False
    stale = False
    for ibl in range(xr.shape[0] // 256):
        xbl = xr[256 * ibl:256 * ibl + 256]
        qwb = qw[256 * ibl:256 * ibl + 256]
        q2[:] = 0
        sumx2 = F(0.0)
        for i in range(256):
            sumx2 += xbl[i] * xbl[i]
        sigma2 = sumx2 / F(256.0)
        max_scale = F(0.0)
        for ib in range(16):
            sc, st, set_l = _iq2_xs_block(q2[2 * ib:2 * ib + 2], xbl[16 * ib:16 * ib + 16],
                                          qwb[16 * ib:16 * ib + 16], sigma2, tabs, w, waux,
                                          xval, L, Laux, sg, idx, sumx, sumw)
            stale = stale or not (fresh or set_l)
            fresh = fresh or set_l
            if st:
                status = st
            scales[ib] = sc
            max_scale = max_scale if max_scale > sc else sc
        y = yr[74 * ibl:74 * ibl + 74]
        y[:] = 0
        if max_scale == 0:
            continue
        _iq2_xs_d(y, q2, scales, xbl, qwb, sigma2, max_scale, codes, ksigns, w)
        y[2:66] = q2.view(np.uint8)
    return status, stale


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq2_xs_pass(out, x, qw, tabs, ksigns, status, stale, l_end):
    for r in prange(x.shape[0]):
        L = np.zeros(16, np.int8)
        status[r], stale[r] = _iq2_xs_row(out[r], x[r], qw, tabs, ksigns, L)
        l_end[r] = L


@njit(nogil=True, cache=True, error_model="numpy")
def _iq2_xs_carry(out, x, qw, tabs, ksigns, status, stale, l_end):
    """Rows whose first blocks had no weight take the previous row's last levels, as the C's
    L[] does across the rows of one call (row 0 of a call: uninitialised there, 0 here)."""
    for r in range(1, x.shape[0]):
        if stale[r]:
            L = l_end[r - 1].copy()
            status[r], _ = _iq2_xs_row(out[r], x[r], qw, tabs, ksigns, L)
            l_end[r] = L


def iq2_xs_rows(out, x, qw, codes, kmap, nb_off, nb_idx, ksigns, status):
    tabs = (codes, kmap, nb_off, nb_idx)
    stale = np.zeros(x.shape[0], np.bool_)
    l_end = np.zeros((x.shape[0], 16), np.int8)
    _iq2_xs_pass(out, x, qw, tabs, ksigns, status, stale, l_end)
    if stale[1:].any():
        _iq2_xs_carry(out, x, qw, tabs, ksigns, status, stale, l_end)


# ---------------------------------------------------------------- wrappers

_KIND = {"iq2_xxs": "iq2xxs", "iq2_xs": "iq2xs", "iq1_s": "iq1s", "iq1_m": "iq1s"}
_STATUS = {OFF_GRID: "a block's levels fall off the grid (llama-quantize aborts here: "
                      "'Oops: found point not on grid'; an importance that is zero over a whole "
                      "block does this)",
           NO_NEIGHBOUR: "no grid neighbour has a finite error (llama-quantize aborts here)",
           ZERO_BLOCK: "the importance is zero over a whole block (llama-quantize aborts here: "
                       "GGML_ASSERT(besti1 >= 0 && besti2 >= 0 && ...))"}


def _weights(name, x, qw, mode):
    from iqk_studio.quant.api import QuantError

    if mode == MODE_DEFAULT or (qw is None and mode != MODE_UNIFORM):
        raise QuantError(f"{name} requires an importance matrix (llama-quantize refuses "
                         f"{name} without one: 'Missing importance matrix for tensor ... in a "
                         f"very low-bit quantization'); pass an imatrix or use uniform weights")
    if mode == MODE_UNIFORM:
        return np.ones(x.shape[1], F)
    return np.ascontiguousarray(qw, F)


def _make_quant(name, kernel, bpb, *extra):
    def quant(x, qw, mode):
        from iqk_studio.quant.api import QuantError

        x = np.ascontiguousarray(x, F)
        w = _weights(name, x, qw, mode)
        codes, kmap, nb_off, nb_idx = search_tables(_KIND[name])
        out = np.empty((x.shape[0], bpb * (x.shape[1] // 256)), np.uint8)
        status = np.zeros(x.shape[0], np.int64)
        kernel(out, x, w, codes, kmap, nb_off, nb_idx, *(f() for f in extra), status)
        bad = np.flatnonzero(status)
        if bad.size:
            r = int(bad[0])
            raise QuantError(f"{name}: row {r}: {_STATUS[int(status[r])]}")
        return out
    return quant


def _ksigns():
    from iqk_studio.quant.kernels.grid import _tables

    return _tables()["ksigns"]


QUANT = {"iq2_xxs": _make_quant("iq2_xxs", iq2_xxs_rows, 66),
         "iq2_xs": _make_quant("iq2_xs", iq2_xs_rows, 74, _ksigns),
         "iq1_s": _make_quant("iq1_s", iq1_s_rows, 50),
         "iq1_m": _make_quant("iq1_m", iq1_m_rows, 56)}
