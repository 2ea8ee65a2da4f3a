"""q2_K (256-element super-blocks of 16 2-bit sub-blocks with 4-bit scales and mins): port of
ggml-quants.c (ik_llama.cpp 8337e4cd3) quantize_row_q2_K_ref / _impl, and its dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    fma32,
    get_fp16,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
    nearest_int,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT
from iqk_studio.quant.kernels.legacy.weights import block_weights, sum_sq
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


@njit(nogil=True, cache=True, error_model="numpy")
def _pack2(qs, L):
    """2-bit labels of a 256-block into qs[64] (Q2_K/Q3_K order)."""
    for h in range(2):
        for k in range(32):
            qs[32 * h + k] = (L[128 * h + k] | (L[128 * h + k + 32] << 2)
                              | (L[128 * h + k + 64] << 4) | (L[128 * h + k + 96] << 6))


# ---- Q2_K  scales:u8[16] | qs:u8[64] | d:f16 | dmin:f16
@njit(nogil=True, cache=True, error_model="numpy")
def is_trinet(x):
    """quantize_row_q2_K_ref's ternary-net test over all rows of one call (row-major order)."""
    mx = F(0.0)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            mx = max(mx, abs(x[r, j]))
    mse0 = F(0.0)
    mse = F(0.0)
    half = F(0.5) * mx
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[r, j]
            lv = -1 if v < -half else (0 if v < half else 1)
            mse0 = fma32(v, v, mse0)
            diff = fma32(-F(lv), mx, v)
            mse = fma32(diff, diff, mse)
    return mse < F(0.1) * mse0, mx


@njit(nogil=True, cache=True, error_model="numpy")
def _q2_k_block_ref(yb, x, L, Laux):
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    max_scale = F(0.0)
    max_min = F(0.0)
    for j in range(16):
        xs = x[16 * j:16 * j + 16]
        for k in range(16):
            w[k] = abs(xs[k])
        s, m = make_qkx2_quants(xs, w, 3, L[16 * j:16 * j + 16], Laux, F(-0.5), F(0.1), 15,
                                True, True)
        scales[j] = s
        mins[j] = m
        if s > max_scale:
            max_scale = s
        if m > max_min:
            max_min = m
    yb[:16] = 0
    put_fp16(yb, 80, F(0.0))
    put_fp16(yb, 82, F(0.0))
    if max_scale > 0:
        iscale = F(15.0) / max_scale
        for j in range(16):
            yb[j] = nearest_int_mul(iscale, scales[j]) & 0xFF
        put_fp16(yb, 80, max_scale / F(15.0))
    if max_min > 0:
        iscale = F(15.0) / max_min
        for j in range(16):
            yb[j] |= (nearest_int_mul(iscale, mins[j]) << 4) & 0xFF
        put_fp16(yb, 82, max_min / F(15.0))
    d = get_fp16(yb, 80)
    dmin = get_fp16(yb, 82)
    for j in range(16):
        dj = d * F(yb[j] & 0xF)
        if dj == 0:
            continue
        dm = dmin * F(yb[j] >> 4)
        for k in range(16):
            L[16 * j + k] = max(0, min(3, nearest_int((x[16 * j + k] + dm) / dj)))


@njit(nogil=True, cache=True, error_model="numpy")
def _q2_k_block_impl(yb, x, qw, mode, L, Laux):
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    sw = np.zeros(16, np.float32)
    Ls = np.empty(16, np.uint8)
    Lm = np.empty(16, np.uint8)
    sigma2 = F(0.75) * sum_sq(x) / F(256.0)
    for j in range(16):
        xs = x[16 * j:16 * j + 16]
        block_weights(w, xs, qw[16 * j:16 * j + 16], mode, sigma2, 1)
        for k in range(16):
            sw[j] += w[k]
        s, m = make_qkx3_quants(xs, w, 3, L[16 * j:16 * j + 16], Laux, F(-0.9), F(0.05), 36, True)
        scales[j] = s
        mins[j] = m
    dm = make_qp_quants(scales, sw, 15, Ls)
    mm = make_qp_quants(mins, sw, 15, Lm)
    put_fp16(yb, 80, dm)
    put_fp16(yb, 82, mm)
    for j in range(16):
        d = dm * F(Ls[j])
        m = mm * F(Lm[j])
        idd = F(1.0) / d if d != 0 else F(0.0)
        for k in range(16):
            L[16 * j + k] = max(0, min(3, nearest_int_mul(x[16 * j + k] + m, idd)))
        yb[j] = Ls[j] | (Lm[j] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q2_k_rows(out, x, qw, mode, trinet, tmax):
    for r in prange(x.shape[0]):
        L = np.empty(256, np.uint8)
        Laux = np.empty(16, np.uint8)
        for ib in range(x.shape[1] // 256):
            xb = x[r, 256 * ib:256 * ib + 256]
            yb = out[r, 84 * ib:84 * ib + 84]
            if trinet:
                put_fp16(yb, 80, tmax)
                put_fp16(yb, 82, tmax)
                yb[:16] = 1 | (1 << 4)
                for k in range(256):
                    L[k] = 0 if xb[k] < -F(0.5) * tmax else (1 if xb[k] < F(0.5) * tmax else 2)
            elif mode == MODE_DEFAULT:
                _q2_k_block_ref(yb, xb, L, Laux)
            else:
                _q2_k_block_impl(yb, xb, qw[256 * ib:256 * ib + 256], mode, L, Laux)
            _pack2(yb[16:80], L)


def _q2_k_rows(out, x, qw, mode):
    trinet, tmax = is_trinet(x) if mode == MODE_DEFAULT else (False, np.float32(0))
    q2_k_rows(out, x, qw, mode, trinet, np.float32(tmax))


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _q2_k_dequant(out, raw):
    for r in prange(raw.shape[0]):
        for ib in range(out.shape[1] // 256):
            b = raw[r, 84 * ib:84 * ib + 84]
            yb = out[r, 256 * ib:256 * ib + 256]
            qs = b[16:80]
            for e in range(256):
                h, rr = e // 128, e % 128
                q = (np.int64(qs[32 * h + rr % 32]) >> (2 * (rr // 32))) & 3
                sc = np.int64(b[e // 16])
                dl = get_fp16(b, 80) * F(sc & 0xF)
                ml = get_fp16(b, 82) * F(sc >> 4)
                yb[e] = dl * F(q) - ml


QUANT = {"q2_K": quantizer("q2_K", _q2_k_rows)}
DEQUANT = {"q2_K": dequantizer("q2_K", _q2_k_dequant)}
