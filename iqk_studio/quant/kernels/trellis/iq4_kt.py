"""iq4_kt (4.0 bpw, 4-value groups, a shifted second codebook): quantizer (ik_llama.cpp
quantize_row_iq4_kt_impl) and dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, nearest_int
from iqk_studio.quant.kernels.iqk.common import put_f32
from iqk_studio.quant.kernels.trellis.codebook import code_values, codebook
from iqk_studio.quant.kernels.trellis.search import best_scale, find_match4, set_weights
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

F = np.float32


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_trials(bi, xb, wb, amax, scale_0, cb, best, scale, buf):
    """Codes at ±amax/(scale_0 + 8·itry), itry = -2..2; (best score, its scale, improved?)."""
    values = cb[0]
    hit = False
    for itry in range(-2, 3):
        den = fma32(F(itry), F(8.0), scale_0)
        for sgn in (F(1.0), F(-1.0)):
            find_match4(bi, sgn * amax / den, xb, wb, cb, buf)
            dd, sc = best_scale(xb, wb, values, bi, 4)
            if sc > best:
                best = sc
                scale = dd
                hit = True
    return best, scale, hit


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_row(out, x, qw, mode, cb1, cb2):
    # row: d f32 | per 256: shb u32[8] (bit 0 offset shift, bits 1-7 scale + 64, bits 8+3g..
    #      code bits 12-14 of group g) | ql u8[64] | qh u8[32] (code bits 8-11: groups 0-31 low
    #      nibble, 32-63 high)
    n = x.shape[0]
    nb = n // 32
    out[:] = 0
    w = np.empty(n, dtype=np.float32)
    set_weights(w, x, qw, mode, False)
    amax_row = F(0.0)
    for j in range(n):
        amax_row = max(amax_row, abs(x[j]))
    if amax_row == 0:
        return
    scales = np.zeros(nb, dtype=np.float32)
    bi = np.empty(8, dtype=np.int64)
    buf = np.empty(cb1[0].shape[0], dtype=np.float32)
    amax_scale = F(0.0)
    max_scale = F(0.0)
    for ib in range(nb):
        xb = x[32 * ib:32 * ib + 32]
        wb = w[32 * ib:32 * ib + 32]
        sh = 4 + 128 * (ib // 8) + 4 * (ib % 8)
        amax = F(0.0)
        for j in range(32):
            amax = max(amax, abs(xb[j]))
        if amax < F(1e-16):
            scales[ib] = 0
            continue
        scale_0 = max(F(90.0), F(124.0) * amax / amax_row)
        best, scales[ib], _ = _iq4_trials(bi, xb, wb, amax, scale_0, cb1, F(0.0), scales[ib], buf)
        find_match4(bi, scales[ib], xb, wb, cb2, buf)
        dd, sc = best_scale(xb, wb, cb2[0], bi, 4)
        if sc > best:  # the reference does not raise best here
            scales[ib] = dd
            out[sh] = 1
        best, scales[ib], hit = _iq4_trials(bi, xb, wb, amax, scale_0, cb2, best, scales[ib], buf)
        if hit:
            out[sh] = 1
        if abs(scales[ib]) > amax_scale:
            amax_scale = abs(scales[ib])
            max_scale = scales[ib]
    d = -max_scale / F(64.0)
    put_f32(out, 0, d)
    if d == 0:
        return
    inv = F(1.0) / d
    sqx = F(0.0)
    sq2 = F(0.0)
    for ib in range(nb):
        xb = x[32 * ib:32 * ib + 32]
        wb = w[32 * ib:32 * ib + 32]
        b = 4 + 128 * (ib // 8)
        k = ib % 8
        shift = out[b + 4 * k] & 1
        cb = cb2 if shift else cb1
        ls = min(nearest_int(inv * scales[ib]), 63)
        shb = np.int64(((ls + 64) << 1) & 0xFF) | shift
        find_match4(bi, d * F(ls), xb, wb, cb, buf)
        for g in range(8):
            c = bi[g]
            jj = 8 * k + g
            shb |= (c >> 12) << (8 + 3 * g)
            out[b + 32 + jj] = c & 0xFF
            out[b + 96 + jj % 32] |= ((c >> 8) & 0xF) << (4 * (jj // 32))
            for t in range(4):
                q = cb[0][c, t] * F(ls)
                sqx = fma32(q, wb[4 * g + t] * xb[4 * g + t], sqx)
                sq2 = fma32(q, q * wb[4 * g + t], sq2)
        for t in range(4):
            out[b + 4 * k + t] = (shb >> (8 * t)) & 0xFF
    if sq2 > 0:
        put_f32(out, 0, sqx / sq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq4_rows(out, x, qw, mode, cb1, cb2):
    for r in prange(x.shape[0]):
        _iq4_row(out[r], x[r], qw, mode, cb1, cb2)


def _book4(name):
    b = codebook(name)
    return (b.values, b.start, b.members, b.cvt)


def _iq4_kernel(out, x, qw, mode):
    _iq4_rows(out, x, qw, mode, _book4("iq4_kt"), _book4("iq4_kt_shift"))


@njit(nogil=True, cache=True)
def _iq4_kt_kernel(y, raw):
    # row: d:f32 | blocks { shb:u32[8] | ql:u8[64] | qh:u8[32] } (128 B)
    # 32-block ib: shb bit 0 = offset shift, bits 1-7 = scale + 64, bits 8+3ig.. = code bits 12-14
    # of group ig (4 values); code of group jj = 8ib + ig: ql[jj] | nibble of qh[jj % 32] << 8
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 128 * ibl
            for ib in range(8):
                p = b + 4 * ib
                shb = (np.uint32(raw[r, p]) | (np.uint32(raw[r, p + 1]) << 8)
                       | (np.uint32(raw[r, p + 2]) << 16) | (np.uint32(raw[r, p + 3]) << 24))
                offset = 4096 + 32768 if shb & 1 else 4096
                sl = d * np.float32(np.int32((shb & 0xFF) >> 1) - 64)
                for ig in range(8):
                    jj = 8 * ib + ig
                    qh = np.int32(raw[r, b + 96 + jj % 32])
                    code = (np.int32(raw[r, b + 32 + jj]) | ((qh << (8 - 4 * (jj // 32))) & 0xF00)
                            | (np.int32((shb >> (8 + 3 * ig)) & 7) << 12))
                    code_values(y, r, 256 * ibl + 4 * jj, code, offset, 4, sl, False)


QUANT = {"iq4_kt": quantizer("iq4_kt", _iq4_kernel)}
DEQUANT = {"iq4_kt": dequantizer("iq4_kt", _iq4_kt_kernel)}
