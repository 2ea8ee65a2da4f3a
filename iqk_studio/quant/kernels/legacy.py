"""Float and 32-block legacy types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q6_0, iq4_nl.

Bit-exact ports of ggml-quants.c (ik_llama.cpp 8337e4cd3); see quant-formats.md §6.1-§6.5.
MODE_UNIFORM runs each type's imatrix code path with w = 1 (q8_0 has no weights at all).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    fma32,
    get_fp16,
    make_qkx3_quants,
    make_qx_quants_ggml,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX
from iqk_studio.quant.kernels._iq4_search import (  # noqa: F401  (re-exported for kquants, tests)
    IQ4NL_MID,
    IQ4NL_TABLE,
    KVALUES_IQ4NL,
    _amax_max,
    _iq4_labels,
    _iq4_sums,
    iq4_block_scale,
)

_NO_QW = np.zeros(0, dtype=np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def sum_sq(x):
    s = F(0.0)
    for j in range(x.shape[0]):
        s = s + x[j] * x[j]
    return s


@njit(nogil=True, cache=True, error_model="numpy")
def row_sigma2(x):
    """Σx²/n over the whole row (Q4_0/Q5_0/Q6_0/Q4_1/Q5_1 imatrix weighting); not fused
    (the reference vectorizes it as an in-order reduction)."""
    s = sum_sq(x)
    return s / F(x.shape[0])


@njit(nogil=True, cache=True, error_model="numpy")
def block_weights(w, xb, qwb, mode, sigma2, default_kind):
    """w for one block: imatrix qw·sqrt(σ²+x²); uniform 1; default x² (kind 0) or 1 (kind 1)."""
    for j in range(xb.shape[0]):
        if mode == MODE_IMATRIX:
            w[j] = qwb[j] * np.sqrt(fma32(xb[j], xb[j], sigma2))
        elif mode == MODE_DEFAULT and default_kind == 0:
            w[j] = xb[j] * xb[j]
        else:
            w[j] = F(1.0)


@njit(nogil=True, cache=True, error_model="numpy")
def _roundf(v):
    """C roundf: half away from zero."""
    a = abs(v)
    i = np.int64(a)
    if a - F(i) >= F(0.5):
        i += 1
    return -i if v < 0 else i


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
            yb[2 + j] = np.uint8(_roundf(xb[j] * idd) & 0xFF)


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
            amax, mx = _amax_max(xb)
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


# ---- IQ4_NL  d:f16 | qs:u8[16] (kvalues_iq4nl indices); the search is shared with IQ4_XS
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_nl_row(y, x, qw, mode):
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sc = np.empty(128, np.float32)
    values = KVALUES_IQ4NL
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[18 * ib:18 * ib + 18]
        sigma2 = sum_sq(xb) * F(2.0 / 32)
        block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 0)
        d = iq4_block_scale(xb, w, values, L, 7, sc)
        put_fp16(yb, 0, d)
        idd = F(1.0) / d if d != 0 else F(0.0)
        _iq4_labels(L, xb, values, idd)
        for j in range(16):
            yb[2 + j] = L[j] | (L[j + 16] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_nl_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq4_nl_row(out[r], x[r], qw, mode)


# ---- dequantization (plain float32 products, no contraction, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _deq_32(out, raw, kind):
    """kind: 0 q4_0, 1 q4_1, 2 q5_0, 3 q5_1, 4 q6_0, 5 q8_0, 6 iq4_nl."""
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
                if kind == 6:
                    yb[j] = d * KVALUES_IQ4NL[lo]
                    yb[j + 16] = d * KVALUES_IQ4NL[hi]
                elif kind == 1 or kind == 3:
                    yb[j] = d * F(lo) + m
                    yb[j + 16] = d * F(hi) + m
                else:
                    off = 8 if kind == 0 else (16 if kind == 2 else 32)
                    yb[j] = d * F(lo - off)
                    yb[j + 16] = d * F(hi - off)


def _check_x(x, qw):
    return np.ascontiguousarray(x, np.float32), (_NO_QW if qw is None else
                                                 np.ascontiguousarray(qw, np.float32))


def _make_quant(kernel, bpb, block=32):
    def quant(x, qw, mode):
        x, qw = _check_x(x, qw)
        out = np.empty((x.shape[0], bpb * (x.shape[1] // block)), np.uint8)
        kernel(out, x, qw, mode)
        return out
    return quant


def _make_deq(kind):
    def deq(raw, n):
        out = np.empty((raw.shape[0], n), np.float32)
        _deq_32(out, np.ascontiguousarray(raw, np.uint8), kind)
        return out
    return deq


def _f32_quant(x, qw, mode):
    return np.ascontiguousarray(x, np.float32).view(np.uint8).copy()


def _f16_quant(x, qw, mode):
    return np.ascontiguousarray(x, np.float32).astype(np.float16).view(np.uint8)


def _bf16_quant(x, qw, mode):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    return b.view(np.uint8)


QUANT = {
    "f32": _f32_quant, "f16": _f16_quant, "bf16": _bf16_quant,
    "q8_0": _make_quant(q8_0_rows, 34), "q4_0": _make_quant(q4_0_rows, 18),
    "q4_1": _make_quant(q4_1_rows, 20), "q5_0": _make_quant(q5_0_rows, 22),
    "q5_1": _make_quant(q5_1_rows, 24), "q6_0": _make_quant(q6_0_rows, 26),
    "iq4_nl": _make_quant(iq4_nl_rows, 18),
}
DEQUANT = {
    "f32": lambda raw, n: np.ascontiguousarray(raw).view(np.float32).reshape(-1, n).copy(),
    "f16": lambda raw, n: np.ascontiguousarray(raw).view(np.float16).astype(np.float32).reshape(-1, n),
    "bf16": lambda raw, n: (np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16)
    .view(np.float32).reshape(-1, n),
    "q4_0": _make_deq(0), "q4_1": _make_deq(1), "q5_0": _make_deq(2), "q5_1": _make_deq(3),
    "q6_0": _make_deq(4), "q8_0": _make_deq(5), "iq4_nl": _make_deq(6),
}
