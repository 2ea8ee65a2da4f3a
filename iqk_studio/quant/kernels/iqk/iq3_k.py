"""IQ3_K and IQ3_KS kernels, bit-exact with ik_llama.cpp (quantize_row_iq3_k_impl,
quantize_row_iq3_ks_impl); quant-formats.md §6.11, §6.13. FMA placement from GCC's tree dump.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F, amax_signed, fma32, get_fp16, nearest_int_mul, put_fp16
from iqk_studio.quant.kernels.iqk.common import sanitize_weights
from iqk_studio.quant.kernels.iqk.common_low import (
    IQ3NL,
    MODE_IMATRIX,
    MODE_UNIFORM,
    best_index_iq3nl,
    sum_sq,
    weights_sigma,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

QK = 256


@njit(nogil=True, cache=True)
def _sums(x, j0, n, w, idd, off):
    """Σw·q·x, Σw·q² for labels nearest to id·x (p) and to -id·x (m) on IQ3NL[off:off+8]."""
    sqx_p = F(0.0)
    sq2_p = F(0.0)
    sqx_m = F(0.0)
    sq2_m = F(0.0)
    for j in range(n):
        xj = x[j0 + j]
        al = idd * xj
        q = IQ3NL[off + best_index_iq3nl(IQ3NL, off, al)]
        sqx_p = fma32(w[j] * q, xj, sqx_p)
        sq2_p = fma32(w[j] * q, q, sq2_p)
        q = IQ3NL[off + best_index_iq3nl(IQ3NL, off, -al)]
        sqx_m = fma32(w[j] * q, xj, sqx_m)
        sq2_m = fma32(w[j] * q, q, sq2_m)
    return sqx_p, sq2_p, sqx_m, sq2_m


@njit(nogil=True, cache=True)
def _search(x, j0, n, w, ntry, step):
    """Block scale search shared by IQ3_K (ntry 3, step 2) and IQ3_KS (ntry 5, step 1):
    trial inverse scales (step·t + v0)/max on the base and shifted tables, both signs.
    Returns (d, shifted, ok); ok is False for an all-zero block."""
    amax, mx = amax_signed(x, j0, n)
    if amax < F(1e-16):
        return F(0.0), False, False
    d = -mx / IQ3NL[0]
    sqx_p, sq2_p, sqx_m, sq2_m = _sums(x, j0, n, w, F(1.0) / d, 0)
    best = F(0.0)
    if sq2_p > 0:
        d = sqx_p / sq2_p
        best = d * sqx_p
    if sq2_m > 0 and sqx_m * sqx_m > best * sq2_m:
        d = sqx_m / sq2_m
        best = d * sqx_m
    shifted = False
    for itry in range(-ntry, ntry + 1):
        for off in (0, 8):
            idd = F(step * itry + np.int64(IQ3NL[off])) / mx
            sqx_p, sq2_p, sqx_m, sq2_m = _sums(x, j0, n, w, idd, off)
            if sq2_p > 0 and sqx_p * sqx_p > best * sq2_p:
                d = sqx_p / sq2_p
                best = d * sqx_p
                shifted = off == 8
            if sq2_m > 0 and sqx_m * sqx_m > best * sq2_m:
                d = sqx_m / sq2_m
                best = d * sqx_m
                shifted = off == 8
    return d, shifted, True


# ---------------------------------------------------------------- IQ3_K
# block (110 bytes): d:f16 | extra:u16 (bit i: 16-block i shifted) | scales_h:u16 (bit i: scale
#   negative) | scales_l:u8[8] (nibble k, |scale| = 2k+1) | qs:u8[64] (low 2 bits, element e:
#   qs[32*(e/128) + e%32] bits 2*((e/32)%4)) | qh:u8[32] (bit 3: qh[e%32] bit e/32)
@njit(nogil=True, cache=True)
def _iq3k_row(out, x, qw, mode):
    weight = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    out[:] = 0
    for ibl in range(x.shape[0] // QK):
        o = 110 * ibl
        x0 = ibl * QK
        sigma2 = F(1.5) * sum_sq(x, x0, QK) / F(QK)
        extra = 0
        max_abs_scale = F(0.0)
        for ib in range(16):
            j0 = x0 + 16 * ib
            weights_sigma(weight, x, qw, j0, 16, sigma2, mode, False)
            d, shifted, ok = _search(x, j0, 16, weight, 3, 2)
            if not ok or d == 0:
                scales[ib] = 0
                continue
            off = 8 if shifted else 0
            idd = F(1.0) / d
            sumqx = F(0.0)
            sumq2 = F(0.0)
            for j in range(16):
                q = IQ3NL[off + best_index_iq3nl(IQ3NL, off, idd * x[j0 + j])]
                sumqx = fma32(weight[j] * q, x[j0 + j], sumqx)
                sumq2 = fma32(weight[j] * q, q, sumq2)
            if sumq2 > 0:
                d = sumqx / sumq2
            scales[ib] = d
            if shifted:
                extra |= 1 << ib
            max_abs_scale = max(max_abs_scale, abs(d))
        if max_abs_scale == 0:
            continue
        d = max_abs_scale / F(31.0)
        out[o + 2] = extra & 0xFF
        out[o + 3] = extra >> 8
        idd = F(1.0) / d
        sumqx = F(0.0)
        sumq2 = F(0.0)
        for ib in range(16):
            # nearest_int(0.5*(id*|s| - 1)) -> fma(fma(id, |s|, -1), 0.5, C)
            ls = max(0, min(15, nearest_int_mul(fma32(idd, abs(scales[ib]), F(-1.0)), F(0.5))))
            out[o + 6 + ib // 2] |= ls << (4 * (ib % 2))
            if scales[ib] < 0:
                out[o + 4 + ib // 8] |= 1 << (ib % 8)
            ls = (2 * ls + 1) * (-1 if scales[ib] < 0 else 1)
            dl = d * F(ls)
            if dl == 0:
                continue
            off = 8 if (extra >> ib) & 1 else 0
            j0 = x0 + 16 * ib
            weights_sigma(weight, x, qw, j0, 16, sigma2, mode, False)
            idl = F(1.0) / dl
            ib32 = ib // 2
            qo = o + 14 + 32 * (ib32 // 4) + 16 * (ib % 2)
            ho = o + 78 + 16 * (ib % 2)
            for j in range(16):
                ibest = best_index_iq3nl(IQ3NL, off, idl * x[j0 + j])
                out[qo + j] |= (ibest & 3) << (2 * (ib32 % 4))
                out[ho + j] |= (ibest >> 2) << (ib32 % 8)
                q = F(np.int64(IQ3NL[off + ibest]) * ls)
                sumqx = fma32(weight[j] * q, x[j0 + j], sumqx)
                sumq2 = fma32(weight[j] * q, q, sumq2)
        put_fp16(out, o, F(1.01) * (sumqx / sumq2 if sumq2 > 0 else d))


# ---------------------------------------------------------------- IQ3_KS
# row: d:f16 | blocks (102 bytes): extra:u16 (bits 0-7: bit 4 of scale of 32-block i; bits 8-15:
#   block i shifted) | scales:u8[4] (block i: byte i%4, nibble i/4; scale = ls - 16)
#   | qs:u8[64] (block i: 32 bytes at 32*(i/4), bits 2*(i%4)) | qh:u8[32] (bit i: 3rd bit)
@njit(nogil=True, cache=True)
def _weights_x2(w, x, qw, j0, sigma2, mode):
    """IQ3_KS weights: qw·sqrt(σ²+x²) with imatrix, else x² (or 1)."""
    for j in range(32):
        xj = x[j0 + j]
        if mode == MODE_IMATRIX:
            w[j] = qw[j0 + j] * np.sqrt(fma32(xj, xj, sigma2))
        elif mode == MODE_UNIFORM:
            w[j] = F(1.0)
        else:
            w[j] = xj * xj


@njit(nogil=True, cache=True)
def _iq3ks_row(out, x, qw, mode):
    nb = x.shape[0] // QK
    weight = np.empty(32, np.float32)
    scales = np.empty(8 * nb, np.float32)
    out[:] = 0
    amax_scale = F(0.0)
    max_scale = F(0.0)
    for ibl in range(nb):
        o = 2 + 102 * ibl
        sigma2 = sum_sq(x, ibl * QK, QK) * F(2.0 / QK)
        for ib in range(8):
            j0 = ibl * QK + 32 * ib
            _weights_x2(weight, x, qw, j0, sigma2, mode)
            d, shifted, _ = _search(x, j0, 32, weight, 5, 1)
            if shifted:
                out[o + 1] |= 1 << ib
            scales[8 * ibl + ib] = d
            if abs(d) > amax_scale:
                amax_scale = abs(d)
                max_scale = d
    d = -max_scale / F(16.0)
    put_fp16(out, 0, d)
    if d == 0:
        return
    idd = F(1.0) / d
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for ibl in range(nb):
        o = 2 + 102 * ibl
        sigma2 = sum_sq(x, ibl * QK, QK) * F(2.0 / QK)
        for ib in range(8):
            off = 8 if (out[o + 1] >> ib) & 1 else 0
            ls = max(-16, min(15, nearest_int_mul(idd, scales[8 * ibl + ib])))
            out[o + 2 + ib % 4] |= ((ls + 16) & 0xF) << (4 * (ib // 4))
            out[o] |= ((ls + 16) >> 4) << ib
            dl = d * F(ls)
            idl = F(1.0) / dl if dl != 0 else F(0.0)
            j0 = ibl * QK + 32 * ib
            _weights_x2(weight, x, qw, j0, sigma2, mode)
            for j in range(32):
                i = best_index_iq3nl(IQ3NL, off, idl * x[j0 + j])
                out[o + 6 + 32 * (ib // 4) + j] |= (i & 3) << (2 * (ib % 4))
                out[o + 70 + j] |= (i >> 2) << ib
                q = F(np.int64(IQ3NL[off + i]) * ls)
                sumqx = fma32(weight[j] * q, x[j0 + j], sumqx)
                sumq2 = fma32(weight[j] * q, q, sumq2)
    if sumq2 > 0:
        put_fp16(out, 0, sumqx / sumq2)


@njit(nogil=True, cache=True, parallel=True)
def _quant_rows(out, x, qw, mode, kind):
    """out (rows, row_bytes) from x (rows, n); qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        w = qw
        if mode == MODE_IMATRIX:
            w = np.empty_like(qw)
            sanitize_weights(w, qw, x[r], 16 if kind == 0 else 32)
        if kind == 0:
            _iq3k_row(out[r], x[r], w, mode)
        else:
            _iq3ks_row(out[r], x[r], w, mode)


