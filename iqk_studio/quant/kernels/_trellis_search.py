"""Shared numba pieces of the trellis quantizers (ik_llama.cpp QuantizerIQKT, AVX2 build): row
weights, the codebook search of one 32-block and its least-squares scale.

Float order as the reference: scores and sums use the AVX2 lane layout and horizontal-sum trees
of hsum_float_8x8 / hsum_float_4x8 / hsum_float_8; fused multiply-adds exactly where GCC 12
(-O3 -march=native, znver3 tuning) fused them, read from -fdump-tree-optimized.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant.common import fma32
from iqk_studio.quant.kernels import MODE_IMATRIX, MODE_UNIFORM
from iqk_studio.quant.kernels._trellis_cb import bin5

F = np.float32
# 4-wide groups: lane of offset o (0..7) in a step of 8 points, hsum_float_4x8 output order
_LANE4 = (0, 4, 1, 5, 2, 6, 3, 7)


@njit(nogil=True, cache=True, error_model="numpy")
def set_weights(w, x, qw, mode, fused):
    """QuantizerIQKT::set_weights with sigma2_scale 2 (all four types). fused: IQ3_KT's inlined copy,
    where GCC fused x² into sqrt(σ² + x²) and the block Σx²."""
    eps2 = F(1e-14)
    for ibl in range(x.shape[0] // 256):
        o = 256 * ibl
        sumx2 = F(0.0)
        for j in range(256):
            sumx2 += x[o + j] * x[o + j]
        if mode == MODE_UNIFORM:
            w[o:o + 256] = F(1.0)
            continue
        if sumx2 < eps2 * F(256.0):
            w[o:o + 256] = F(1e-4)
            continue
        sigma2 = (F(2.0) * sumx2) / F(256.0)
        if mode != MODE_IMATRIX:
            s4 = F(0.25) * sigma2
            for j in range(256):
                w[o + j] = fma32(x[o + j], x[o + j], s4)
            continue
        for b in range(o, o + 256, 32):
            swx = F(0.0)
            sw2 = F(0.0)
            sx2 = F(0.0)
            for j in range(b, b + 32):
                xx = x[j] * x[j]
                if fused:
                    wj = qw[j] * np.sqrt(fma32(x[j], x[j], sigma2))
                    sx2 = fma32(x[j], x[j], sx2)
                else:
                    wj = qw[j] * np.sqrt(sigma2 + xx)
                    sx2 = xx + sx2
                w[j] = wj
                swx = fma32(wj, abs(x[j]), swx)
                sw2 = fma32(wj, wj, sw2)
            if sx2 < eps2 or sw2 < eps2 or swx < eps2:
                w[b:b + 32] = F(1e-4)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _take(lb, li, lane, s, p):
    # one AVX2 lane: index where score < best; best = _mm256_min_ps(best, score)
    if s < lb[lane]:
        li[lane] = p
    lb[lane] = lb[lane] if lb[lane] < s else s


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _pick(lb, li):
    # the reference's final scan of the 8 lanes (strict <, lane order)
    best = F(np.inf)
    jbest = -1
    for i in range(8):
        if lb[i] < best:
            best = lb[i]
            jbest = li[i]
    return jbest


@njit(nogil=True, cache=True, error_model="numpy")
def find_match8(out, d, xb, wb, values, mids, start, members, cvals):
    """out[0:4] = codes of the 4 groups of 8 of one 32-block for scale d: bin of x/d by the mids,
    then the weighted-nearest candidate of that bin (or of the whole book if the bin is empty)."""
    if d == 0:
        out[0:4] = 0
        return
    inv = F(1.0) / d
    vx = np.empty(8, dtype=np.float32)
    vw = np.empty(8, dtype=np.float32)
    lb = np.empty(8, dtype=np.float32)
    li = np.empty(8, dtype=np.int64)
    for g in range(4):
        u = 0
        for k in range(8):
            vx[k] = inv * xb[8 * g + k]
            vw[k] = wb[8 * g + k]
            if vx[k] > mids[k]:
                u |= 1 << k
        s0 = start[u]
        n = start[u + 1] - s0
        book = cvals[s0:s0 + n] if n > 0 else values
        lb[:] = np.inf
        li[:] = -1
        for p in range(book.shape[0]):
            a0 = book[p, 0] - vx[0]
            a1 = book[p, 1] - vx[1]
            a2 = book[p, 2] - vx[2]
            a3 = book[p, 3] - vx[3]
            a4 = book[p, 4] - vx[4]
            a5 = book[p, 5] - vx[5]
            a6 = book[p, 6] - vx[6]
            a7 = book[p, 7] - vx[7]
            s = (((vw[0] * (a0 * a0) + vw[4] * (a4 * a4)) + (vw[2] * (a2 * a2) + vw[6] * (a6 * a6)))
                 + ((vw[1] * (a1 * a1) + vw[5] * (a5 * a5)) + (vw[3] * (a3 * a3) + vw[7] * (a7 * a7))))
            _take(lb, li, p & 7, s, p)
        j = _pick(lb, li)
        if j < 0:  # the reference aborts (NaN input); keep code 0
            out[g] = 0
        else:
            out[g] = members[s0 + j] if n > 0 else j


@njit(nogil=True, cache=True, error_model="numpy")
def find_match4(out, d, xb, wb, start, members, cvals):
    """out[0:8] = codes of the 8 groups of 4 of one 32-block for scale d (IQ4_KT): bin5 of x/d per
    dimension (625 bins), then the weighted-nearest candidate of that bin."""
    if d == 0:
        out[0:8] = 0
        return
    inv = F(1.0) / d
    vx = np.empty(4, dtype=np.float32)
    vw = np.empty(4, dtype=np.float32)
    lb = np.empty(8, dtype=np.float32)
    li = np.empty(8, dtype=np.int64)
    for g in range(8):
        u = 0
        m = 1
        for k in range(4):
            vx[k] = inv * xb[4 * g + k]
            vw[k] = wb[4 * g + k]
            u += m * bin5(vx[k])
            m *= 5
        s0 = start[u]
        n = start[u + 1] - s0
        lb[:] = np.inf
        li[:] = -1
        for p in range(n):
            a0 = cvals[s0 + p, 0] - vx[0]
            a1 = cvals[s0 + p, 1] - vx[1]
            a2 = cvals[s0 + p, 2] - vx[2]
            a3 = cvals[s0 + p, 3] - vx[3]
            s = (vw[0] * (a0 * a0) + vw[2] * (a2 * a2)) + (vw[1] * (a1 * a1) + vw[3] * (a3 * a3))
            _take(lb, li, _LANE4[p & 7], s, p)
        j = _pick(lb, li)
        out[g] = members[s0 + j] if j >= 0 else 0  # empty bin / NaN: the reference aborts


@njit(nogil=True, cache=True, error_model="numpy")
def best_scale(xb, wb, values, idx, group):
    """(Σwqx/Σwq², (Σwqx)²/Σwq²) of a 32-block with codes idx: 8 FMA lanes over 4 steps, then
    hsum_float_8 = ((c0+c4)+(c2+c6)) + ((c1+c5)+(c3+c7)); (0, 0) when Σwq² <= 0."""
    cx = np.zeros(8, dtype=np.float32)
    c2 = np.zeros(8, dtype=np.float32)
    for step in range(0, 32, 8):
        for j in range(8):
            e = step + j
            q = values[idx[e // group], e % group]
            qw = q * wb[e]
            cx[j] = fma32(qw, xb[e], cx[j])
            c2[j] = fma32(qw, q, c2[j])
    sqx = ((cx[0] + cx[4]) + (cx[2] + cx[6])) + ((cx[1] + cx[5]) + (cx[3] + cx[7]))
    sq2 = ((c2[0] + c2[4]) + (c2[2] + c2[6])) + ((c2[1] + c2[5]) + (c2[3] + c2[7]))
    if sq2 > 0:
        return sqx / sq2, sqx * sqx / sq2
    return F(0.0), F(0.0)
