"""iq2_xxs (256-element super-blocks, 2.06 bpw): quantizer (ggml-quants.c quantize_row_iq2_xxs_impl,
imatrix only, neighbours.py) and dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, nearest_int, put_fp16
from iqk_studio.quant.kernels.iqgrid.neighbours import (
    NO_NEIGHBOUR,
    OFF_GRID,
    grid_lookup,
    imatrix_quantizer,
    iq2_levels,
    level_sums,
    make_qp_quants_nf,
    weights_signs,
)
from iqk_studio.quant.kernels.iqgrid.tables import _sign, d_f16, grid_tables
from iqk_studio.quant.kernels.wrap import dequantizer

F = np.float32


_EPS = F(1e-15)  # GROUP_MAX_EPS


# ---------------------------------------------------------------- IQ2_XXS (256, 66 B)
# d:f16 | qs:u32[16]: per 32-block ib, qs[2ib] = 4 grid bytes, qs[2ib+1] = 4 × 7-bit signs
# | 4-bit scale << 28; y = d·(0.5 + scale)·0.25 · grid · sign


@njit(nogil=True, cache=True, error_model="numpy")
def _iq2_xxs_block(q2, xb, qw, sigma2, codes, kmap, nb_off, nb_idx, w, waux, xval, L, Laux, sg):
    """One 32-block: fills q2[0:2] (grid bytes, signs), returns (scale, status)."""
    weights_signs(w, waux, xval, sg, xb, qw, sigma2)
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
            gi = iq2_levels(Laux, 8 * k, xval, waux, id_, this_scale, codes, kmap, nb_off, nb_idx)
            if gi < 0:
                return scale, NO_NEIGHBOUR
        sqx, sq2 = level_sums(Laux, w, xval, 32)
        if sq2 > 0 and sqx * sqx > best * sq2:
            scale = sqx / sq2
            best = scale * sqx
            L[:] = Laux
    if scale > 0:
        id_ = F(1.0) / scale
        for k in range(4):
            if iq2_levels(L, 8 * k, xval, waux, id_, scale, codes, kmap, nb_off, nb_idx) < 0:
                return scale, NO_NEIGHBOUR
        sqx, sq2 = level_sums(L, w, xval, 32)
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


# ---------------------------------------------------------------- IQ2_XXS (256, 66 B)
# d:f16 | qs:u16[32]; 32-block ib = u32 of 4 grid bytes | u32 (4 × 7-bit ksigns index, scale
# bits 28-31); y = d·(0.5 + scale)·0.25 · grid · sign


@njit(nogil=True, cache=True)
def _iq2_xxs_kernel(y, raw, d, grid, ksigns):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 66 * ibl + 2
            for ib in range(8):
                p = o + 8 * ib
                aux = np.uint32(raw[r, p + 4]) | (np.uint32(raw[r, p + 5]) << 8) | (
                    np.uint32(raw[r, p + 6]) << 16) | (np.uint32(raw[r, p + 7]) << 24)
                db = d[r, ibl] * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.25)
                for li in range(4):
                    g = grid[raw[r, p + li]]
                    sg = ksigns[(aux >> (7 * li)) & 127]
                    o2 = 256 * ibl + 32 * ib + 8 * li
                    for j in range(8):
                        y[r, o2 + j] = db * np.float32(g[j]) * _sign(sg, j)


def _dequant(out, raw):
    tb = grid_tables()
    _iq2_xxs_kernel(out, raw, d_f16(raw, 66, 0), tb["iq2xxs"], tb["ksigns"])


QUANT = {"iq2_xxs": imatrix_quantizer("iq2_xxs", iq2_xxs_rows, "iq2xxs")}
DEQUANT = {"iq2_xxs": dequantizer("iq2_xxs", _dequant)}
