"""iq2_xs (256-element super-blocks, 2.31 bpw): quantizer (ggml-quants.c quantize_row_iq2_xs_impl,
imatrix only, neighbours.py) and dequantizer; the dequant kernel is shared with iq2_s."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, nearest_int, put_fp16
from iqk_studio.quant.kernels.iqgrid.neighbours import (
    NO_NEIGHBOUR,
    OFF_GRID,
    argsort_stable,
    grid_lookup,
    imatrix_quantizer,
    iq2_levels,
    level_sums,
    weights_signs,
)
from iqk_studio.quant.kernels.iqgrid.tables import _sign, d_f16, grid_tables
from iqk_studio.quant.kernels.wrap import dequantizer

F = np.float32
_EPS = F(1e-15)  # GROUP_MAX_EPS


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
def _iq2_xs_block(q2, xb, qw, sigma2, tabs, w, waux, xval, L, Laux, sg, idx, sumx, sumw, ia):
    """One 16-block: fills q2[0:2], returns (scale, status, whether L was set). L carries over as
    in the C: a block whose search never accepts a scale (all w = 0) keeps the previous levels."""
    codes, kmap, nb_off, nb_idx = tabs
    weights_signs(w, waux, xval, sg, xb, qw, sigma2)
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
    index = ia[0:2]  # grid indices of L / of Laux
    aux = ia[2:4]
    index[:] = 0
    for is_ in range(-7, 8):
        id_ = fma32(F(is_), F(0.1), F(5.0)) / eff_max
        this_scale = F(1.0) / id_
        for k in range(2):
            aux[k] = iq2_levels(Laux, 8 * k, xval, waux, id_, this_scale, codes, kmap, nb_off,
                                nb_idx)
            if aux[k] < 0:
                return scale, NO_NEIGHBOUR, fresh
        sqx, sq2 = level_sums(Laux, w, xval, 16)
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
                aux[k] = iq2_levels(Laux, 8 * k, xval, waux, id_, scale, codes, kmap, nb_off,
                                    nb_idx)
                if aux[k] < 0:
                    return scale, NO_NEIGHBOUR, fresh
                changed = changed or aux[k] != index[k]
            if not changed:
                break
            sqx, sq2 = level_sums(Laux, w, xval, 16)
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
                gv = F((8, 25, 43)[(np.int64(codes[gi, j]) - 1) >> 1])
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
    ia = np.zeros(4, np.int64)
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
                                          xval, L, Laux, sg, idx, sumx, sumw, ia)
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


# ---------------------------------------------------------------- IQ2_XS (256, 74 B) / IQ2_S (82 B)
# IQ2_XS: d | qs:u16[32] (9-bit grid index | 7-bit ksigns index) | scales:u8[8]
# IQ2_S:  d | qs:u8[32] | signs:u8[32] | qh:u8[8] (2 high index bits per group) | scales:u8[8]
# y = d·(0.5 + nibble)·0.25 · grid · sign, nibble l//2 of scales[ib] for group l


@njit(nogil=True, cache=True)
def _iq2_xs_s_kernel(y, raw, d, grid, ksigns, is_s):
    rows, n = y.shape
    bs = 82 if is_s else 74
    for r in range(rows):
        for ibl in range(n // 256):
            o = bs * ibl
            for ib in range(8):
                sc = raw[r, o + bs - 8 + ib]
                for li in range(4):
                    nib = (sc & 15) if li < 2 else (sc >> 4)
                    dl = d[r, ibl] * (np.float32(0.5) + np.float32(nib)) * np.float32(0.25)
                    if is_s:
                        idx = np.int32(raw[r, o + 2 + 4 * ib + li]) | (
                            (np.int32(raw[r, o + 66 + ib]) << (8 - 2 * li)) & 0x300)
                        sg = raw[r, o + 34 + 4 * ib + li]
                    else:
                        q = np.int32(raw[r, o + 2 + 8 * ib + 2 * li]) | (
                            np.int32(raw[r, o + 3 + 8 * ib + 2 * li]) << 8)
                        idx = q & 511
                        sg = ksigns[q >> 9]
                    g = grid[idx]
                    o2 = 256 * ibl + 32 * ib + 8 * li
                    for j in range(8):
                        y[r, o2 + j] = dl * np.float32(g[j]) * _sign(sg, j)


def _dequant(out, raw):
    tb = grid_tables()
    _iq2_xs_s_kernel(out, raw, d_f16(raw, 74, 0), tb["iq2xs"], tb["ksigns"], False)


QUANT = {"iq2_xs": imatrix_quantizer("iq2_xs", iq2_xs_rows, "iq2xs",
                                     lambda: grid_tables()["ksigns"])}
DEQUANT = {"iq2_xs": dequantizer("iq2_xs", _dequant)}
