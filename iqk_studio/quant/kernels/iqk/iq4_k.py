"""IQ4_K and IQ4_KS: bit-exact ports of ik_llama.cpp's quantize_iq4_k / quantize_iq4_ks and their
dequantizers (iqk_quantize.cpp, commit 8337e4cd3; quant-formats.md §6.7-§6.8).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, get_fp16, nearest_int_mul, put_fp16
from iqk_studio.quant.kernels import MODE_IMATRIX
from iqk_studio.quant.kernels.iqk.common import (
    IQ4K,
    KIND_IQ4,
    W_X2,
    F,
    best_index_iq4nl,
    block_weights,
    get_f32,
    put_f32,
    row_importance,
    search_scale,
    sigma2_of,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


# ---- IQ4_K (per 256): d:f16 | extra:u16 | scales_h:u8[4] | scales_l:u8[8] | qs:u8[128]
# 16-block i: ls = (scales_l[i/2] nibble i%2) | ((scales_h[i/4] >> 2(i%4)) & 3) << 4, value
# d·(ls-32)·iq4k[16·extra_i + q]; qs[16k + j]: element 32k+j low nibble, 32k+16+j high nibble.
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_k_superblock(y, xbl, qbl, mode, w, scales, L):
    sigma2 = sigma2_of(xbl)
    for k in range(144):
        y[k] = 0
    max_scale = F(0.0)
    amax_scale = F(0.0)
    extra = 0
    for ib in range(16):
        xb = xbl[16 * ib:16 * ib + 16]
        block_weights(w, xb, qbl[16 * ib:16 * ib + 16], mode, sigma2, W_X2)
        d, shifted = search_scale(xb, w, KIND_IQ4, IQ4K, 16, 7, False)
        if shifted:
            extra |= 1 << ib
        scales[ib] = d
        if abs(d) > amax_scale:
            amax_scale = abs(d)
            max_scale = d
    d = -max_scale / F(32.0)
    put_fp16(y, 0, d)
    y[2] = extra & 0xFF
    y[3] = extra >> 8
    id_ = F(1.0) / d if d != 0 else F(0.0)
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for ib in range(16):
        base = 16 if (extra >> ib) & 1 else 0
        ls = max(-32, min(31, nearest_int_mul(id_, scales[ib])))
        dl = d * F(ls)
        idl = F(1.0) / dl if dl != 0 else F(0.0)
        xb = xbl[16 * ib:16 * ib + 16]
        block_weights(w, xb, qbl[16 * ib:16 * ib + 16], mode, sigma2, W_X2)
        for j in range(16):
            li = best_index_iq4nl(IQ4K, base, idl * xb[j])
            L[16 * ib + j] = li
            q = IQ4K[base + li] * F(ls)
            t = w[j] * q
            sumqx = fma32(t, xb[j], sumqx)
            sumq2 = fma32(t, q, sumq2)
        uls = ls + 32
        y[8 + ib // 2] |= (uls & 0xF) << (4 * (ib % 2))
        y[4 + ib // 4] |= (uls >> 4) << (2 * (ib % 4))
    if sumq2 > 0:
        put_fp16(y, 0, sumqx / sumq2)
    for i in range(8):
        for j in range(16):
            y[16 + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        xr = x[r]
        qwr = row_importance(xr, qw, mode, 16)
        w = np.empty(16, dtype=np.float32)
        scales = np.empty(16, dtype=np.float32)
        L = np.empty(256, dtype=np.uint8)
        for ibl in range(xr.shape[0] // 256):
            qbl = qwr[256 * ibl:256 * ibl + 256] if mode == MODE_IMATRIX else qwr
            _iq4_k_superblock(out[r, 144 * ibl:144 * ibl + 144], xr[256 * ibl:256 * ibl + 256],
                              qbl, mode, w, scales, L)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_k_dequant_rows(out, raw):
    for r in prange(raw.shape[0]):
        for ibl in range(out.shape[1] // 256):
            b = raw[r, 144 * ibl:144 * ibl + 144]
            y = out[r, 256 * ibl:256 * ibl + 256]
            d = get_fp16(b, 0)
            extra = np.int64(b[2]) | (np.int64(b[3]) << 8)
            for ib in range(16):
                ls = ((b[8 + ib // 2] >> (4 * (ib % 2))) & 0xF) | (
                    ((b[4 + ib // 4] >> (2 * (ib % 4))) & 3) << 4)
                dl = d * F(np.int64(ls) - 32)
                base = 16 * ((extra >> ib) & 1)
                sh = 4 * (ib % 2)
                for j in range(16):
                    q = (b[16 + 16 * (ib // 2) + j] >> sh) & 0xF
                    y[16 * ib + j] = dl * IQ4K[base + q]


# ---- IQ4_KS row: d:f32 | per 256: scales:u8[8] | qs:u8[128]
# 32-block i: scale byte s, value d·((s & 254) - 127)·iq4k[16·(s & 1) + q];
# qs[16i + j]: element 32i+j low nibble, 32i+16+j high nibble.
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_ks_row(y, x, qw, mode):
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
            d, shifted = search_scale(xb, w, KIND_IQ4, IQ4K, 16, 7, False)
            if shifted:
                y[4 + 136 * ibl + ib] = 1
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
        yb = y[4 + 136 * ibl:4 + 136 * ibl + 136]
        sigma2 = sigma2_of(xbl)
        for ib in range(8):
            base = 16 * (yb[ib] & 1)
            l2 = max(0, min(127, nearest_int_mul(fma32(id_, scales[8 * ibl + ib], F(127.0)),
                                                 F(0.5))))
            yb[ib] |= l2 << 1
            ls = 2 * l2 - 127
            dl = d * F(ls)
            idl = F(1.0) / dl if dl != 0 else F(0.0)
            xb = xbl[32 * ib:32 * ib + 32]
            qwb = qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32] if mode == MODE_IMATRIX else qw
            block_weights(w, xb, qwb, mode, sigma2, W_X2)
            for j in range(16):
                i1 = best_index_iq4nl(IQ4K, base, idl * xb[j])
                i2 = best_index_iq4nl(IQ4K, base, idl * xb[j + 16])
                yb[8 + 16 * ib + j] = i1 | (i2 << 4)
                q1 = IQ4K[base + i1] * F(ls)
                q2 = IQ4K[base + i2] * F(ls)
                t1 = w[j] * q1
                t2 = w[j + 16] * q2
                sumqx = sumqx + fma32(t1, xb[j], t2 * xb[j + 16])
                sumq2 = sumq2 + fma32(t1, q1, t2 * q2)
    if sumq2 > 0:
        put_f32(y, 0, sumqx / sumq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_ks_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq4_ks_row(out[r], x[r], row_importance(x[r], qw, mode, 32), mode)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_ks_dequant_rows(out, raw):
    for r in prange(raw.shape[0]):
        d = get_f32(raw[r], 0)
        for ibl in range(out.shape[1] // 256):
            b = raw[r, 4 + 136 * ibl:4 + 136 * ibl + 136]
            y = out[r, 256 * ibl:256 * ibl + 256]
            for ib in range(8):
                s = np.int64(b[ib])
                dl = d * F((s & 254) - 127)
                base = 16 * (s & 1)
                for j in range(16):
                    v = b[8 + 16 * ib + j]
                    y[32 * ib + j] = dl * IQ4K[base + (v & 0xF)]
                    y[32 * ib + 16 + j] = dl * IQ4K[base + (v >> 4)]


QUANT = {"iq4_k": quantizer("iq4_k", iq4_k_rows), "iq4_ks": quantizer("iq4_ks", iq4_ks_rows)}
DEQUANT = {"iq4_k": dequantizer("iq4_k", iq4_k_dequant_rows),
           "iq4_ks": dequantizer("iq4_ks", iq4_ks_dequant_rows)}
