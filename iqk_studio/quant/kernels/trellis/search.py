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
from iqk_studio.quant.kernels.trellis.codebook import bin5

F = np.float32
# candidate offset (within a step of 8) held by AVX2 lane 0..7: identity for 8-wide groups,
# hsum_float_4x8's interleave for 4-wide groups (lane order 0, 2, 4, 6, 1, 3, 5, 7)
_ORDER8 = np.arange(8, dtype=np.int64)
_ORDER4 = np.array([0, 2, 4, 6, 1, 3, 5, 7], dtype=np.int64)
_RANK4 = np.array([0, 4, 1, 5, 2, 6, 3, 7], dtype=np.int64)  # lane of offset o


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


@njit(nogil=True, cache=True, error_model="numpy")
def _select_lanes(sc, n, order):
    """The reference's pick among n scores (n % 8 == 0): AVX2 lane o keeps the index where
    score < best and best = _mm256_min_ps(best, score); then the lanes are scanned in `order`
    with strict <. Returns -1 when no score is < inf (the reference aborts)."""
    lb = np.full(8, np.inf, dtype=np.float32)
    li = np.full(8, -1, dtype=np.int64)
    for j in range(0, n, 8):
        for o in range(8):
            s = sc[j + o]
            li[o] = j + o if s < lb[o] else li[o]
            lb[o] = lb[o] if lb[o] < s else s
    best = F(np.inf)
    jbest = -1
    for L in range(8):
        o = order[L]
        if lb[o] < best:
            best = lb[o]
            jbest = li[o]
    return jbest


@njit(nogil=True, cache=True, error_model="numpy")
def _select(sc, n, order, rank):
    """_select_lanes, fast when every score is in [+0, inf]: their bit patterns order like the
    floats (integer min vectorizes), and the lane scan then picks, among the scores equal to the
    minimum, the lowest lane rank, then the first index. Anything else goes the exact lane way."""
    si = sc.view(np.int32)
    lo = np.int32(0x7FFFFFFF)
    hi = np.int32(-1)
    for p in range(n):
        lo = min(lo, si[p])
        hi = max(hi, si[p])
    if lo < 0 or hi > 0x7F800000:
        return _select_lanes(sc, n, order)
    if lo == 0x7F800000:
        return -1
    best_r = 8
    best_p = -1
    for p in range(n):
        if si[p] == lo and rank[p & 7] < best_r:
            best_r = rank[p & 7]
            best_p = p
    return best_p


@njit(nogil=True, cache=True, error_model="numpy")
def _scores8(sc, c, vx, vw):
    # c (8, n) dimension-major candidates; hsum_float_8x8 lane tree per candidate. 1-D views
    # indexed from 0 let LLVM drop the negative-index wraparound and vectorize.
    n = c.shape[1]
    c0, c1, c2, c3, c4, c5, c6, c7 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    x0, x1, x2, x3, x4, x5, x6, x7 = vx[0], vx[1], vx[2], vx[3], vx[4], vx[5], vx[6], vx[7]
    w0, w1, w2, w3, w4, w5, w6, w7 = vw[0], vw[1], vw[2], vw[3], vw[4], vw[5], vw[6], vw[7]
    for p in range(n):
        a0 = c0[p] - x0
        a1 = c1[p] - x1
        a2 = c2[p] - x2
        a3 = c3[p] - x3
        a4 = c4[p] - x4
        a5 = c5[p] - x5
        a6 = c6[p] - x6
        a7 = c7[p] - x7
        sc[p] = (((w0 * (a0 * a0) + w4 * (a4 * a4)) + (w2 * (a2 * a2) + w6 * (a6 * a6)))
                 + ((w1 * (a1 * a1) + w5 * (a5 * a5)) + (w3 * (a3 * a3) + w7 * (a7 * a7))))


@njit(nogil=True, cache=True, error_model="numpy")
def _scores4(sc, c, vx, vw):
    # c (4, n); hsum_float_4x8 tree per candidate
    n = c.shape[1]
    c0, c1, c2, c3 = c[0], c[1], c[2], c[3]
    x0, x1, x2, x3 = vx[0], vx[1], vx[2], vx[3]
    w0, w1, w2, w3 = vw[0], vw[1], vw[2], vw[3]
    for p in range(n):
        a0 = c0[p] - x0
        a1 = c1[p] - x1
        a2 = c2[p] - x2
        a3 = c3[p] - x3
        sc[p] = (w0 * (a0 * a0) + w2 * (a2 * a2)) + (w1 * (a1 * a1) + w3 * (a3 * a3))


@njit(nogil=True, cache=True, error_model="numpy")
def find_match8(out, d, xb, wb, cb, sc):
    """out[0:4] = codes of the 4 groups of 8 of one 32-block for scale d: bin of x/d by the mids,
    then the weighted-nearest candidate of that bin (or of the whole book if the bin is empty).
    cb = (values, mids, start, members, cvt, vt); sc: float32 scratch >= len(values)."""
    _, mids, start, members, cvt, vt = cb
    if d == 0:
        out[0:4] = 0
        return
    inv = F(1.0) / d
    vx = np.empty(8, dtype=np.float32)
    vw = np.empty(8, dtype=np.float32)
    for g in range(4):
        u = 0
        for k in range(8):
            vx[k] = inv * xb[8 * g + k]
            vw[k] = wb[8 * g + k]
            if vx[k] > mids[k]:
                u |= 1 << k
        s0 = start[u]
        n = start[u + 1] - s0
        if n > 0:
            _scores8(sc, cvt[8 * s0:8 * (s0 + n)].reshape(8, n), vx, vw)
            j = _select(sc, n, _ORDER8, _ORDER8)
            out[g] = members[s0 + j] if j >= 0 else 0
        else:
            _scores8(sc, vt, vx, vw)
            j = _select(sc, vt.shape[1], _ORDER8, _ORDER8)
            out[g] = max(j, 0)  # j < 0: NaN input, the reference aborts


@njit(nogil=True, cache=True, error_model="numpy")
def find_match4(out, d, xb, wb, cb, sc):
    """out[0:8] = codes of the 8 groups of 4 of one 32-block for scale d (IQ4_KT): bin5 of x/d per
    dimension (625 bins), then the weighted-nearest candidate of that bin.
    cb = (values, start, members, cvt)."""
    _, start, members, c = cb
    if d == 0:
        out[0:8] = 0
        return
    inv = F(1.0) / d
    vx = np.empty(4, dtype=np.float32)
    vw = np.empty(4, dtype=np.float32)
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
        _scores4(sc, c[4 * s0:4 * (s0 + n)].reshape(4, n), vx, vw)
        j = _select(sc, n, _ORDER4, _RANK4)
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
