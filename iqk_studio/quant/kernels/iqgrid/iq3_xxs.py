"""iq3_xxs (3.06 bpw) and iq3_s (3.44 bpw), 256-element super-blocks: quantizers (ggml-quants.c
quantize_row_iq3_xxs_impl / quantize_row_iq3_s_impl, one row function, lattice.py) and
dequantizers."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F, put_fp16
from iqk_studio.quant.kernels.iqgrid.lattice import (
    EPS,
    QK,
    abs_signs,
    block_sigma2,
    block_weights,
    even_signs,
    group_code,
    group_max,
    scale_nibble,
    search_block,
)
from iqk_studio.quant.kernels.iqgrid.tables import _sign, d_f16, grid_tables, lattice_tables
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

# ---------------------------------------------------------------- IQ3_XXS (256, 98 B)
# d:f16 | qs:u8[64] (grid index per 4 values) | u32[8]: 4 × 7-bit sign bytes | scale << 28
# ---------------------------------------------------------------- IQ3_S (256, 110 B)
# d:f16 | qs:u8[64] | qh:u8[8] (bit 8 of each index) | signs:u8[32] | scales:u8[4] (nibbles)
# Reference quirk kept: a 32-block with max|x| == 0 does not advance the qs / signs write
# positions, so the following blocks' bytes land 8 / 4 bytes earlier.


@njit(nogil=True, cache=True, error_model="numpy")
def _iq3_row(out, x, qw, mode, tabs, is_s):
    nb = x.shape[0] // QK
    bs = 110 if is_s else 98
    par = (4, 3, 8, 9 if is_s else 15, F(0.2), 0 if is_s else -1, is_s)
    weight = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    # L / og persist over the row's blocks (see search_block). The reference starts a row with
    # whatever its stack holds (undefined); we start from zeros (grid point 0, on the grid).
    L = np.zeros(32, np.int64)
    Laux = np.zeros(32, np.int64)
    og = np.zeros(8, np.bool_)
    oga = np.zeros(8, np.bool_)
    s = np.zeros(4, np.int64)
    scales = np.zeros(8, np.float32)
    kmap = tabs[1]
    out[:] = 0
    for ibl in range(nb):
        o = bs * ibl
        j0 = QK * ibl
        sigma2 = block_sigma2(x, j0)
        max_scale = F(0.0)
        qpos = o + 2
        spos = o + 74
        for ib in range(8):
            jb = j0 + 32 * ib
            block_weights(weight, waux, x, jb, qw, sigma2, mode, False)
            abs_signs(xval, s, x, jb, 32)
            if not is_s:
                even_signs(xval, s, x, jb, weight)
            vmax = group_max(xval)
            if (is_s and vmax == 0) or (not is_s and vmax < EPS):
                scales[ib] = 0
                if not is_s:
                    L[:] = 0
                continue
            scale = search_block(L, og, xval, weight, waux, Laux, oga, tabs, par, vmax)
            if scale < 0:
                scale = -scale
                for k in range(4):
                    s[k] = (~s[k]) & (255 if is_s else 127)
            for k in range(8):
                gi = kmap[group_code(L, 4 * k, 4, 3)]
                if is_s:
                    out[qpos + k] = gi & 255
                    out[o + 66 + ib] |= (gi >> 8) << k
                else:
                    out[o + 2 + 8 * ib + k] = gi
            if is_s:
                qpos += 8
                for k in range(4):
                    out[spos + k] = s[k]
                spos += 4
            else:
                p = o + 66 + 4 * ib
                sg = s[0] | (s[1] << 7) | (s[2] << 14) | (s[3] << 21)
                for k in range(4):
                    out[p + k] = (sg >> (8 * k)) & 255
            scales[ib] = scale
            max_scale = max(max_scale, scale)
        if max_scale == 0:
            if not is_s:  # IQ3_XXS clears its staging buffer; IQ3_S keeps what it wrote
                out[o + 2:o + bs] = 0
            continue
        d = max_scale / F(31.0)
        put_fp16(out, o, d * (F(1.033) if is_s else F(1.0125)))
        idv = F(1.0) / d
        for ib in range(8):
            lv = scale_nibble(idv, scales[ib])
            if is_s:
                out[o + 106 + ib // 2] |= lv << (4 * (ib % 2))
            else:
                out[o + 69 + 4 * ib] |= lv << 4


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq3_rows(out, x, qw, mode, tabs, is_s):
    """qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        _iq3_row(out[r], x[r], qw, mode, tabs, is_s)