@njit(nogil=True, cache=True, parallel=True)
def _dequant_iq3k(y, raw):
    for r in prange(raw.shape[0]):
        for ibl in range(y.shape[1] // QK):
            o = 110 * ibl
            d = get_fp16(raw[r], o)
            extra = np.int64(raw[r, o + 2]) | (np.int64(raw[r, o + 3]) << 8)
            sh = np.int64(raw[r, o + 4]) | (np.int64(raw[r, o + 5]) << 8)
            for ib in range(16):
                k = (np.int64(raw[r, o + 6 + ib // 2]) >> (4 * (ib % 2))) & 0xF
                dl = d * F((2 * k + 1) * (-1 if (sh >> ib) & 1 else 1))
                off = 8 if (extra >> ib) & 1 else 0
                ib32 = ib // 2
                for j in range(16):
                    e = 16 * (ib % 2) + j
                    q = (raw[r, o + 14 + 32 * (ib32 // 4) + e] >> (2 * (ib32 % 4))) & 3
                    q |= ((raw[r, o + 78 + e] >> ib32) & 1) << 2
                    y[r, QK * ibl + 16 * ib + j] = dl * IQ3NL[off + q]


@njit(nogil=True, cache=True, parallel=True)
def _dequant_iq3ks(y, raw):
    for r in prange(raw.shape[0]):
        d = get_fp16(raw[r], 0)
        for ibl in range(y.shape[1] // QK):
            o = 2 + 102 * ibl
            extra = np.int64(raw[r, o]) | (np.int64(raw[r, o + 1]) << 8)
            for ib in range(8):
                ls = (np.int64(raw[r, o + 2 + ib % 4]) >> (4 * (ib // 4))) & 0xF
                ls |= ((extra >> ib) & 1) << 4
                dl = d * F(ls - 16)
                off = 8 if (extra >> (8 + ib)) & 1 else 0
                for j in range(32):
                    q = (raw[r, o + 6 + 32 * (ib // 4) + j] >> (2 * (ib % 4))) & 3
                    q |= ((raw[r, o + 70 + j] >> ib) & 1) << 2
                    y[r, QK * ibl + 32 * ib + j] = dl * IQ3NL[off + q]


QUANT = {"iq3_k": quantizer("iq3_k", lambda out, x, qw, mode: _quant_rows(out, x, qw, mode, 0)),
         "iq3_ks": quantizer("iq3_ks", lambda out, x, qw, mode: _quant_rows(out, x, qw, mode, 1))}
DEQUANT = {"iq3_k": dequantizer("iq3_k", _dequant_iq3k),
           "iq3_ks": dequantizer("iq3_ks", _dequant_iq3ks)}
