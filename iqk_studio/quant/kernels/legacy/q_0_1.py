"""q4_0, q4_1, q5_0, q5_1, q6_0 and q8_0 (32-element blocks): bit-exact ports of ggml-quants.c
(ik_llama.cpp 8337e4cd3), quant-formats.md §6.1-§6.5, with their dequantizers.
MODE_UNIFORM runs each type's imatrix code path with w = 1 (q8_0 has no weights at all).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    amax_signed,
    fma32,
    get_fp16,
    make_qkx3_quants,
    make_qx_quants_ggml,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX
from iqk_studio.quant.kernels.legacy.weights import block_weights, roundf, row_sigma2
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


# ---- Q8_0  d:f16 | qs:i8[32]
@njit(nogil=True, cache=True, error_model="numpy")
def _q8_0_row(y, x):
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[34 * ib:34 * ib + 34]
        amax = F(0.0)
        for j in range(32):
            amax = max(amax, abs(xb[j]))
        d = amax / F(127.0)
        idd = F(1.0) / d if d != 0 else F(0.0)
        put_fp16(yb, 0, d)
        for j in range(32):
            yb[2 + j] = np.uint8(roundf(xb[j] * idd) & 0xFF)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q8_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q8_0_row(out[r], x[r])


# ---- Q4_0  d:f16 | qs:u8[16] (low nibble j, high nibble j+16)
@njit(nogil=True, cache=True, error_model="numpy")
def _q4_0_row(y, x, qw, mode, nmax, bpb):
    """Shared by Q4_0 (nmax 8, 18 bytes) and Q5_0 (nmax 16, 22 bytes)."""
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sigma2 = row_sigma2(x) if mode == MODE_IMATRIX else F(0.0)
    half = F(nmax) + F(0.5)
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[bpb * ib:bpb * ib + bpb]
        if mode == MODE_DEFAULT:
            amax, mx = amax_signed(xb, 0, 32)
            d = mx / F(-nmax)
            idd = F(1.0) / d if d != 0 else F(0.0)
            put_fp16(yb, 0, d)
            for j in range(32):
                L[j] = min(2 * nmax - 1, np.int64(fma32(xb[j], idd, half)))
        else:
            block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 0)
            d = make_qx_quants_ggml(xb, w, nmax, L)
            put_fp16(yb, 0, d)
        _pack_q45(yb, L, nmax)


@njit(nogil=True, cache=True, error_model="numpy")
def _pack_q45(yb, L, nmax):
    if nmax == 8:
        for j in range(16):
            yb[2 + j] = L[j] | (L[j + 16] << 4)
        return
    off = yb.shape[0] - 16
    qh = np.uint32(0)
    for j in range(16):
        yb[off + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
        qh |= np.uint32((L[j] >> 4) & 1) << j
        qh |= np.uint32((L[j + 16] >> 4) & 1) << (j + 16)
    for k in range(4):
        yb[off - 4 + k] = (qh >> (8 * k)) & 0xFF


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q4_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_0_row(out[r], x[r], qw, mode, 8, 18)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q5_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_0_row(out[r], x[r], qw, mode, 16, 22)


# ---- Q4_1  d:f16 | m:f16 | qs:u8[16];  Q5_1  d:f16 | m:f16 | qh:u8[4] | qs:u8[16]
@njit(nogil=True, cache=True, error_model="numpy")
def _q4_1_row(y, x, qw, mode, nmax, bpb):
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    Laux = np.empty(32, np.uint8)
    sigma2 = row_sigma2(x) if mode == MODE_IMATRIX else F(0.0)
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[bpb * ib:bpb * ib + bpb]
        if mode == MODE_DEFAULT:
            mn = xb[0]
            mx = xb[0]
            for j in range(1, 32):
                mn = min(mn, xb[j])
                mx = max(mx, xb[j])
            d = (mx - mn) / F(nmax)
            idd = F(1.0) / d if d != 0 else F(0.0)
            put_fp16(yb, 0, d)
            put_fp16(yb, 2, mn)
            for j in range(32):
                q = np.int64(fma32(xb[j] - mn, idd, F(0.5)))
                L[j] = min(15, q) if nmax == 15 else q & 0x1F  # q5_1: (uint8_t), no clamp
        else:
            block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 1)
            d, the_min = make_qkx3_quants(xb, w, nmax, L, Laux, F(-0.9), F(0.05), 36)
            put_fp16(yb, 0, d)
            put_fp16(yb, 2, -the_min)
        if nmax == 15:
            for j in range(16):
                yb[4 + j] = L[j] | (L[j + 16] << 4)
        else:
            _pack_q45(yb, L, 16)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q4_1_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_1_row(out[r], x[r], qw, mode, 15, 20)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q5_1_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_1_row(out[r], x[r], qw, mode, 31, 24)


# ---- Q6_0  d:f16 | qh:u8[8] | qs:u8[16]
@njit(nogil=True, cache=True, error_model="numpy")
def _q6_0_row(y, x, qw, mode):
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sigma2 = row_sigma2(x) if mode == MODE_IMATRIX else F(0.0)
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[26 * ib:26 * ib + 26]
        block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 0)
        d = make_qx_quants_ggml(xb, w, 32, L)
        put_fp16(yb, 0, d)
        yb[2:10] = 0
        for j in range(16):
            yb[10 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
            h = (L[j] >> 4) | ((L[j + 16] >> 4) << 2)
            yb[2 + j % 8] |= h << (4 * (j // 8))


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q6_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q6_0_row(out[r], x[r], qw, mode)


# ---- dequantization (plain float32 products, no contraction, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _deq_32(out, raw, kind):
    """kind: 0 q4_0, 1 q4_1, 2 q5_0, 3 q5_1, 4 q6_0, 5 q8_0."""
    for r in prange(raw.shape[0]):
        y = out[r]
        row = raw[r]
        bpb = row.shape[0] // (y.shape[0] // 32)
        for ib in range(y.shape[0] // 32):
            b = row[bpb * ib:bpb * ib + bpb]
            yb = y[32 * ib:32 * ib + 32]
            d = get_fp16(b, 0)
            if kind == 5:
                for j in range(32):
                    yb[j] = d * F(np.int8(b[2 + j]))
                continue
            if kind == 1 or kind == 3:
                m = get_fp16(b, 2)
            qs = b[bpb - 16:]
            qh = np.uint32(0)
            if kind == 2 or kind == 3:
                for k in range(4):
                    qh |= np.uint32(b[bpb - 20 + k]) << (8 * k)
            for j in range(16):
                lo = np.int64(qs[j] & 0xF)
                hi = np.int64(qs[j] >> 4)
                if kind == 2 or kind == 3:
                    lo |= ((qh >> j) & 1) << 4
                    hi |= ((qh >> (j + 16)) & 1) << 4
                elif kind == 4:
                    h = np.int64(b[2 + j % 8]) >> (4 * (j // 8))
                    lo |= (h & 3) << 4
                    hi |= ((h >> 2) & 3) << 4
                if kind == 1 or kind == 3:
                    yb[j] = d * F(lo) + m
                    yb[j + 16] = d * F(hi) + m
                else:
                    off = 8 if kind == 0 else (16 if kind == 2 else 32)
                    yb[j] = d * F(lo - off)
                    yb[j + 16] = d * F(hi - off)


def _deq(kind):
    return lambda out, raw: _deq_32(out, raw, kind)


QUANT = {"q4_0": quantizer("q4_0", q4_0_rows), "q4_1": quantizer("q4_1", q4_1_rows),
         "q5_0": quantizer("q5_0", q5_0_rows), "q5_1": quantizer("q5_1", q5_1_rows),
         "q6_0": quantizer("q6_0", q6_0_rows), "q8_0": quantizer("q8_0", q8_0_rows)}
DEQUANT = {name: dequantizer(name, _deq(kind))
           for kind, name in enumerate(("q4_0", "q4_1", "q5_0", "q5_1", "q6_0", "q8_0"))}
