"""iq1_s (256-element super-blocks, 1.56 bpw): quantizer (ggml-quants.c quantize_row_iq1_s_impl,
imatrix only, neighbours.py) and dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, nearest_int, put_fp16
from iqk_studio.quant.kernels.iqgrid.neighbours import (
    NO_NEIGHBOUR,
    ZERO_BLOCK,
    argsort_stable,
    best_neighbour,
    imatrix_quantizer,
    level_key,
)
from iqk_studio.quant.kernels.iqgrid.tables import d_f16, grid_tables
from iqk_studio.quant.kernels.wrap import dequantizer

F = np.float32
DELTA = F(0.125)  # IQ1S_DELTA = IQ1M_DELTA
# x_p = (-1+δ, δ, 1+δ), x_m = (-1-δ, -δ, 1-δ): the three values of a shifted grid
XP = np.array([-1 + 0.125, 0.125, 1 + 0.125], np.float32)
XM = np.array([-1 - 0.125, -0.125, 1 - 0.125], np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def _prefix_sums(sumx, sumw, idx, xb, w, n):
    """sumx/sumw over xb sorted ascending (stable): sumx fused, sumw plain."""
    argsort_stable(idx, xb, n)
    sumx[0] = F(0.0)
    sumw[0] = F(0.0)
    for j in range(n):
        i = idx[j]
        sumx[j + 1] = fma32(w[i], xb[i], sumx[j])
        sumw[j + 1] = sumw[j] + w[i]


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1s_split(sumx, sumw, n, xmax):
    """Best (scale, i1, i2, shift) over every split of the sorted block into -1 / 0 / +1 and both
    shifts, with the contraction GCC chose: only the last term of sumqx (and of sumq2 for x_m)
    is fused."""
    best = F(-1.1754943508222875e-38)  # -FLT_MIN
    scale = xmax
    b1 = -1
    b2 = -1
    shift = 0
    for i1 in range(n + 1):
        for i2 in range(i1, n + 1):
            a = sumx[i1] - sumx[0]
            b = sumx[i2] - sumx[i1]
            c = sumx[n] - sumx[i2]
            wa = sumw[i1] - sumw[0]
            wb = sumw[i2] - sumw[i1]
            wc = sumw[n] - sumw[i2]
            wbt = wb * F(0.125) * F(0.125)
            sqx = fma32(c, F(1.125), a * F(-0.875) + b * F(0.125))
            sq2 = (wa * F(-0.875) * F(-0.875) + wbt) + wc * F(1.125) * F(1.125)
            if sq2 > 0 and sqx * sqx > best * sq2:
                scale = sqx / sq2
                best = scale * sqx
                b1, b2, shift = i1, i2, 1
            sqx = fma32(c, F(0.875), a * F(-1.125) + b * F(-0.125))
            sq2 = fma32(wc * F(0.875), F(0.875), wbt + wa * F(-1.125) * F(-1.125))
            if sq2 > 0 and sqx * sqx > best * sq2:
                scale = sqx / sq2
                best = scale * sqx
                b1, b2, shift = i1, i2, -1
    return scale, b1, b2, shift


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1s_block(index, xb, w, L, idx, sumx, sumw, codes, kmap, nb_off, nb_idx):
    """iq1s_process_1block for 32 values: grid indices into index[0:4]; (scale, shift, status)."""
    n = 32
    mx = abs(xb[0])
    for i in range(1, n):
        mx = max(mx, abs(xb[i]))
    if mx < F(1e-12):
        index[:] = 0
        return F(0.0), 1, 0
    _prefix_sums(sumx, sumw, idx, xb, w, n)
    scale, b1, b2, shift = _iq1s_split(sumx, sumw, n, mx)
    if b1 < 0:
        return scale, shift, ZERO_BLOCK  # GGML_ASSERT(besti1 >= 0 ...)
    for j in range(n):
        L[idx[j]] = 0 if j < b1 else (1 if j < b2 else 2)
    if scale < 0:
        for j in range(n):
            L[j] = 2 - L[j]
        scale = -scale
        shift = -shift
    xx = XP if shift == 1 else XM
    on_grid = True
    for k in range(n // 8):
        u = level_key(L, 8 * k)
        gi = kmap[u]
        if gi < 0:
            on_grid = False
            gi = best_neighbour(L, 8 * k, codes, nb_off, nb_idx, u, xb, w, scale, F(0.5),
                                F(-1.375) if shift == 1 else F(-1.625))
            if gi < 0:
                return scale, shift, NO_NEIGHBOUR
        index[k] = gi
    if not on_grid:
        sqx = F(0.0)
        sq2 = F(0.0)
        for k in range(n // 8):
            for j in range(8):
                q = xx[(np.int64(codes[index[k], j]) - 1) >> 1]
                wq = w[8 * k + j] * q
                sqx = fma32(wq, xb[8 * k + j], sqx)
                sq2 = fma32(q, wq, sq2)
        if sqx > 0 and sq2 > 0:
            scale = sqx / sq2
    return scale, shift, 0


# ---------------------------------------------------------------- IQ1_S (256, 50 B)
# d:f16 | qs:u8[32] (low 8 bits of 11-bit grid indices) | qh:u16[8]: per 32-block 4 × 3 high
# index bits, 3-bit scale << 12, bit 15 = shift -δ; y = d·(2·scale+1)·(grid ± δ)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq1_s_rows(out, x, qw, codes, kmap, nb_off, nb_idx, status):
    nbl = x.shape[1] // 256
    for r in prange(x.shape[0]):
        w = np.empty(32, F)
        L = np.zeros(32, np.int8)
        idx = np.zeros(32, np.int64)
        sumx = np.zeros(33, F)
        sumw = np.zeros(33, F)
        index = np.zeros(4, np.int64)
        scales = np.zeros(8, F)
        shifts = np.zeros(8, np.int64)
        for ibl in range(nbl):
            xbl = x[r, 256 * ibl:256 * ibl + 256]
            y = out[r, 50 * ibl:50 * ibl + 50]
            y[:] = 0
            sumx2 = F(0.0)
            for i in range(256):
                sumx2 += xbl[i] * xbl[i]
            sigma2 = sumx2 * F(2.0) / F(256.0)
            max_scale = F(0.0)
            for ib in range(8):
                xb = xbl[32 * ib:32 * ib + 32]
                for i in range(32):
                    w[i] = qw[256 * ibl + 32 * ib + i] * np.sqrt(fma32(xb[i], xb[i], sigma2))
                sc, sh, st = _iq1s_block(index, xb, w, L, idx, sumx, sumw, codes, kmap, nb_off,
                                         nb_idx)
                if st:
                    status[r] = st
                h = 0
                for k in range(4):
                    y[2 + 4 * ib + k] = index[k] & 255
                    h |= (index[k] >> 8) << (3 * k)
                y[34 + 2 * ib] = h & 255
                y[35 + 2 * ib] = h >> 8
                scales[ib] = sc
                shifts[ib] = sh
                max_scale = max_scale if max_scale > sc else sc
            if max_scale == 0:
                continue
            d = max_scale / F(15.0)
            put_fp16(y, 0, d * F(1.125))
            id_ = F(1.0) / d
            for ib in range(8):
                li = max(0, min(7, nearest_int(F(0.5) * fma32(id_, scales[ib], F(-1.0)))))
                if shifts[ib] == -1:
                    li |= 8
                y[35 + 2 * ib] |= li << 4


# ---------------------------------------------------------------- IQ1_S (256, 50 B) / IQ1_M (56 B)
# IQ1_S: d | qs:u8[32] | qh:u16[8] (3 high index bits per group, scale bits 12-14, delta sign 15)
#   y = d·(2·scale + 1) · (grid ± 0.125)
# IQ1_M: qs:u8[32] | qh:u8[16] (3 index bits + delta sign per group) | scales:u16[4] (3-bit
#   scales per 16 values; the fp16 d in their top nibbles)


@njit(nogil=True, cache=True)
def _iq1_s_kernel(y, raw, d, grid):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 50 * ibl
            for ib in range(8):
                qh = np.int32(raw[r, o + 34 + 2 * ib]) | (np.int32(raw[r, o + 35 + 2 * ib]) << 8)
                dl = d[r, ibl] * np.float32(2 * ((qh >> 12) & 7) + 1)
                delta = np.float32(-0.125) if qh & 0x8000 else np.float32(0.125)
                for li in range(4):
                    g = grid[np.int32(raw[r, o + 2 + 4 * ib + li]) | (((qh >> (3 * li)) & 7) << 8)]
                    for j in range(8):
                        y[r, 256 * ibl + 32 * ib + 8 * li + j] = dl * (np.float32(g[j]) + delta)


def _dequant(out, raw):
    _iq1_s_kernel(out, raw, d_f16(raw, 50, 0), grid_tables()["iq1s"])


QUANT = {"iq1_s": imatrix_quantizer("iq1_s", iq1_s_rows, "iq1s")}
DEQUANT = {"iq1_s": dequantizer("iq1_s", _dequant)}
