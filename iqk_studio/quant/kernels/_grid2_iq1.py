"""IQ1_S and IQ1_M quantizer kernels (ik_llama.cpp 8337e4cd3 ggml-quants.c quantize_row_iq1_s_impl,
quantize_row_iq1_m_impl); the wrappers and QUANT entries live in grid_q2. An IQ1_M 16-block with
all |x| < 1e-7 keeps the shift bits last chosen at its position within the same call, as the C
does (they also enter d); before any, the C reads uninitialised memory, here 0."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, fp32_to_fp16, nearest_int, put_fp16
from iqk_studio.quant.kernels._grid2_common import (
    NO_NEIGHBOUR,
    ZERO_BLOCK,
    argsort_stable,
    level_key,
)

F = np.float32
DELTA = F(0.125)  # IQ1S_DELTA = IQ1M_DELTA
# x_p = (-1+δ, δ, 1+δ), x_m = (-1-δ, -δ, 1-δ): the three values of a shifted grid
XP = np.array([-1 + 0.125, 0.125, 1 + 0.125], np.float32)
XM = np.array([-1 - 0.125, -0.125, 1 - 0.125], np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def iq1_best_neighbour(L, o, codes, nb_off, nb_idx, u, xb, w, scale, xg):
    """ggml iq1_find_best_neighbour2: the neighbour of u minimising sum w·(scale·xg[l] - x)²
    (fused like iq2's); writes its levels to L[o:o+8]. -1 if none is finite (the reference then
    scans the whole grid reading out of bounds, and aborts if that finds nothing either)."""
    best = F(np.inf)
    gi = -1
    for t in range(nb_off[u], nb_off[u + 1]):
        j = nb_idx[t]
        d2 = F(0.0)
        for i in range(8):
            diff = fma32(scale, xg[(codes[j, i] - 1) // 2], -xb[o + i])
            d2 = fma32(w[o + i] * diff, diff, d2)
        if d2 < best:
            best = d2
            gi = j
    if gi >= 0:
        for i in range(8):
            L[o + i] = (codes[gi, i] - 1) // 2
    return gi


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
            gi = iq1_best_neighbour(L, 8 * k, codes, nb_off, nb_idx, u, xb, w, scale, xx)
            if gi < 0:
                return scale, shift, NO_NEIGHBOUR
        index[k] = gi
    if not on_grid:
        sqx = F(0.0)
        sq2 = F(0.0)
        for k in range(n // 8):
            for j in range(8):
                q = xx[(codes[index[k], j] - 1) // 2]
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


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1m_split(s, idx, xb, w):
    """Best (scale, i1, i2, k) over every split of the sorted 16 values and the 4 shift pairs
    k = (first half, second half) in (+,+), (+,-), (-,+), (-,-); prefix sums per half (unfused
    here), combined in the order of GCC's 4-lane SLP code."""
    argsort_stable(idx, xb, 16)
    s[:, 0] = 0
    for j in range(16):
        i = idx[j]
        h = 0 if i < 8 else 1
        s[0 + h, j + 1] = s[0 + h, j] + w[i] * xb[i]  # sumx1 / sumx2
        s[2 + h, j + 1] = s[2 + h, j] + w[i]  # sumw1 / sumw2
        s[1 - h, j + 1] = s[1 - h, j]
        s[3 - h, j + 1] = s[3 - h, j]
    best = F(0.0)
    scale = F(0.0)
    b1, b2, bk = -1, -1, -1
    for i1 in range(17):
        for i2 in range(i1, 17):
            for k in range(4):
                xa = XP if k < 2 else XM
                xc = XP if k % 2 == 0 else XM
                t = fma32(s[0, 16] - s[0, i2], xa[2],
                          s[0, i1] * xa[0] + (s[0, i2] - s[0, i1]) * xa[1])
                t = t + s[1, i1] * xc[0] + (s[1, i2] - s[1, i1]) * xc[1]
                sqx = fma32(s[1, 16] - s[1, i2], xc[2], t)
                wb1 = (s[2, i2] - s[2, i1]) * F(0.125) * F(0.125)
                wb2 = (s[3, i2] - s[3, i1]) * F(0.125) * F(0.125)
                wc1 = s[2, 16] - s[2, i2]
                wc2 = s[3, 16] - s[3, i2]
                t = fma32(wc1 * xa[2], xa[2], s[2, i1] * xa[0] * xa[0] + wb1)
                t = t + s[3, i1] * xc[0] * xc[0] + wb2
                sq2 = fma32(wc2 * xc[2], xc[2], t)
                if sq2 > 0 and sqx * sqx > best * sq2:
                    scale = sqx / sq2
                    best = scale * sqx
                    b1, b2, bk = i1, i2, k
    return scale, b1, b2, bk


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1m_refit(xb, w, L):
    """Scale and shift pair refitted to the final levels (plain running sums here)."""
    sqx = np.zeros(4, F)
    sq2 = np.zeros(4, F)
    for j in range(16):
        qp = XP[L[j]]
        qm = XM[L[j]]
        wx = w[j] * xb[j]
        sqx[0] += wx * qp
        sq2[0] += w[j] * qp * qp
        sqx[3] += wx * qm
        sq2[3] += w[j] * qm * qm
        a, b = (1, 2) if j < 8 else (2, 1)
        sqx[a] += wx * qp
        sq2[a] += w[j] * qp * qp
        sqx[b] += wx * qm
        sq2[b] += w[j] * qm * qm
    return sqx, sq2


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1m_block(index, xb, w, L, idx, s, codes, kmap, nb_off, nb_idx):
    """iq1m_process_1block: grid indices into index[0:2]; (scale, shift pair k, status)."""
    scale, b1, b2, bk = _iq1m_split(s, idx, xb, w)
    if b1 < 0:
        return scale, bk, ZERO_BLOCK
    for j in range(16):
        L[idx[j]] = 0 if j < b1 else (1 if j < b2 else 2)
    if scale < 0:
        for j in range(16):
            L[j] = 2 - L[j]
        scale = -scale
        bk = 3 - bk
    on_grid = True
    for k in range(2):
        xx = (XP if bk < 2 else XM) if k == 0 else (XP if bk % 2 == 0 else XM)
        u = level_key(L, 8 * k)
        gi = kmap[u]
        if gi < 0:
            on_grid = False
            gi = iq1_best_neighbour(L, 8 * k, codes, nb_off, nb_idx, u, xb, w, scale, xx)
            if gi < 0:
                return scale, bk, NO_NEIGHBOUR
        index[k] = gi
    if not on_grid:
        sqx, sq2 = _iq1m_refit(xb, w, L)
        best = F(0.0)
        for k in range(4):
            if sqx[k] > 0 and sq2[k] > 0 and sqx[k] * sqx[k] > best * sq2[k]:
                scale = sqx[k] / sq2[k]
                best = scale * sqx[k]
                bk = k
    return scale, bk, 0


