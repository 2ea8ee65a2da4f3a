"""q6_K (256-element super-blocks of 16 6-bit sub-blocks with 8-bit scales): port of
ggml-quants.c (ik_llama.cpp 8337e4cd3), quant-formats.md §6.6, and its dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    get_fp16,
    make_qx_quants_ggml_sc,
    nearest_int,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


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


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _q6_k_dequant(out, raw):
    for r in prange(raw.shape[0]):
        for ib in range(out.shape[1] // 256):
            b = raw[r, 210 * ib:210 * ib + 210]
            yb = out[r, 256 * ib:256 * ib + 256]
            d = get_fp16(b, 208)
            for e in range(256):
                h, rr = e // 128, e % 128
                k, i = rr // 32, rr % 32
                q = np.int64(b[64 * h + i + 32 * (k % 2)])
                q = (q & 0xF) if k < 2 else (q >> 4)
                q |= ((np.int64(b[128 + 32 * h + i]) >> (2 * k)) & 3) << 4
                yb[e] = d * F(np.int8(b[192 + e // 16])) * F(q - 32)


QUANT = {"q6_K": quantizer("q6_K", q6_k_rows)}
DEQUANT = {"q6_K": dequantizer("q6_K", _q6_k_dequant)}
