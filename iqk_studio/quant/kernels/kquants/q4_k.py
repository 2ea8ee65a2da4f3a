"""q4_K and q5_K (256-element super-blocks of 8 sub-blocks with 6-bit scales and mins): ports of
ggml-quants.c (ik_llama.cpp 8337e4cd3), quant-formats.md §6.3-§6.4, and their dequantizers.
MODE_UNIFORM runs the imatrix code path (qkx3 + qp searches) with w = 1.
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
    nearest_int,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.errors import QuantError
from iqk_studio.quant.kernels import MODE_DEFAULT
from iqk_studio.quant.kernels.legacy.weights import block_weights, sum_sq
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


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


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _deq_q45_k(out, raw, bpb, qs0, high_bit):
    """q4_K (144-byte blocks, qs at 16) or q5_K (176, qs at 48, the 5th bit from qh at 16)."""
    for r in prange(raw.shape[0]):
        for ib in range(out.shape[1] // 256):
            b = raw[r, bpb * ib:bpb * ib + bpb]
            yb = out[r, 256 * ib:256 * ib + 256]
            d = get_fp16(b, 0)
            dmin = get_fp16(b, 2)
            for j in range(8):
                s, m = get_scale_min_k4(j, b[4:16])
                dl = d * F(s)
                ml = dmin * F(m)
                c, hi = j // 2, j % 2
                for k in range(32):
                    q = (np.int64(b[qs0 + 32 * c + k]) >> (4 * hi)) & 0xF
                    if high_bit:
                        q += ((np.int64(b[16 + k]) >> j) & 1) << 4
                    yb[32 * j + k] = dl * F(q) - ml


def _refuse_nan_scales(name):
    """q4_K/q5_K: an importance that is zero over a whole 256-block makes d = 0/0; llama-quantize
    aborts there ("d_block = nan"), so do we, with the row and block."""
    bpb = 144 if name == "q4_K" else 176

    def check(out, x):
        d = out.reshape(out.shape[0], -1, bpb)[:, :, 0:4].copy().view(np.float16)
        bad = np.argwhere(np.isnan(d).any(axis=2))
        if bad.size:
            r, b = (int(v) for v in bad[0])
            raise QuantError(f"{name}: the importance is zero over all of row {r} block {b} "
                             f"(elements {256 * b}..{256 * b + 255}); llama-quantize aborts "
                             "here too")
    return check


QUANT = {"q4_K": quantizer("q4_K", q4_k_rows, _refuse_nan_scales("q4_K")),
         "q5_K": quantizer("q5_K", q5_k_rows, _refuse_nan_scales("q5_K"))}
DEQUANT = {"q4_K": dequantizer("q4_K", lambda out, raw: _deq_q45_k(out, raw, 144, 16, False)),
           "q5_K": dequantizer("q5_K", lambda out, raw: _deq_q45_k(out, raw, 176, 48, True))}
