"""IQ5_K and IQ5_KS: bit-exact ports of ik_llama.cpp's quantize_iq5_k / quantize_iq5_ks and their
dequantizers (iqk_quantize.cpp, commit 8337e4cd3; quant-formats.md §6.12-§6.13).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, get_fp16, nearest_int_mul, put_fp16
from iqk_studio.quant.kernels import MODE_IMATRIX
from iqk_studio.quant.kernels.iqk.common import (
    IQ5NL,
    KIND_IQ5,
    W_QUARTER_SIGMA,
    W_QUARTER_SIGMA_FMA,
    W_X2,
    F,
    best_index_iq5nl,
    block_weights,
    get_f32,
    put_f32,
    row_importance,
    search_scale,
    sigma2_of,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


# ---- IQ5_K (per 256): d:f16 | extra:u16 | scales_h:u8[4] | scales_l:u8[8] | qs:u8[128] | qh:u8[32]
# 16-block i: ls as IQ4_K, value d·(ls-32)·iq5nl[32·extra_i + q5]; element e (g = e/64, r = e%64)
# has its low 4 bits in qs[32g + r%32] nibble r/32, its 5th bit in qh[r%32] bit 2g + r/32.
@njit(nogil=True, cache=True, error_model="numpy")
def _iq5_k_superblock(y, xbl, qbl, mode, w, scales):
    sigma2 = sigma2_of(xbl)
    for k in range(176):
        y[k] = 0
    max_scale = F(0.0)
    max_abs_scale = F(0.0)
    extra = 0
    for ib in range(16):
        xb = xbl[16 * ib:16 * ib + 16]
        block_weights(w, xb, qbl[16 * ib:16 * ib + 16], mode, sigma2, W_QUARTER_SIGMA)
        d, shifted = search_scale(xb, w, KIND_IQ5, IQ5NL, 32, 5, True)
        if shifted:
            extra |= 1 << ib
        scales[ib] = d
        if abs(d) > max_abs_scale:
            max_abs_scale = abs(d)
            max_scale = d
    if max_abs_scale == 0:
        return
    d = -max_scale / F(32.0)
    put_fp16(y, 0, d)
    y[2] = extra & 0xFF
    y[3] = extra >> 8
    id_ = F(1.0) / d
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for ib in range(16):
        ls = max(-32, min(31, nearest_int_mul(id_, scales[ib])))
        uls = ls + 32
        y[8 + ib // 2] |= (uls & 0xF) << (4 * (ib % 2))
        y[4 + ib // 4] |= (uls >> 4) << (2 * (ib % 4))
        dl = d * F(ls)
        if dl == 0:
            continue
        base = 32 if (extra >> ib) & 1 else 0
        xb = xbl[16 * ib:16 * ib + 16]
        block_weights(w, xb, qbl[16 * ib:16 * ib + 16], mode, sigma2, W_QUARTER_SIGMA_FMA)
        idl = F(1.0) / dl
        ib32 = ib // 2
        qs0 = 16 + 32 * (ib32 // 2) + 16 * (ib % 2)
        qh0 = 144 + 16 * (ib % 2)
        for j in range(16):
            k = best_index_iq5nl(IQ5NL, base, idl * xb[j])
            y[qs0 + j] |= (k & 0xF) << (4 * (ib32 % 2))
            y[qh0 + j] |= (k >> 4) << ib32
            q = IQ5NL[base + k] * F(ls)
            t = w[j] * q
            sumqx = fma32(t, xb[j], sumqx)
            sumq2 = fma32(t, q, sumq2)
    if sumq2 > 0:
        put_fp16(y, 0, sumqx / sumq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq5_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        xr = x[r]
        qwr = row_importance(xr, qw, mode, 16)
        w = np.empty(16, dtype=np.float32)
        scales = np.empty(16, dtype=np.float32)
        for ibl in range(xr.shape[0] // 256):
            qbl = qwr[256 * ibl:256 * ibl + 256] if mode == MODE_IMATRIX else qwr
            _iq5_k_superblock(out[r, 176 * ibl:176 * ibl + 176], xr[256 * ibl:256 * ibl + 256],
                              qbl, mode, w, scales)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq5_k_dequant_rows(out, raw):
    for r in prange(raw.shape[0]):
        for ibl in range(out.shape[1] // 256):
            b = raw[r, 176 * ibl:176 * ibl + 176]
            y = out[r, 256 * ibl:256 * ibl + 256]
            d = get_fp16(b, 0)
            extra = np.int64(b[2]) | (np.int64(b[3]) << 8)
            for ib in range(16):
                ls = ((b[8 + ib // 2] >> (4 * (ib % 2))) & 0xF) | (
                    ((b[4 + ib // 4] >> (2 * (ib % 4))) & 3) << 4)
                dl = d * F(np.int64(ls) - 32)
                base = 32 * ((extra >> ib) & 1)
                ib32 = ib // 2
                qs0 = 16 + 32 * (ib32 // 2) + 16 * (ib % 2)
                qh0 = 144 + 16 * (ib % 2)
                for j in range(16):
                    q = ((b[qs0 + j] >> (4 * (ib32 % 2))) & 0xF) | (((b[qh0 + j] >> ib32) & 1) << 4)
                    y[16 * ib + j] = dl * IQ5NL[base + q]


# ---- IQ5_KS row: d:f32 | per 256: scales:u8[8] | qs:u8[128] | qh:u8[32]
# 32-block i: scale byte s, value d·((s & 254) - 127)·iq5nl[32·(s & 1) + q5]; element 32i + j:
# low 4 bits in qs[32(i/2) + j] nibble i%2, 5th bit in qh[j] bit i.
@njit(nogil=True, cache=True, error_model="numpy")
def _iq5_ks_row(y, x, qw, mode):
    nbl = x.shape[0] // 256
    w = np.empty(32, dtype=np.float32)
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
            d, shifted = search_scale(xb, w, KIND_IQ5, IQ5NL, 32, 5, False)
            if shifted:
                y[4 + 168 * ibl + ib] = 1
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
        yb = y[4 + 168 * ibl:4 + 168 * ibl + 168]
        sigma2 = sigma2_of(xbl)
        for ib in range(8):
            base = 32 * (yb[ib] & 1)
            l2 = max(0, min(127, nearest_int_mul(fma32(id_, scales[8 * ibl + ib], F(127.0)),
                                                 F(0.5))))
            yb[ib] |= l2 << 1
            ls = 2 * l2 - 127
            dl = d * F(ls)
            idl = F(1.0) / dl if dl != 0 else F(0.0)
            xb = xbl[32 * ib:32 * ib + 32]
            qwb = qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32] if mode == MODE_IMATRIX else qw
            block_weights(w, xb, qwb, mode, sigma2, W_X2)
            for j in range(32):
                k = best_index_iq5nl(IQ5NL, base, idl * xb[j])
                yb[8 + 32 * (ib // 2) + j] |= (k & 0xF) << (4 * (ib % 2))
                yb[136 + j] |= (k >> 4) << ib
                q = IQ5NL[base + k] * F(ls)
                t = w[j] * q
                sumqx = fma32(t, xb[j], sumqx)
                sumq2 = fma32(t, q, sumq2)
    if sumq2 > 0:
        put_f32(y, 0, sumqx / sumq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq5_ks_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq5_ks_row(out[r], x[r], row_importance(x[r], qw, mode, 32), mode)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq5_ks_dequant_rows(out, raw):
    for r in prange(raw.shape[0]):
        d = get_f32(raw[r], 0)
        for ibl in range(out.shape[1] // 256):
            b = raw[r, 4 + 168 * ibl:4 + 168 * ibl + 168]
            y = out[r, 256 * ibl:256 * ibl + 256]
            for ib in range(8):
                s = np.int64(b[ib])
                dl = d * F((s & 254) - 127)
                base = 32 * (s & 1)
                for j in range(32):
                    q = ((b[8 + 32 * (ib // 2) + j] >> (4 * (ib % 2))) & 0xF) | (
                        ((b[136 + j] >> ib) & 1) << 4)
                    y[32 * ib + j] = dl * IQ5NL[base + q]


QUANT = {"iq5_k": quantizer("iq5_k", iq5_k_rows), "iq5_ks": quantizer("iq5_ks", iq5_ks_rows)}
DEQUANT = {"iq5_k": dequantizer("iq5_k", iq5_k_dequant_rows),
           "iq5_ks": dequantizer("iq5_ks", iq5_ks_dequant_rows)}
