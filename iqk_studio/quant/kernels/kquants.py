"""256-block k-quants q4_K, q5_K, q6_K and iq4_xs: bit-exact ports of ggml-quants.c
(ik_llama.cpp 8337e4cd3), quant-formats.md §6.3, §6.4, §6.6; plus their dequantizers.
MODE_UNIFORM runs the imatrix code path (qkx3 + qp searches for q4_K/q5_K) with w = 1.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    get_fp16,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
    make_qx_quants_ggml_sc,
    nearest_int,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX
from iqk_studio.quant.kernels.legacy import (
    KVALUES_IQ4NL,
    _check_x,
    _iq4_labels,
    block_weights,
    iq4_block_scale,
    sum_sq,
)


@njit(nogil=True, cache=True, error_model="numpy")
def _pack_scale_min(sc, ls, lm, j):
    """6-bit scale ls and min lm of sub-block j into the 12-byte Q4_K/Q5_K `scales` (sc zeroed)."""
    if j < 4:
        sc[j] = ls
        sc[j + 4] = lm
    else:
        sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
        sc[j - 4] |= (ls >> 4) << 6
        sc[j] |= (lm >> 4) << 6


@njit(nogil=True, cache=True, error_model="numpy")
def get_scale_min_k4(j, sc):
    if j < 4:
        return sc[j] & 63, sc[j + 4] & 63
    return (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)


@njit(nogil=True, cache=True, error_model="numpy")
def _qk_superblock(yb, x, qw, mode, nmax, L, Laux):
    """Scales, mins and labels L (0..nmax) of one 256-block of Q4_K (nmax 15) / Q5_K (nmax 31);
    writes d, dmin and the 12 scale bytes at yb[0:16]."""
    w = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    mins = np.empty(8, np.float32)
    sc = yb[4:16]
    sc[:] = 0
    if mode == MODE_DEFAULT:  # quantize_row_q{4,5}_K_ref
        max_scale = F(0.0)
        max_min = F(0.0)
        for j in range(8):
            xs = x[32 * j:32 * j + 32]
            av_x = np.sqrt(sum_sq(xs) / F(32.0))
            for k in range(32):
                w[k] = av_x + abs(xs[k])
            if nmax == 15:
                s, m = make_qkx2_quants(xs, w, 15, L[32 * j:32 * j + 32], Laux, F(-1.0), F(0.1), 20)
            else:
                s, m = make_qkx2_quants(xs, w, 31, L[32 * j:32 * j + 32], Laux, F(-0.5), F(0.1), 15)
            scales[j] = s
            mins[j] = m
            if s > max_scale:
                max_scale = s
            if m > max_min:
                max_min = m
        inv_scale = F(63.0) / max_scale if max_scale > 0 else F(0.0)
        inv_min = F(63.0) / max_min if max_min > 0 else F(0.0)
        for j in range(8):
            ls = min(63, nearest_int_mul(inv_scale, scales[j]) & 0xFF)
            lm = min(63, nearest_int_mul(inv_min, mins[j]) & 0xFF)
            _pack_scale_min(sc, ls, lm, j)
        put_fp16(yb, 0, max_scale / F(63.0))
        put_fp16(yb, 2, max_min / F(63.0))
        return
    # quantize_row_q{4,5}_K_impl: imatrix (or uniform) weights, qkx3 + qp
    Ls = np.empty(8, np.uint8)
    Lm = np.empty(8, np.uint8)
    sw = np.empty(8, np.float32)
    sigma2 = F(2.0) * sum_sq(x) / F(256.0)
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        block_weights(w, xs, qw[32 * j:32 * j + 32], mode, sigma2, 1)
        sumw = F(0.0)
        for k in range(32):
            sumw += w[k]
        sw[j] = sumw
        s, m = make_qkx3_quants(xs, w, nmax, L[32 * j:32 * j + 32], Laux, F(-0.9), F(0.05), 36)
        scales[j] = s
        mins[j] = m
    d_block = make_qp_quants(scales, sw, 63, Ls)
    m_block = make_qp_quants(mins, sw, 63, Lm)
    for j in range(8):
        _pack_scale_min(sc, min(63, Ls[j]), min(63, Lm[j]), j)
    put_fp16(yb, 0, d_block)
    put_fp16(yb, 2, m_block)


@njit(nogil=True, cache=True, error_model="numpy")
def _qk_requant(yb, x, L, nmax):
    """Relabel every sub-block with the stored d·sc and dmin·m (keeps L where d·sc is 0)."""
    d = get_fp16(yb, 0)
    dmin = get_fp16(yb, 2)
    sc = yb[4:16]
    for j in range(8):
        s, m = get_scale_min_k4(j, sc)
        dj = d * F(s)
        if dj == 0:
            continue
        dm = dmin * F(m)
        for k in range(32):
            L[32 * j + k] = max(0, min(nmax, nearest_int((x[32 * j + k] + dm) / dj)))


# ---- Q4_K  d:f16 | dmin:f16 | scales:u8[12] | qs:u8[128]
@njit(nogil=True, cache=True, error_model="numpy")
def _q4_k_row(y, x, qw, mode):
    L = np.empty(256, np.uint8)
    Laux = np.empty(32, np.uint8)
    for ib in range(x.shape[0] // 256):
        xb = x[256 * ib:256 * ib + 256]
        yb = y[144 * ib:144 * ib + 144]
        _qk_superblock(yb, xb, qw[256 * ib:256 * ib + 256], mode, 15, L, Laux)
        _qk_requant(yb, xb, L, 15)
        for c in range(4):
            for k in range(32):
                yb[16 + 32 * c + k] = L[64 * c + k] | (L[64 * c + 32 + k] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q4_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_k_row(out[r], x[r], qw, mode)


# ---- Q5_K  d:f16 | dmin:f16 | scales:u8[12] | qh:u8[32] | qs:u8[128]
@njit(nogil=True, cache=True, error_model="numpy")
def _q5_k_row(y, x, qw, mode):
    L = np.empty(256, np.uint8)
    Laux = np.empty(32, np.uint8)
    for ib in range(x.shape[0] // 256):
        xb = x[256 * ib:256 * ib + 256]
        yb = y[176 * ib:176 * ib + 176]
        _qk_superblock(yb, xb, qw[256 * ib:256 * ib + 256], mode, 31, L, Laux)
        _qk_requant(yb, xb, L, 31)
        qh = yb[16:48]
        qh[:] = 0
        for c in range(4):
            m1 = 1 << (2 * c)
            for k in range(32):
                l1 = np.int64(L[64 * c + k])
                l2 = np.int64(L[64 * c + 32 + k])
                if l1 > 15:
                    l1 -= 16
                    qh[k] |= m1
                if l2 > 15:
                    l2 -= 16
                    qh[k] |= m1 << 1
                yb[48 + 32 * c + k] = l1 | (l2 << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q5_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q5_k_row(out[r], x[r], qw, mode)


# ---- Q6_K  ql:u8[128] | qh:u8[64] | scales:i8[16] | d:f16
@njit(nogil=True, cache=True, error_model="numpy")
def _q6_k_row(y, x, qw, mode):
    L = np.empty(256, np.uint8)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    sc = np.empty((3, 40), np.float32)
    for ib in range(x.shape[0] // 256):
        xb = x[256 * ib:256 * ib + 256]
        yb = y[210 * ib:210 * ib + 210]
        max_scale = F(0.0)
        max_abs = F(0.0)
        for b in range(16):
            xs = xb[16 * b:16 * b + 16]
            for k in range(16):
                if mode == MODE_IMATRIX:
                    w[k] = qw[256 * ib + 16 * b + k]
                elif mode == MODE_DEFAULT:
                    w[k] = xs[k] * xs[k]
                else:
                    w[k] = F(1.0)
            s = make_qx_quants_ggml_sc(xs, w, 32, L[16 * b:16 * b + 16], sc)
            scales[b] = s
            if abs(s) > max_abs:
                max_abs = abs(s)
                max_scale = s
        yb[:] = 0
        if max_abs < F(1e-15):
            continue
        iscale = F(-128.0) / max_scale
        put_fp16(yb, 208, F(1.0) / iscale)
        for b in range(16):
            yb[192 + b] = np.uint8(min(127, nearest_int_mul(iscale, scales[b])) & 0xFF)
        d = get_fp16(yb, 208)
        for b in range(16):
            db = d * F(np.int8(yb[192 + b]))
            if db == 0:
                continue
            for k in range(16):
                L[16 * b + k] = max(-32, min(31, nearest_int(xb[16 * b + k] / db))) + 32
        for h in range(2):
            for k in range(32):
                q1 = L[128 * h + k]
                q2 = L[128 * h + k + 32]
                q3 = L[128 * h + k + 64]
                q4 = L[128 * h + k + 96]
                yb[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                yb[64 * h + k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                yb[128 + 32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q6_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q6_k_row(out[r], x[r], qw, mode)


# ---- IQ4_XS  d:f16 | scales_h:u16 | scales_l:u8[4] | qs:u8[128]
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_xs_row(y, x, qw, mode):
    L = np.empty(256, np.uint8)
    w = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    sc = np.empty(128, np.float32)
    values = KVALUES_IQ4NL
    for ibl in range(x.shape[0] // 256):
        xb = x[256 * ibl:256 * ibl + 256]
        yb = y[136 * ibl:136 * ibl + 136]
        sigma2 = sum_sq(xb) * F(2.0 / 256)
        max_scale = F(0.0)
        amax_scale = F(0.0)
        for ib in range(8):
            xs = xb[32 * ib:32 * ib + 32]
            block_weights(w, xs, qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32], mode, sigma2, 0)
            d = iq4_block_scale(xs, w, values, L[32 * ib:32 * ib + 32], 7, sc)
            scales[ib] = d
            if abs(d) > amax_scale:
                amax_scale = abs(d)
                max_scale = d
        yb[:8] = 0
        d = -max_scale / F(32.0)
        put_fp16(yb, 0, d)
        idd = F(1.0) / d if d != 0 else F(0.0)
        sh = 0
        for ib in range(8):
            ls = max(-32, min(31, nearest_int_mul(idd, scales[ib])))
            dl = d * F(ls)
            idl = F(1.0) / dl if dl != 0 else F(0.0)
            _iq4_labels(L[32 * ib:32 * ib + 32], xb[32 * ib:32 * ib + 32], values, idl)
            ls += 32
            if ib % 2 == 0:
                yb[4 + ib // 2] = ls & 0xF
            else:
                yb[4 + ib // 2] |= (ls & 0xF) << 4
            sh |= (ls >> 4) << (2 * ib)
        yb[2] = sh & 0xFF
        yb[3] = sh >> 8
        for i in range(8):
            for k in range(16):
                yb[8 + 16 * i + k] = L[32 * i + k] | (L[32 * i + 16 + k] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_xs_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq4_xs_row(out[r], x[r], qw, mode)


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _deq_256(out, raw, kind):
    """kind: 0 q4_K, 1 q5_K, 2 q6_K, 3 iq4_xs."""
    for r in prange(raw.shape[0]):
        y = out[r]
        row = raw[r]
        nb = y.shape[0] // 256
        bpb = row.shape[0] // nb
        for ib in range(nb):
            b = row[bpb * ib:bpb * ib + bpb]
            yb = y[256 * ib:256 * ib + 256]
            if kind == 2:
                d = get_fp16(b, 208)
                for e in range(256):
                    h, rr = e // 128, e % 128
                    k, i = rr // 32, rr % 32
                    q = np.int64(b[64 * h + i + 32 * (k % 2)])
                    q = (q & 0xF) if k < 2 else (q >> 4)
                    q |= ((np.int64(b[128 + 32 * h + i]) >> (2 * k)) & 3) << 4
                    yb[e] = d * F(np.int8(b[192 + e // 16])) * F(q - 32)
            elif kind == 3:
                d = get_fp16(b, 0)
                sh = np.int64(b[2]) | (np.int64(b[3]) << 8)
                for i in range(8):
                    ls = ((np.int64(b[4 + i // 2]) >> (4 * (i % 2))) & 0xF) | (((sh >> (2 * i)) & 3) << 4)
                    dl = d * F(ls - 32)
                    for k in range(16):
                        q = np.int64(b[8 + 16 * i + k])
                        yb[32 * i + k] = dl * KVALUES_IQ4NL[q & 0xF]
                        yb[32 * i + 16 + k] = dl * KVALUES_IQ4NL[q >> 4]
            else:
                d = get_fp16(b, 0)
                dmin = get_fp16(b, 2)
                qs0 = 16 if kind == 0 else 48
                for j in range(8):
                    s, m = get_scale_min_k4(j, b[4:16])
                    dl = d * F(s)
                    ml = dmin * F(m)
                    c, hi = j // 2, j % 2
                    for k in range(32):
                        q = (np.int64(b[qs0 + 32 * c + k]) >> (4 * hi)) & 0xF
                        if kind == 1:
                            q += ((np.int64(b[16 + k]) >> j) & 1) << 4
                        yb[32 * j + k] = dl * F(q) - ml


def _make_quant(kernel, bpb, name=""):
    def quant(x, qw, mode):
        x, qw = _check_x(x, qw)
        out = np.empty((x.shape[0], bpb * (x.shape[1] // 256)), np.uint8)
        kernel(out, x, qw, mode)
        if name:
            _refuse_nan_scales(out, bpb, name)
        return out
    return quant


def _refuse_nan_scales(out, bpb, name):
    """q4_K/q5_K: an importance that is zero over a whole 256-block makes d = 0/0; llama-quantize
    aborts there ("d_block = nan"), so do we, with the row and block."""
    d = out.reshape(out.shape[0], -1, bpb)[:, :, 0:4].copy().view(np.float16)
    bad = np.argwhere(np.isnan(d).any(axis=2))
    if bad.size:
        from iqk_studio.quant.api import QuantError
        r, b = (int(v) for v in bad[0])
        raise QuantError(f"{name}: the importance is zero over all of row {r} block {b} "
                         f"(elements {256 * b}..{256 * b + 255}); llama-quantize aborts here too")


def _make_deq(kind):
    def deq(raw, n):
        out = np.empty((raw.shape[0], n), np.float32)
        _deq_256(out, np.ascontiguousarray(raw, np.uint8), kind)
        return out
    return deq


QUANT = {"q4_K": _make_quant(q4_k_rows, 144, "q4_K"), "q5_K": _make_quant(q5_k_rows, 176, "q5_K"),
         "q6_K": _make_quant(q6_k_rows, 210), "iq4_xs": _make_quant(iq4_xs_rows, 136)}
DEQUANT = {"q4_K": _make_deq(0), "q5_K": _make_deq(1), "q6_K": _make_deq(2), "iq4_xs": _make_deq(3)}