# ---------------------------------------------------------------- IQ3_XXS (256, 98 B)
# d | qs:u8[64] (grid index per 4 values) | u32[8] (4 × 7-bit ksigns index, scale bits 28-31)
# y = d·(0.5 + scale)·0.5 · grid · sign


@njit(nogil=True, cache=True)
def _iq3_xxs_kernel(y, raw, d, grid, ksigns):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 98 * ibl + 2
            for ib in range(8):
                p = o + 64 + 4 * ib
                aux = np.uint32(raw[r, p]) | (np.uint32(raw[r, p + 1]) << 8) | (
                    np.uint32(raw[r, p + 2]) << 16) | (np.uint32(raw[r, p + 3]) << 24)
                db = d[r, ibl] * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.5)
                for li in range(4):
                    sg = ksigns[(aux >> (7 * li)) & 127]
                    for h in range(2):
                        g = grid[raw[r, o + 8 * ib + 2 * li + h]]
                        for j in range(4):
                            y[r, 256 * ibl + 32 * ib + 8 * li + 4 * h + j] = (
                                db * np.float32(g[j]) * _sign(sg, 4 * h + j))


# ---------------------------------------------------------------- IQ3_S (256, 110 B)
# d | qs:u8[64] | qh:u8[8] (9th index bit) | signs:u8[32] | scales:u8[4] (nibble per 32 values)
# y = d·(1 + 2·nibble) · grid · sign


@njit(nogil=True, cache=True)
def _iq3_s_kernel(y, raw, d, grid):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 110 * ibl
            for ib in range(8):
                sc = raw[r, o + 106 + ib // 2]
                nib = (sc & 15) if ib % 2 == 0 else (sc >> 4)
                db = d[r, ibl] * np.float32(1 + 2 * np.int32(nib))
                qh = np.int32(raw[r, o + 66 + ib])
                for li in range(4):
                    sg = raw[r, o + 74 + 4 * ib + li]
                    for h in range(2):
                        idx = np.int32(raw[r, o + 2 + 8 * ib + 2 * li + h]) | (
                            (qh << (8 - 2 * li - h)) & 256)
                        g = grid[idx]
                        for j in range(4):
                            y[r, 256 * ibl + 32 * ib + 8 * li + 4 * h + j] = (
                                db * np.float32(g[j]) * _sign(sg, 4 * h + j))


def _iq3_xxs_dequant(out, raw):
    tb = grid_tables()
    _iq3_xxs_kernel(out, raw, d_f16(raw, 98, 0), tb["iq3xxs"], tb["ksigns"])


def _iq3_s_dequant(out, raw):
    _iq3_s_kernel(out, raw, d_f16(raw, 110, 0), grid_tables()["iq3s"])


QUANT = {"iq3_xxs": quantizer("iq3_xxs", lambda out, x, qw, mode:
                              _iq3_rows(out, x, qw, mode, lattice_tables("iq3xxs"), False)),
         "iq3_s": quantizer("iq3_s", lambda out, x, qw, mode:
                            _iq3_rows(out, x, qw, mode, lattice_tables("iq3s"), True))}
DEQUANT = {"iq3_xxs": dequantizer("iq3_xxs", _iq3_xxs_dequant),
           "iq3_s": dequantizer("iq3_s", _iq3_s_dequant)}
