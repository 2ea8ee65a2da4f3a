"""Quantizers for the imatrix-only grid types IQ2_XXS (here), IQ2_XS (_grid2_iq2xs), IQ1_S
(_grid2_iq1) and IQ1_M (_grid2_iq1m): bit-exact ports of ik_llama.cpp 8337e4cd3 ggml-quants.c
quantize_row_*_impl, with the a·b+c that GCC 12 (-O3 -march=znver3) fuses written as fma32
(read from its -fdump-tree-optimized; notes in _grid2_common). Like llama-quantize, they
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
    grid_lookup,
    iq2_levels,
    level_sums,
    make_qp_quants_nf,
    search_tables,
    weights_signs,
)
from iqk_studio.quant.kernels._grid2_iq1 import iq1_s_rows
from iqk_studio.quant.kernels._grid2_iq1m import iq1_m_rows
from iqk_studio.quant.kernels._grid2_iq2xs import iq2_xs_rows

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
