"""IQ4_KSS: bit-exact port of ik_llama.cpp's quantize_iq4_kss (with prune_iq4ks and the scramble
table) and dequantize_row_iq4_kss (iqk_quantize.cpp, commit 8337e4cd3; quant-formats.md §6.13).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import amax_signed, fma32, nearest_int_mul
from iqk_studio.quant.kernels import MODE_IMATRIX
from iqk_studio.quant.kernels.iqk.common import (
    IQ4K,
    W_X2,
    F,
    best_index_iq4nl,
    block_weights,
    get_f32,
    put_f32,
    row_importance,
    scramble_inverse,
    sigma2_of,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

_FLT_MAX = F(3.4028234663852886e38)
_POP4 = np.array([bin(i).count("1") for i in range(16)], dtype=np.int64)
# prune_iq4ks' candidates for a nibble q, in its search order: q-2..q+2 in 0..15, not q, and
# with a popcount of the other parity (so that moving one nibble flips the code's parity)
_CAND = np.full((16, 4), -1, dtype=np.int64)
_NCAND = np.zeros(16, dtype=np.int64)
for _q in range(16):
    _c = [i for i in range(max(_q - 2, 0), min(_q + 2, 15) + 1)
          if i != _q and (_POP4[i] - _POP4[_q]) % 2]
    _CAND[_q, :len(_c)] = _c
    _NCAND[_q] = len(_c)


@njit(nogil=True, cache=True, error_model="numpy")
def _popcount(v):
    """Set bits of a 16-bit value."""
    return _POP4[v & 15] + _POP4[(v >> 4) & 15] + _POP4[(v >> 8) & 15] + _POP4[(v >> 12) & 15]


@njit(nogil=True, cache=True, error_model="numpy")
def prune_iq4ks(v, base, xv, wv, dl):
    """Make the 4 nibbles of v have an even number of set bits by moving the one nibble whose
    change (by at most 2 steps, to an odd-popcount-distance index) costs least weighted error."""
    if _popcount(v) % 2 == 0:
        return v
    best_score = _FLT_MAX
    jbest = -1
    bestq = 0
    for j in range(4):
        q = (v >> (4 * j)) & 0xF
        diff0 = fma32(dl, IQ4K[q], -xv[j])  # the reference uses the base table here
        for c in range(_NCAND[q]):
            iq = _CAND[q, c]
            diff1 = fma32(dl, IQ4K[base + iq], -xv[j])
            score = wv[j] * fma32(diff1, diff1, -(diff0 * diff0))
            if score < best_score:
                best_score = score
                jbest = j
                bestq = iq
    return (v & ~(0xF << (4 * jbest))) | (bestq << (4 * jbest))


@njit(nogil=True, cache=True, error_model="numpy")
def _gather4(xv, wv, xb, w, k):
    """Elements 2k, 2k+16, 2k+1, 2k+17 of a 32-block: the 4 nibbles of uint16 word k."""
    for j in range(4):
        e = 2 * k + (j >> 1) + 16 * (j & 1)
        xv[j] = xb[e]
        wv[j] = w[e]


@njit(nogil=True, cache=True, error_model="numpy")
def _trial(xb, w, base, id_, xv, wv):
    """Σw·q·x and Σw·q² of the pruned p (id·x) and m (-id·x) labels on one table half."""
    this_d = F(1.0) / id_
    sqp = F(0.0)
    s2p = F(0.0)
    sqm = F(0.0)
    s2m = F(0.0)
    for k in range(8):
        _gather4(xv, wv, xb, w, k)
        vp = 0
        vm = 0
        for j in range(4):
            al = id_ * xv[j]
            vp |= best_index_iq4nl(IQ4K, base, al) << (4 * j)
            vm |= best_index_iq4nl(IQ4K, base, -al) << (4 * j)
        vp = prune_iq4ks(vp, base, xv, wv, this_d)
        vm = prune_iq4ks(vm, base, xv, wv, this_d)
        for j in range(4):
            q = IQ4K[base + ((vp >> (4 * j)) & 0xF)]
            t = wv[j] * q
            sqp = fma32(xv[j], t, sqp)
            s2p = fma32(q, t, s2p)
            q = IQ4K[base + ((vm >> (4 * j)) & 0xF)]
            t = wv[j] * q
            sqm = fma32(xv[j], t, sqm)
            s2m = fma32(q, t, s2m)
    return sqp, s2p, sqm, s2m


@njit(nogil=True, cache=True, error_model="numpy")
def _block_scale(xb, w, xv, wv):
    amax, mx = amax_signed(xb, 0, xb.shape[0])
    if amax < F(1e-16):
        return F(0.0)
    best = F(0.0)
    d = -mx / IQ4K[0]
    for itry in range(-7, 8):
        for base in (0, 16):
            sqp, s2p, sqm, s2m = _trial(xb, w, base, (F(itry) + IQ4K[base]) / mx, xv, wv)
            if s2p > 0 and sqp * sqp > best * s2p:
                d = sqp / s2p
                best = d * sqp
            if s2m > 0 and sqm * sqm > best * s2m:
                d = sqm / s2m
                best = d * sqm
    return d


@njit(nogil=True, cache=True, error_model="numpy")
def _block_codes(q16, xb, w, d, ls, xv, wv, vs, sumqx, sumq2):
    """Labels for one 32-block at scale d·ls on the base or shifted half (smaller weighted mse),
    written as 8 scrambled uint16 words; returns the running row sums Σw·q·x and Σw·q²,
    q = v·ls."""
    dl = d * F(ls)
    idl = F(1.0) / dl
    mse_p = F(0.0)
    mse_m = F(0.0)
    for k in range(8):
        _gather4(xv, wv, xb, w, k)
        vp = 0
        vm = 0
        for j in range(4):
            al = idl * xv[j]
            vp |= best_index_iq4nl(IQ4K, 0, al) << (4 * j)
            vm |= best_index_iq4nl(IQ4K, 16, al) << (4 * j)
        vp = prune_iq4ks(vp, 0, xv, wv, dl)
        vm = prune_iq4ks(vm, 16, xv, wv, dl)
        for j in range(4):
            t = fma32(-dl, IQ4K[(vp >> (4 * j)) & 0xF], xv[j])
            mse_p = fma32(t, wv[j] * t, mse_p)
            t = fma32(-dl, IQ4K[16 + ((vm >> (4 * j)) & 0xF)], xv[j])
            mse_m = fma32(t, wv[j] * t, mse_m)
        vs[0, k] = vp
        vs[1, k] = vm
    sh = 1 if mse_m < mse_p else 0
    for k in range(8):
        _gather4(xv, wv, xb, w, k)
        for j in range(4):
            q = IQ4K[16 * sh + ((vs[sh, k] >> (4 * j)) & 0xF)] * F(ls)
            t = wv[j] * q
            sumqx = fma32(xv[j], t, sumqx)
            sumq2 = fma32(q, t, sumq2)
    sbyte = (ls + 127) | sh
    for k in range(8):
        word = (scramble_inverse(vs[sh, k]) << 1) | ((sbyte >> k) & 1)
        q16[2 * k] = word & 0xFF
        q16[2 * k + 1] = word >> 8
    return sumqx, sumq2


# ---- IQ4_KSS row: d:f32 | per 256: 8 x (32-block: 8 uint16 words)
# word k of block i: bit 0 = bit k of the block's IQ4_KS-style scale byte s; bits 1-15 = j with
# v = j ^ (j << 1) holding 4 nibbles (elements 2k, 2k+16, 2k+1, 2k+17) of an even-parity code;
# value d·((s & 254) - 127)·iq4k[16·(s & 1) + nibble].
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_kss_row(y, x, qw, mode):
    nbl = x.shape[0] // 256
    w = np.empty(32, dtype=np.float32)
    xv = np.empty(4, dtype=np.float32)
    wv = np.empty(4, dtype=np.float32)
    vs = np.empty((2, 8), dtype=np.int64)
    scales = np.empty(8 * nbl, dtype=np.float32)
    for k in range(y.shape[0]):
        y[k] = 0
    amax_scale = F(0.0)
    for ibl in range(nbl):
        xbl = x[256 * ibl:256 * ibl + 256]
        sigma2 = sigma2_of(xbl)
        for ib in range(8):
            xb = xbl[32 * ib:32 * ib + 32]
            qwb = qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32] if mode == MODE_IMATRIX else qw
            block_weights(w, xb, qwb, mode, sigma2, W_X2)
            d = _block_scale(xb, w, xv, wv)
            scales[8 * ibl + ib] = d
            amax_scale = max(amax_scale, abs(d))
    d = amax_scale / F(127.0)
    put_f32(y, 0, d)
    if d == 0:
        return
    id_ = F(1.0) / d
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for ibl in range(nbl):
        xbl = x[256 * ibl:256 * ibl + 256]
        sigma2 = sigma2_of(xbl)
        for ib in range(8):
            xb = xbl[32 * ib:32 * ib + 32]
            qwb = qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32] if mode == MODE_IMATRIX else qw
            block_weights(w, xb, qwb, mode, sigma2, W_X2)
            l2 = max(0, min(127, nearest_int_mul(fma32(id_, scales[8 * ibl + ib], F(127.0)),
                                                 F(0.5))))
            q16 = y[4 + 128 * ibl + 16 * ib:4 + 128 * ibl + 16 * ib + 16]
            sumqx, sumq2 = _block_codes(q16, xb, w, d, 2 * l2 - 127, xv, wv, vs, sumqx, sumq2)
    if sumq2 > 0:
        put_f32(y, 0, sumqx / sumq2 * F(1.01))


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_kss_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq4_kss_row(out[r], x[r], row_importance(x[r], qw, mode, 32), mode)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_kss_dequant_rows(out, raw):
    for r in prange(raw.shape[0]):
        d = get_f32(raw[r], 0)
        for ib in range(out.shape[1] // 32):
            b = raw[r, 4 + 16 * ib:4 + 16 * ib + 16]
            y = out[r, 32 * ib:32 * ib + 32]
            s = 0
            for k in range(8):
                s |= (np.int64(b[2 * k]) & 1) << k
            dl = d * F((s & 254) - 127)
            base = 16 * (s & 1)
            for k in range(8):
                a = (np.int64(b[2 * k]) | (np.int64(b[2 * k + 1]) << 8)) & 0xFFFE
                v = a ^ (a >> 1)
                for j in range(4):
                    y[2 * k + (j >> 1) + 16 * (j & 1)] = dl * IQ4K[base + ((v >> (4 * j)) & 0xF)]


QUANT = {"iq4_kss": quantizer("iq4_kss", iq4_kss_rows)}
DEQUANT = {"iq4_kss": dequantizer("iq4_kss", iq4_kss_dequant_rows)}
