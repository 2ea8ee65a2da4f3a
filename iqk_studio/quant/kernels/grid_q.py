"""Quantizers for the grid types IQ3_XXS, IQ3_S and IQ2_S, bit-exact with ik_llama.cpp's
ggml-quants.c (quantize_row_iq3_xxs_impl, quantize_row_iq3_s_impl, quantize_row_iq2_s_impl)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F, fma32, nearest_int, put_fp16
from iqk_studio.quant.kernels._grid_search import (
    block_sigma2,
    block_weights,
    group_code,
    search_block,
)
from iqk_studio.quant.kernels._grid_tables import search_tables
from iqk_studio.quant.kernels._iqk23 import check_quant

QK = 256
_EPS = F(1e-8)  # GROUP_MAX_EPS_IQ3_XXS, GROUP_MAX_EPS_IQ2_S


@njit(nogil=True, cache=True, error_model="numpy")
def _abs_signs(xval, s, x, j0, n):
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
def _even_signs(xval, s, x, j0, weight):
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
def _vmax(xval):
    m = xval[0]
    for i in range(1, xval.shape[0]):
        if not m > xval[i]:
            m = xval[i]
    return m


@njit(nogil=True, cache=True, error_model="numpy")
def _scale_nibble(idv, s):
    return max(0, min(15, nearest_int(F(0.5) * fma32(idv, s, F(-1.0)))))


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
            _abs_signs(xval, s, x, jb, 32)
            if not is_s:
                _even_signs(xval, s, x, jb, weight)
            vmax = _vmax(xval)
            if (is_s and vmax == 0) or (not is_s and vmax < _EPS):
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
            lv = _scale_nibble(idv, scales[ib])
            if is_s:
                out[o + 106 + ib // 2] |= lv << (4 * (ib % 2))
            else:
                out[o + 69 + 4 * ib] |= lv << 4


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
            _abs_signs(xval, s, x, jb, 16)
            vmax = _vmax(xval)
            if vmax < _EPS:
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
            out[o + 74 + ib // 2] |= _scale_nibble(idv, scales[ib]) << (4 * (ib % 2))


@njit(nogil=True, cache=True, parallel=True, error_model="numpy")
def _quant_rows(out, x, qw, mode, tabs, kind):
    """kind 0 IQ3_XXS, 1 IQ3_S, 2 IQ2_S; qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        if kind == 2:
            _iq2s_row(out[r], x[r], qw, mode, tabs)
        else:
            _iq3_row(out[r], x[r], qw, mode, tabs, kind == 1)


def _quantizer(kind: int, grid: str, type_size: int):
    def quantize(x, qw, mode):
        x, qw = check_quant(x, qw, mode)
        out = np.empty((x.shape[0], type_size * (x.shape[1] // QK)), np.uint8)
        _quant_rows(out, x, qw, mode, search_tables(grid), kind)
        return out
    return quantize


quantize_iq3_xxs = _quantizer(0, "iq3xxs", 98)
quantize_iq3_s = _quantizer(1, "iq3s", 110)
quantize_iq2_s = _quantizer(2, "iq2s", 82)

QUANT = {"iq3_xxs": quantize_iq3_xxs, "iq3_s": quantize_iq3_s, "iq2_s": quantize_iq2_s}
