"""iq2_s (256-element super-blocks, 2.5 bpw): quantizer (ggml-quants.c quantize_row_iq2_s_impl,
lattice.py) and dequantizer (the kernel shared with iq2_xs)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F, put_fp16
from iqk_studio.quant.kernels.iqgrid.iq2_xs import _iq2_xs_s_kernel
from iqk_studio.quant.kernels.iqgrid.lattice import (
    EPS,
    QK,
    abs_signs,
    block_sigma2,
    block_weights,
    group_code,
    group_max,
    scale_nibble,
    search_block,
)
from iqk_studio.quant.kernels.iqgrid.tables import d_f16, grid_tables, lattice_tables
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

# ---------------------------------------------------------------- IQ2_S (256, 82 B)
# d:f16 | qs:u8[32] (low 8 index bits per 8 values) | signs:u8[32] | qh:u8[8] (2 high index
# bits per group, group i8 at bits 2·(i8%4) of qh[i8/4]) | scales:u8[8] (nibble per 16 values)


@njit(nogil=True, cache=True, error_model="numpy")
def _iq2s_row(out, x, qw, mode, tabs):
    nb = x.shape[0] // QK
    par = (8, 2, 3, 9, F(0.1), 1, False)
    weight = np.empty(16, np.float32)
    waux = np.empty(16, np.float32)
    xval = np.empty(16, np.float32)
    L = np.zeros(16, np.int64)
    Laux = np.zeros(16, np.int64)
    og = np.zeros(2, np.bool_)
    oga = np.zeros(2, np.bool_)
    s = np.zeros(2, np.int64)
    scales = np.zeros(16, np.float32)
    kmap = tabs[1]
    out[:] = 0
    for ibl in range(nb):
        o = 82 * ibl
        j0 = QK * ibl
        sigma2 = block_sigma2(x, j0)
        max_scale = F(0.0)
        for ib in range(16):
            jb = j0 + 16 * ib
            block_weights(weight, waux, x, jb, qw, sigma2, mode, True)
            abs_signs(xval, s, x, jb, 16)
            vmax = group_max(xval)
            if vmax < EPS:
                scales[ib] = 0
                continue
            scale = search_block(L, og, xval, weight, waux, Laux, oga, tabs, par, vmax)
            if scale < 0:
                scale = -scale
                for k in range(2):
                    s[k] = (~s[k]) & 255
            for k in range(2):
                gi = kmap[group_code(L, 8 * k, 8, 2)]
                i8 = 2 * ib + k
                out[o + 2 + i8] = gi & 255
                out[o + 66 + i8 // 4] |= (gi >> 8) << (2 * (i8 % 4))
                out[o + 34 + i8] = s[k]
            scales[ib] = scale
            max_scale = max(max_scale, scale)
        if max_scale == 0:
            continue
        d = max_scale / F(31.0)
        put_fp16(out, o, d * F(0.9875))
        idv = F(1.0) / d
        for ib in range(16):
            out[o + 74 + ib // 2] |= scale_nibble(idv, scales[ib]) << (4 * (ib % 2))


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq2s_rows(out, x, qw, mode, tabs):
    """qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        _iq2s_row(out[r], x[r], qw, mode, tabs)


def _dequant(out, raw):
    tb = grid_tables()
    _iq2_xs_s_kernel(out, raw, d_f16(raw, 82, 0), tb["iq2s"], tb["ksigns"], True)


QUANT = {"iq2_s": quantizer("iq2_s", lambda out, x, qw, mode:
                            _iq2s_rows(out, x, qw, mode, lattice_tables("iq2s")))}
DEQUANT = {"iq2_s": dequantizer("iq2_s", _dequant)}
