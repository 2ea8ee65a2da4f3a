"""IQ6_K: bit-exact port of ik_llama.cpp's quantize_iq6_k and dequantize_row_iq6_k
(iqk_quantize.cpp, commit 8337e4cd3; quant-formats.md §5, §6.13).

The quantizer searches the integer iq6nl table; the dequantizer evaluates a cubic instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, get_fp16, nearest_int_mul, put_fp16
from iqk_studio.quant.grids import IQ6K_A, IQ6K_B, IQ6K_C, IQ6K_D
from iqk_studio.quant.kernels import MODE_IMATRIX
from iqk_studio.quant.kernels.iqk.common import (
    IQ6NL,
    KIND_IQ6,
    W_QUARTER_SIGMA,
    F,
    best_index_iq6nl,
    block_weights,
    row_importance,
    search_scale,
    sigma2_of,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

_A, _B, _C, _D = F(IQ6K_A), F(IQ6K_B), F(IQ6K_C), F(IQ6K_D)


@njit(nogil=True, cache=True, error_model="numpy")
def iq6k_value(q, shift):
    """What IQ6_K dequantizes index q (0..63) to before the block scale: the cubic
    A + q(B + q(-C + qD)) with GCC's three fused multiply-adds, then + 1 if shifted."""
    qf = F(q)
    t = fma32(qf, _D, -_C)
    t = fma32(t, qf, _B)
    t = fma32(t, qf, _A)
    return t + shift


# ---- IQ6_K (per 256): d:f16 | extra:u16 | scales:i8[16] | qs:u8[128] | qh:u8[64]
# 16-block i: value d·scales[i]·(cubic(q6) + extra_i); element e (g = e/64, r = e%64): low 4 bits
# in qs[32g + r%32] nibble r/32, high 2 bits in qh[32(g/2) + r%32] bits 4(g%2) + 2(r/32).
@njit(nogil=True, cache=True, error_model="numpy")
def _iq6_k_superblock(y, xbl, qbl, mode, w, scales):
    sigma2 = sigma2_of(xbl)
    for k in range(212):
        y[k] = 0
    max_scale = F(0.0)
    max_abs_scale = F(0.0)
    extra = 0
    for ib in range(16):
        xb = xbl[16 * ib:16 * ib + 16]
        block_weights(w, xb, qbl[16 * ib:16 * ib + 16], mode, sigma2, W_QUARTER_SIGMA)
        d, shifted = search_scale(xb, w, KIND_IQ6, IQ6NL, 64, 5, True)
        if shifted:
            extra |= 1 << ib
        scales[ib] = d
        if abs(d) > max_abs_scale:
            max_abs_scale = abs(d)
            max_scale = d
    if max_abs_scale == 0:
        return
    d = -max_scale / F(127.0)
    put_fp16(y, 0, d)
    y[2] = extra & 0xFF
    y[3] = extra >> 8
    id_ = F(1.0) / d
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for ib in range(16):
        ls = max(-127, min(127, nearest_int_mul(id_, scales[ib])))
        y[4 + ib] = ls & 0xFF
        dl = d * F(ls)
        if dl == 0:
            continue
        base = 64 if (extra >> ib) & 1 else 0
        xb = xbl[16 * ib:16 * ib + 16]
        block_weights(w, xb, qbl[16 * ib:16 * ib + 16], mode, sigma2, W_QUARTER_SIGMA)
        idl = F(1.0) / dl
        ib32 = ib // 2
        qs0 = 20 + 32 * (ib32 // 2) + 16 * (ib % 2)
        qh0 = 148 + 32 * (ib32 // 4) + 16 * (ib % 2)
        for j in range(16):
            k = best_index_iq6nl(IQ6NL, base, idl * xb[j])
            y[qs0 + j] |= (k & 0xF) << (4 * (ib32 % 2))
            y[qh0 + j] |= (k >> 4) << (2 * (ib32 % 4))
            q = IQ6NL[base + k] * F(ls)
            t = w[j] * q
            sumqx = fma32(t, xb[j], sumqx)
            sumq2 = fma32(t, q, sumq2)
    if sumq2 > 0:
        put_fp16(y, 0, sumqx / sumq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq6_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        xr = x[r]
        qwr = row_importance(xr, qw, mode, 16)
        w = np.empty(16, dtype=np.float32)
        scales = np.empty(16, dtype=np.float32)
        for ibl in range(xr.shape[0] // 256):
            qbl = qwr[256 * ibl:256 * ibl + 256] if mode == MODE_IMATRIX else qwr
            _iq6_k_superblock(out[r, 212 * ibl:212 * ibl + 212], xr[256 * ibl:256 * ibl + 256],
                              qbl, mode, w, scales)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq6_k_dequant_rows(out, raw):
    for r in prange(raw.shape[0]):
        values = np.empty(128, dtype=np.float32)  # (shift, q6) -> value
        for k in range(128):
            values[k] = iq6k_value(k & 63, F(k >> 6))
        for ibl in range(out.shape[1] // 256):
            b = raw[r, 212 * ibl:212 * ibl + 212]
            y = out[r, 256 * ibl:256 * ibl + 256]
            d = get_fp16(b, 0)
            extra = np.int64(b[2]) | (np.int64(b[3]) << 8)
            for ib in range(16):
                s = np.int64(b[4 + ib])
                dl = d * F(s - 256 if s > 127 else s)
                base = 64 * ((extra >> ib) & 1)
                ib32 = ib // 2
                qs0 = 20 + 32 * (ib32 // 2) + 16 * (ib % 2)
                qh0 = 148 + 32 * (ib32 // 4) + 16 * (ib % 2)
                for j in range(16):
                    q = ((b[qs0 + j] >> (4 * (ib32 % 2))) & 0xF) | (
                        ((b[qh0 + j] >> (2 * (ib32 % 4))) & 3) << 4)
                    y[16 * ib + j] = dl * values[base + q]


QUANT = {"iq6_k": quantizer("iq6_k", iq6_k_rows)}
DEQUANT = {"iq6_k": dequantizer("iq6_k", iq6_k_dequant_rows)}
