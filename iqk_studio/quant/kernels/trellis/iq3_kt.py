"""iq3_kt (3.125 bpw, 8-value groups of absolute trellis values with a sign bit per value):
quantizer (ik_llama.cpp quantize_row_iq3_kt_impl) and dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32, nearest_int
from iqk_studio.quant.kernels.iqk.common import put_f32
from iqk_studio.quant.kernels.trellis.codebook import code_values
from iqk_studio.quant.kernels.trellis.iq2_kt import _book
from iqk_studio.quant.kernels.trellis.search import best_scale, find_match8, set_weights
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

F = np.float32


@njit(nogil=True, cache=True, error_model="numpy")
def _iq3_row_scale(x, w, scales, qtmp, max_scale):
    """IQ3_KT row scale over the 0..15 block-scale levels: 19 trial inverse scales (unfused sums)."""
    d = max_scale / F(15.0)
    best = F(0.0)
    for itry in range(-9, 10):
        inv = fma32(F(itry), F(0.2), F(15.0)) / max_scale
        sqx = F(0.0)
        sq2 = F(0.0)
        for ib in range(scales.shape[0]):
            dl = F(max(0, min(15, nearest_int(inv * scales[ib]))))
            for j in range(32 * ib, 32 * ib + 32):
                q = dl * qtmp[j]
                sqx += (w[j] * abs(x[j])) * q
                sq2 += (q * w[j]) * q
        if sq2 > 0 and sqx * sqx > best * sq2:
            d = sqx / sq2
            best = d * sqx
    return d


@njit(nogil=True, cache=True, error_model="numpy")
def _iq3_row(out, x, qw, mode, cb):
    # row: d f32 | per 256: scales u8[4] (block ib low nibble, ib+4 high) | ql u16[32]
    #      | qh u8[32] (bit ib of byte j: value j of 32-block ib is negative)
    values = cb[0]
    n = x.shape[0]
    nb = n // 32
    out[:] = 0
    amax_row = F(0.0)
    for j in range(n):
        amax_row = max(amax_row, abs(x[j]))
    if amax_row == 0:
        return
    w = np.empty(n, dtype=np.float32)
    set_weights(w, x, qw, mode, True)
    ax = np.abs(x)
    scales = np.zeros(nb, dtype=np.float32)
    qtmp = np.zeros(n, dtype=np.float32)
    buf = np.empty(values.shape[0], dtype=np.float32)
    bi = np.empty(4, dtype=np.int64)
    amax_scale = F(0.0)
    max_scale = F(0.0)
    for ib in range(nb):
        xb = ax[32 * ib:32 * ib + 32]
        wb = w[32 * ib:32 * ib + 32]
        amax = F(0.0)
        for j in range(32):
            amax = max(amax, xb[j])
        if amax < F(1e-16):
            continue
        scale_0 = max(F(84.0), F(123.0) * amax / amax_row)
        best = F(0.0)
        for itry in range(-3, 4):
            find_match8(bi, amax / fma32(F(itry), F(8.0), scale_0), xb, wb, cb, buf)
            dd, sc = best_scale(xb, wb, values, bi, 8)
            if sc > best:  # none > 0: the reference aborts; the block keeps scale 0
                best = sc
                scales[ib] = dd
                for j in range(32):
                    qtmp[32 * ib + j] = values[bi[j // 8], j % 8]
        if abs(scales[ib]) > amax_scale:
            amax_scale = abs(scales[ib])
            max_scale = scales[ib]
    d = _iq3_row_scale(x, w, scales, qtmp, max_scale)
    inv = F(1.0) / d if d != 0 else F(0.0)
    for ib in range(nb):
        ls = max(0, min(15, nearest_int(inv * scales[ib])))
        out[4 + 100 * (ib // 8) + ib % 4] |= ls << (4 * ((ib % 8) // 4))
    put_f32(out, 0, d)
    sqx = F(0.0)
    sq2 = F(0.0)
    for ib in range(nb):
        xb = ax[32 * ib:32 * ib + 32]
        wb = w[32 * ib:32 * ib + 32]
        b = 4 + 100 * (ib // 8)
        k = ib % 8
        for j in range(32):
            if x[32 * ib + j] < 0:
                out[b + 68 + j] |= 1 << k
        ls = (out[b + k % 4] >> (4 * (k // 4))) & 0xF
        find_match8(bi, d * F(ls), xb, wb, cb, buf)
        for g in range(4):
            c = bi[g]
            out[b + 4 + 8 * k + 2 * g] = c & 0xFF
            out[b + 5 + 8 * k + 2 * g] = c >> 8
            for t in range(8):
                q = values[c, t] * F(ls)
                sqx = fma32(wb[8 * g + t] * xb[8 * g + t], q, sqx)
                sq2 = fma32(q, q * wb[8 * g + t], sq2)
    if sq2 > 0:
        put_f32(out, 0, sqx / sq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq3_rows(out, x, qw, mode, cb):
    for r in prange(x.shape[0]):
        _iq3_row(out[r], x[r], qw, mode, cb)


def _iq3_kernel(out, x, qw, mode):
    _iq3_rows(out, x, qw, mode, _book("iq3_kt"))


@njit(nogil=True, cache=True)
def _iq3_kt_kernel(y, raw):
    # row: d:f32 | blocks { scales:u8[4] | ql:u16[32] | qh:u8[32] } (100 B)
    # as IQ2_KT but |value|, scales are plain nibbles (d·s), and the sign of value 8·ig + j of
    # 32-block ib (first half) is qh[8ig + j] bit ib, of the second half bit ib + 4
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 100 * ibl
            o = 256 * ibl
            for ib in range(4):
                sc = np.int32(raw[r, b + ib])
                sl = d * np.float32(sc & 15)
                sh = d * np.float32(sc >> 4)
                for ig in range(4):
                    j = 4 * ib + ig
                    lo = np.int32(raw[r, b + 4 + 2 * j]) | (np.int32(raw[r, b + 5 + 2 * j]) << 8)
                    hi = np.int32(raw[r, b + 36 + 2 * j]) | (np.int32(raw[r, b + 37 + 2 * j]) << 8)
                    code_values(y, r, o + 8 * j, lo, 4096, 8, sl, True)
                    code_values(y, r, o + 128 + 8 * j, hi, 4096, 8, sh, True)
                    for k in range(8):  # sign flips as products with ±1 (exact, no branch)
                        qh = np.int32(raw[r, b + 68 + 8 * ig + k])
                        y[r, o + 8 * j + k] *= np.float32(1 - 2 * ((qh >> ib) & 1))
                        y[r, o + 128 + 8 * j + k] *= np.float32(1 - 2 * ((qh >> (ib + 4)) & 1))


QUANT = {"iq3_kt": quantizer("iq3_kt", _iq3_kernel)}
DEQUANT = {"iq3_kt": dequantizer("iq3_kt", _iq3_kt_kernel)}