# ---------------------------------------------------------------- IQ1_M (256, 56 B)
# qs:u8[32] (low 8 index bits) | qh:u8[16] (per 16-block: 3 high bits per 8-group in each
# nibble, bit 3 of a nibble = shift -δ) | scales:u16[4] (3-bit scale per 16-block in bits 0-11,
# the f16 d in the top nibbles); y = d·(2·scale+1)·(grid ± δ)
_MASKS = np.array([0x00, 0x80, 0x08, 0x88], np.int64)


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1m_d(y, xbl, qwb, sig, scales, shifts, max_scale, codes, w):
    """Block scales and shift bits into y, then d = Σw·q·x / Σw·q² (fused running sums) over the
    chosen points, stored ×1.085 as f16 in the scales' top nibbles."""
    d = max_scale / F(15.0)
    id_ = F(1.0) / d
    sqx = F(0.0)
    sq2 = F(0.0)
    sc = np.zeros(4, np.int64)
    for ib in range(16):
        li = max(0, min(7, nearest_int(F(0.5) * fma32(id_, scales[ib], F(-1.0)))))
        sc[ib // 4] |= li << (3 * (ib % 4))
        y[32 + ib] |= _MASKS[shifts[ib]]
        lf = F(2 * li + 1)
        for i in range(16):
            xi = xbl[16 * ib + i]
            w[i] = qwb[16 * ib + i] * np.sqrt(fma32(xi, xi, sig[ib // 2]))
        for k in range(2):
            sh = shifts[ib]
            xx = (XP if sh < 2 else XM) if k == 0 else (XP if sh % 2 == 0 else XM)
            gi = np.int64(y[2 * ib + k]) | ((np.int64(y[32 + ib]) >> (4 * k)) & 7) << 8
            for j in range(8):
                q = xx[(codes[gi, j] - 1) // 2] * lf
                wq = w[8 * k + j] * q
                sqx = fma32(wq, xbl[16 * ib + 8 * k + j], sqx)
                sq2 = fma32(wq, q, sq2)
    if sq2 > 0:
        d = sqx / sq2
    h = fp32_to_fp16(d * F(1.085))
    sc[0] |= (h & 0x000F) << 12
    sc[1] |= (h & 0x00F0) << 8
    sc[2] |= (h & 0x0F00) << 4
    sc[3] |= h & 0xF000
    for t in range(4):
        y[48 + 2 * t] = sc[t] & 255
        y[49 + 2 * t] = sc[t] >> 8


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq1m_search(out, x, qw, codes, kmap, nb_off, nb_idx, scales, shifts, sig, status):
    """Grid indices of every 16-block into out; scales, shift pairs (-1: skipped block) and the
    per-32 σ² into (rows, nbl, ...) arrays for the second pass."""
    nbl = x.shape[1] // 256
    for r in prange(x.shape[0]):
        w = np.empty(16, F)
        L = np.zeros(16, np.int8)
        idx = np.zeros(16, np.int64)
        s = np.zeros((4, 17), F)
        index = np.zeros(2, np.int64)
        for ibl in range(nbl):
            xbl = x[r, 256 * ibl:256 * ibl + 256]
            qwb = qw[256 * ibl:256 * ibl + 256]
            y = out[r, 56 * ibl:56 * ibl + 56]
            y[:] = 0
            sg = sig[r, ibl]
            for ib in range(8):
                sumx2 = F(0.0)
                for i in range(32):
                    sumx2 += xbl[32 * ib + i] * xbl[32 * ib + i]
                sg[ib] = sumx2 * F(1.5) / F(32.0)
            for ib in range(16):
                xb = xbl[16 * ib:16 * ib + 16]
                sumwx = F(0.0)
                mx = abs(xb[0])
                for i in range(16):
                    w[i] = qwb[16 * ib + i] * np.sqrt(fma32(xb[i], xb[i], sg[ib // 2]))
                for i in range(1, 16):  # from 1, as in the C
                    mx = max(mx, abs(xb[i]))
                    sumwx = fma32(abs(xb[i]), w[i], sumwx)
                scales[r, ibl, ib] = 0
                shifts[r, ibl, ib] = -1
                if mx < F(1e-7):
                    continue
                if sumwx == 0:
                    for i in range(16):
                        w[i] = xb[i] * xb[i]
                sc, bk, st = _iq1m_block(index, xb, w, L, idx, s, codes, kmap, nb_off, nb_idx)
                if st:
                    status[r] = st
                y[2 * ib] = index[0] & 255
                y[2 * ib + 1] = index[1] & 255
                y[32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
                shifts[r, ibl, ib] = bk
                scales[r, ibl, ib] = sc


@njit(nogil=True, cache=True, error_model="numpy")
def _iq1m_carry(shifts):
    """A skipped block reuses the shift pair last set at its position (the C's shifts[] buffer
    lives across the super-blocks and rows of one call); before any, 0."""
    last = np.zeros(16, np.int64)
    for r in range(shifts.shape[0]):
        for ibl in range(shifts.shape[1]):
            for ib in range(16):
                if shifts[r, ibl, ib] < 0:
                    shifts[r, ibl, ib] = last[ib]
                else:
                    last[ib] = shifts[r, ibl, ib]


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq1m_scales(out, x, qw, codes, scales, shifts, sig):
    nbl = x.shape[1] // 256
    for r in prange(x.shape[0]):
        w = np.empty(16, F)
        for ibl in range(nbl):
            max_scale = F(0.0)
            for ib in range(16):
                sc = scales[r, ibl, ib]
                max_scale = max_scale if max_scale > sc else sc
            if max_scale == 0:
                continue
            _iq1m_d(out[r, 56 * ibl:56 * ibl + 56], x[r, 256 * ibl:256 * ibl + 256],
                    qw[256 * ibl:256 * ibl + 256], sig[r, ibl], scales[r, ibl], shifts[r, ibl],
                    max_scale, codes, w)


def iq1_m_rows(out, x, qw, codes, kmap, nb_off, nb_idx, status):
    """Three passes: the parallel grid search, the shift carry-over in row order, the parallel
    block scales and d."""
    shape = (x.shape[0], x.shape[1] // 256)
    scales = np.zeros(shape + (16,), F)
    shifts = np.zeros(shape + (16,), np.int64)
    sig = np.zeros(shape + (8,), F)
    _iq1m_search(out, x, qw, codes, kmap, nb_off, nb_idx, scales, shifts, sig, status)
    _iq1m_carry(shifts)
    _iq1m_scales(out, x, qw, codes, scales, shifts, sig)
