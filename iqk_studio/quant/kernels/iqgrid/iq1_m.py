"""iq1_m (256-element super-blocks, 1.75 bpw): quantizer (ggml-quants.c quantize_row_iq1_m_impl,
imatrix only, neighbours.py) and dequantizer. A 16-block with all |x| < 1e-7 keeps the shift bits
last chosen at its position within the same call, as the C does (they also enter d); before any,
the C reads uninitialised memory, here 0."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, fp32_to_fp16, nearest_int
from iqk_studio.quant.kernels.iqgrid.iq1_s import XM, XP
from iqk_studio.quant.kernels.iqgrid.neighbours import (
    NO_NEIGHBOUR,
    ZERO_BLOCK,
    argsort_stable,
    best_neighbour,
    imatrix_quantizer,
    level_key,
)
from iqk_studio.quant.kernels.iqgrid.tables import grid_tables
from iqk_studio.quant.kernels.wrap import dequantizer

F = np.float32


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
        plus = bk < 2 if k == 0 else bk % 2 == 0  # this half's shift is +δ
        u = level_key(L, 8 * k)
        gi = kmap[u]
        if gi < 0:
            on_grid = False
            gi = best_neighbour(L, 8 * k, codes, nb_off, nb_idx, u, xb, w, scale, F(0.5),
                                F(-1.375) if plus else F(-1.625))
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
                q = xx[(np.int64(codes[gi, j]) - 1) >> 1] * lf
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


@njit(nogil=True, cache=True)
def _iq1_m_kernel(y, raw, d, grid):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 56 * ibl
            for ib in range(8):
                p = o + 48 + 2 * (ib // 2)
                sc = np.int32(raw[r, p]) | (np.int32(raw[r, p + 1]) << 8)
                for li in range(4):
                    s3 = (sc >> (6 * (ib % 2) + 3 * (li // 2))) & 7
                    dl = d[r, ibl] * np.float32(2 * s3 + 1)
                    qh = np.int32(raw[r, o + 32 + 2 * ib + li // 2]) >> (4 * (li % 2))
                    idx = np.int32(raw[r, o + 4 * ib + li]) | ((qh & 7) << 8)
                    delta = np.float32(-0.125) if qh & 8 else np.float32(0.125)
                    g = grid[idx]
                    for j in range(8):
                        y[r, 256 * ibl + 32 * ib + 8 * li + j] = dl * (np.float32(g[j]) + delta)


def _iq1_m_d(raw: np.ndarray) -> np.ndarray:
    sc = raw.reshape(raw.shape[0], -1, 56)[:, :, 48:56].copy().view("<u2").astype(np.uint16)
    u = (sc[..., 0] >> 12) | ((sc[..., 1] >> 8) & 0x00F0) | ((sc[..., 2] >> 4) & 0x0F00) | (
        sc[..., 3] & 0xF000)
    return u.astype(np.uint16).view(np.float16).astype(np.float32)


def _dequant(out, raw):
    _iq1_m_kernel(out, raw, _iq1_m_d(raw), grid_tables()["iq1s"])


QUANT = {"iq1_m": imatrix_quantizer("iq1_m", iq1_m_rows, "iq1s")}
DEQUANT = {"iq1_m": dequantizer("iq1_m", _dequant)}
