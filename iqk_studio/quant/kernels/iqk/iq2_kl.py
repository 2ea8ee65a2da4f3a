"""IQ2_KL kernels, bit-exact with ik_llama.cpp (quantize_row_iq2_kl_impl): pairs of weights take
one of 32 grid points drawn from the iq3nl base values; quant-formats.md §5, §6.13.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F, amax_signed, fma32, get_fp16, nearest_int_mul, put_fp16
from iqk_studio.quant.kernels.iqk.common import sanitize_weights
from iqk_studio.quant.kernels.iqk.common_low import (
    IQ3NL,
    MODE_IMATRIX,
    MODE_UNIFORM,
    best_index_iq3nl,
    sum_sq,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

QK = 256

# iqk_quantize.cpp quantize_row_iq2_kl_impl: k_index[8*l1 + l2] is the grid point of the value
# pair (iq3nl[l1], iq3nl[l2]) or, if negative, -(row of K_NEIGHBOURS to search) - 1.
K_INDEX = np.array([
    -1, -2, 0, -3, -4, 1, -5, -6, 2, -7, -8, 3, -9, 4, -10, 5, -11, 6, 7, -12, 8, 9, 10, -13,
    11, -14, -15, -16, 12, 13, -17, 14, -18, -19, 15, 16, 17, 18, 19, -20, -21, 20, 21, 22, 23,
    24, -22, -23, 25, -24, 26, -25, 27, -26, 28, 29, -27, -28, 30, -29, -30, 31, -31, -32,
], dtype=np.int64)
K_NEIGHBOURS = np.array([
    [2, 0, 6, 11, 7, 3, 8, 15], [0, 2, 3, 6, 7, 1, 8, 4], [0, 1, 3, 4, 8, 7, 9, 6],
    [1, 0, 3, 4, 8, 9, 7, 10], [1, 4, 5, 10, 9, 3, 8, 0], [5, 1, 4, 10, 9, 14, 8, 3],
    [6, 2, 7, 0, 3, 11, 8, 15], [3, 7, 0, 6, 8, 4, 12, 9], [3, 4, 8, 9, 1, 7, 12, 10],
    [4, 10, 5, 9, 1, 8, 13, 14], [11, 2, 6, 7, 20, 15, 25, 21], [8, 7, 3, 12, 9, 16, 17, 13],
    [14, 5, 10, 19, 9, 13, 4, 18], [6, 15, 7, 11, 20, 21, 16, 2], [15, 7, 16, 6, 21, 12, 17, 22],
    [12, 16, 17, 8, 15, 7, 13, 22], [19, 10, 13, 18, 14, 9, 12, 24], [11, 20, 25, 6, 15, 2, 21, 7],
    [20, 15, 21, 6, 11, 7, 16, 26], [14, 19, 29, 10, 28, 18, 13, 24],
    [25, 11, 20, 21, 15, 6, 26, 30], [19, 24, 28, 18, 29, 23, 13, 17],
    [29, 19, 14, 28, 24, 18, 10, 13], [20, 26, 21, 25, 30, 15, 22, 16],
    [27, 26, 22, 23, 21, 30, 16, 24], [27, 24, 28, 31, 23, 18, 22, 17],
    [25, 30, 20, 26, 21, 11, 15, 22], [30, 26, 25, 20, 21, 27, 22, 15],
    [30, 27, 31, 26, 22, 23, 21, 24], [31, 27, 30, 26, 28, 23, 22, 24],
    [31, 28, 29, 27, 24, 23, 19, 18], [29, 28, 31, 24, 19, 27, 14, 18],
], dtype=np.int64)
GRID = np.zeros((32, 2), np.float32)  # iq2kl_values decoded: (first, second) of each point
for _j in range(64):
    if K_INDEX[_j] >= 0:
        GRID[K_INDEX[_j]] = IQ3NL[_j // 8], IQ3NL[_j % 8]


@njit(nogil=True, cache=True)
def _index(idd, x1, x2, w1, w2):
    """Grid point for the pair (x1, x2) at inverse scale id (the reference's `index` lambda):
    nearest value per coordinate, else the best of 8 neighbours by w1·d1² + w2·d2²."""
    sx1 = idd * x1
    sx2 = idd * x2
    i = K_INDEX[8 * best_index_iq3nl(IQ3NL, 0, sx1) + best_index_iq3nl(IQ3NL, 0, sx2)]
    if i >= 0:
        return i
    best = F(3.4028234663852886e38)
    ibest = -1
    for k in range(8):
        g = K_NEIGHBOURS[-i - 1, k]
        diff1 = GRID[g, 0] - sx1
        diff2 = GRID[g, 1] - sx2
        score = fma32(w1 * diff1, diff1, w2 * diff2 * diff2)
        if score < best:
            best = score
            ibest = g
    return ibest


@njit(nogil=True, cache=True)
def _pair_sums(x, j0, w, idd):
    """Σ over the 16 pairs of (w·q·x, w·q²) for grid labels at id and at -id (GCC's FMA form)."""
    sqx_p = F(0.0)
    sq2_p = F(0.0)
    sqx_m = F(0.0)
    sq2_m = F(0.0)
    for j in range(0, 32, 2):
        x1 = x[j0 + j]
        x2 = x[j0 + j + 1]
        for sgn in range(2):
            g = _index(idd if sgn == 0 else -idd, x1, x2, w[j], w[j + 1])
            q1 = GRID[g, 0]
            q2 = GRID[g, 1]
            wq1 = w[j] * q1
            wq2 = w[j + 1] * q2
            sqx = fma32(wq1, x1, wq2 * x2)
            sq2 = fma32(wq1, q1, wq2 * q2)
            if sgn == 0:
                sqx_p = sqx_p + sqx
                sq2_p = sq2_p + sq2
            else:
                sqx_m = sqx_m + sqx
                sq2_m = sq2_m + sq2
    return sqx_p, sq2_p, sqx_m, sq2_m


@njit(nogil=True, cache=True)
def _block_scale(x, j0, w):
    """Per-32-block scale search (ntry 5 around the first table value, both signs)."""
    amax, mx = amax_signed(x, j0, 32)
    if amax < F(1e-16):
        return F(0.0)
    d = -mx / IQ3NL[0]
    sqx_p, sq2_p, sqx_m, sq2_m = _pair_sums(x, j0, w, F(1.0) / d)
    d = sqx_p / sq2_p
    best = d * sqx_p
    if sq2_m > 0 and sqx_m * sqx_m > best * sq2_m:
        d = sqx_m / sq2_m
        best = d * sqx_m
    for itry in range(-5, 6):
        sqx_p, sq2_p, sqx_m, sq2_m = _pair_sums(x, j0, w, F(itry - 63) / mx)
        if sq2_p > 0 and sqx_p * sqx_p > best * sq2_p:
            d = sqx_p / sq2_p
            best = d * sqx_p
        if sq2_m > 0 and sqx_m * sqx_m > best * sq2_m:
            d = sqx_m / sq2_m
            best = d * sqx_m
    return d


@njit(nogil=True, cache=True)
def _weights(w, x, qw, j0, sigma2, mode):
    """IQ2_KL weights: qw·sqrt(σ²+x²) with imatrix, else |x| (or 1)."""
    for j in range(32):
        xj = x[j0 + j]
        if mode == MODE_IMATRIX:
            w[j] = qw[j0 + j] * np.sqrt(fma32(xj, xj, sigma2))
        elif mode == MODE_UNIFORM:
            w[j] = F(1.0)
        else:
            w[j] = abs(xj)


@njit(nogil=True, cache=True)
def _ls_score(x, j0, w, d, ils):
    """Σ w·(dl·g - x)² over the block's pairs at block scale ils (fused as GCC did)."""
    dl = d * F(ils)
    idl = F(1.0) / dl if dl != 0 else F(0.0)
    score = F(0.0)
    for j in range(0, 32, 2):
        g = _index(idl, x[j0 + j], x[j0 + j + 1], w[j], w[j + 1])
        diff1 = fma32(GRID[g, 0], dl, -x[j0 + j])
        diff2 = fma32(GRID[g, 1], dl, -x[j0 + j + 1])
        score = score + fma32(w[j] * diff1, diff1, w[j + 1] * diff2 * diff2)
    return score


# row: d:f16 | blocks (86 bytes): scales_h:u16 (bits 2i..2i+1: high 2 bits of scale of 32-block
#   i) | scales_l:u8[4] (block i: byte i%4, nibble i/4; scale = ls - 32) | qs:u8[64] (pair j of
#   block i: low 4 bits of its grid index in qs[16*(i/2) + j], nibble i%2) | qh:u8[16] (bit 4 of
#   the grid index of pair j of block i: qh[j] bit i)
@njit(nogil=True, cache=True)
def _iq2kl_row(out, x, qw, mode):
    nb = x.shape[0] // QK
    weight = np.empty(32, np.float32)
    scales = np.empty(8 * nb, np.float32)
    out[:] = 0
    max_scale = F(0.0)
    max_abs_scale = F(0.0)
    for ibl in range(nb):
        sigma2 = sum_sq(x, ibl * QK, QK) * F(2.25 / QK)
        for ib in range(8):
            j0 = ibl * QK + 32 * ib
            _weights(weight, x, qw, j0, sigma2, mode)
            d = _block_scale(x, j0, weight)
            scales[8 * ibl + ib] = d
            if abs(d) > max_abs_scale:
                max_abs_scale = abs(d)
                max_scale = d
    if max_abs_scale == 0:
        return
    d = -max_scale / F(32.0)
    idd = F(1.0) / d
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for ibl in range(nb):
        o = 2 + 86 * ibl
        sigma2 = sum_sq(x, ibl * QK, QK) * F(2.25 / QK)
        for ib in range(8):
            j0 = ibl * QK + 32 * ib
            _weights(weight, x, qw, j0, sigma2, mode)
            ls = max(-32, min(31, nearest_int_mul(idd, scales[8 * ibl + ib])))
            best_score = F(3.4028234663852886e38)
            best_ls = ls
            for ils in range(max(-32, ls - 1), min(31, ls + 1) + 1):
                score = _ls_score(x, j0, weight, d, ils)
                if score < best_score:
                    best_score = score
                    best_ls = ils
            ls = best_ls
            out[o + 2 + ib % 4] |= ((ls + 32) & 0xF) << (4 * (ib // 4))
            sh = ((ls + 32) >> 4) << (2 * ib)
            out[o] |= sh & 0xFF
            out[o + 1] |= sh >> 8
            if ls == 0:
                continue
            idl = F(1.0) / (d * F(ls))
            for j in range(16):
                x1 = x[j0 + 2 * j]
                x2 = x[j0 + 2 * j + 1]
                g = _index(idl, x1, x2, weight[2 * j], weight[2 * j + 1])
                out[o + 6 + 16 * (ib // 2) + j] |= (g & 0xF) << (4 * (ib % 2))
                out[o + 70 + j] |= (g >> 4) << ib
                q1 = F(np.int64(GRID[g, 0]) * ls)
                q2 = F(np.int64(GRID[g, 1]) * ls)
                wq1 = weight[2 * j] * q1
                wq2 = weight[2 * j + 1] * q2
                sumqx = sumqx + fma32(wq1, x1, wq2 * x2)
                sumq2 = sumq2 + fma32(wq1, q1, wq2 * q2)
    if sumq2 > 0:
        d = sumqx / sumq2
    put_fp16(out, 0, F(1.025) * d)


@njit(nogil=True, cache=True, parallel=True)
def _quant_rows(out, x, qw, mode):
    """out (rows, row_bytes) from x (rows, n); qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        w = qw
        if mode == MODE_IMATRIX:
            w = np.empty_like(qw)
            sanitize_weights(w, qw, x[r], 32)
        _iq2kl_row(out[r], x[r], w, mode)


@njit(nogil=True, cache=True, parallel=True)
def _dequant(y, raw):
    for r in prange(raw.shape[0]):
        d = get_fp16(raw[r], 0)
        for ibl in range(y.shape[1] // QK):
            o = 2 + 86 * ibl
            sh = np.int64(raw[r, o]) | (np.int64(raw[r, o + 1]) << 8)
            for ib in range(8):
                ls = (np.int64(raw[r, o + 2 + ib % 4]) >> (4 * (ib // 4))) & 0xF
                ls |= ((sh >> (2 * ib)) & 3) << 4
                dl = d * F(ls - 32)
                for j in range(16):
                    g = (raw[r, o + 6 + 16 * (ib // 2) + j] >> (4 * (ib % 2))) & 0xF
                    g |= ((raw[r, o + 70 + j] >> ib) & 1) << 4
                    e = QK * ibl + 32 * ib + 2 * j
                    y[r, e] = dl * GRID[g, 0]
                    y[r, e + 1] = dl * GRID[g, 1]


QUANT = {"iq2_kl": quantizer("iq2_kl", _quant_rows)}
DEQUANT = {"iq2_kl": dequantizer("iq2_kl", _dequant)}
