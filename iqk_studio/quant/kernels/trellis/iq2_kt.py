"""iq1_kt (1.75 bpw) and iq2_kt (2.125 bpw): one quantizer (ik_llama.cpp quantize_row_iq1_kt_impl /
quantize_row_iq2_kt_impl, 8-value groups, a block scale from the iq4k table) and their
dequantizers."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import fma32
from iqk_studio.quant.kernels.iqk.common import IQ4K, best_index_iq4nl, put_f32
from iqk_studio.quant.kernels.trellis.codebook import code_values, codebook
from iqk_studio.quant.kernels.trellis.search import best_scale, find_match8, set_weights
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

F = np.float32
IQ4K_VALUES = IQ4K[:16].copy()  # the block-scale table (iq4k_values without the shifted half)


@njit(nogil=True, cache=True, error_model="numpy")
def _block_trials(scales, idx, x, w, amax_row, ib, cb, iq1, buf):
    """IQ1_KT / IQ2_KT first pass on 32-block ib: codes at ±amax/scale_0 (IQ1_KT: also at
    scale_0 - 8), keep the better block scale; returns it (0 for a ~zero block)."""
    values = cb[0]
    xb = x[32 * ib:32 * ib + 32]
    wb = w[32 * ib:32 * ib + 32]
    amax = F(0.0)
    for j in range(32):
        amax = max(amax, abs(xb[j]))
    if amax < F(1e-16):
        scales[ib] = 0
        idx[4 * ib:4 * ib + 4] = 0
        return
    bi = np.empty(8, dtype=np.int64)
    scale_0 = max(F(90.0), F(124.0) * amax / amax_row)
    find_match8(bi[0:4], amax / scale_0, xb, wb, cb, buf)
    dp, sp = best_scale(xb, wb, values, bi[0:4], 8)
    find_match8(bi[4:8], -amax / scale_0, xb, wb, cb, buf)
    dm, sm = best_scale(xb, wb, values, bi[4:8], 8)
    h = 0 if sp > sm else 4
    scales[ib] = dp if sp > sm else dm
    sbest = sp if sp > sm else sm
    idx[4 * ib:4 * ib + 4] = bi[h:h + 4]
    if not iq1:
        return
    scale_0 -= F(8.0)
    find_match8(bi[0:4], amax / scale_0, xb, wb, cb, buf)
    dp1, sp1 = best_scale(xb, wb, values, bi[0:4], 8)
    find_match8(bi[4:8], -amax / scale_0, xb, wb, cb, buf)
    dm1, sm1 = best_scale(xb, wb, values, bi[4:8], 8)
    if sp1 > sbest or sm1 > sbest:
        h = 0 if sp1 > sm1 else 4
        scales[ib] = dp1 if sp1 > sm1 else dm1
        idx[4 * ib:4 * ib + 4] = bi[h:h + 4]


@njit(nogil=True, cache=True, error_model="numpy")
def _row_scale_iq4k(x, w, scales, idx, values, max_scale):
    """The row scale d over the 16 iq4k block-scale levels: 19 trial inverse scales."""
    d = max_scale / IQ4K[0]
    best = F(0.0)
    for itry in range(-9, 10):
        inv = F(itry + np.int32(IQ4K[0])) / max_scale
        sqx = F(0.0)
        sq2 = F(0.0)
        for ib in range(scales.shape[0]):
            dl = IQ4K[best_index_iq4nl(IQ4K, 0, inv * scales[ib])]
            for j in range(32):
                q = values[idx[4 * ib + j // 8], j % 8] * dl
                sqx = fma32(q, w[32 * ib + j] * x[32 * ib + j], sqx)
                sq2 = fma32(q, q * w[32 * ib + j], sq2)
        if sq2 > 0 and sqx * sqx > best * sq2:
            d = sqx / sq2
            best = d * sqx
    return d


@njit(nogil=True, cache=True, error_model="numpy")
def _final_iq12(out, x, w, d, ls_of, idx, cb, iq1, buf):
    """Search again at the stored scales d·ls, keep the previous codes when their weighted error is
    smaller, pack them; returns the least-squares row scale (0 when Σwq² <= 0 -> unchanged)."""
    values = cb[0]
    bi = np.empty(4, dtype=np.int64)
    sqx = F(0.0)
    sq2 = F(0.0)
    for ib in range(ls_of.shape[0]):
        ls = ls_of[ib]
        dl = d * F(ls)
        xb = x[32 * ib:32 * ib + 32]
        wb = w[32 * ib:32 * ib + 32]
        find_match8(bi, dl, xb, wb, cb, buf)
        m1 = F(0.0)
        m2 = F(0.0)
        for j in range(32):
            d1 = fma32(-dl, values[idx[4 * ib + j // 8], j % 8], xb[j])
            d2 = fma32(-dl, values[bi[j // 8], j % 8], xb[j])
            m1 = fma32(d1, d1 * wb[j], m1)
            m2 = fma32(d2, d2 * wb[j], m2)
        if m1 < m2:
            bi[:] = idx[4 * ib:4 * ib + 4]
        else:
            idx[4 * ib:4 * ib + 4] = bi
        b = 4 + (56 if iq1 else 68) * (ib // 8)
        k = ib % 8
        for g in range(4):
            c = bi[g]
            if iq1:  # sh[8] | ql[32] | qh[16]
                out[b + 8 + 4 * k + g] = c & 0xFF
                out[b + 40 + 4 * (k % 4) + g] |= ((c >> 8) & 0xF) << (4 * (k // 4))
                out[b + k] |= (c >> 12) << (4 + g)
            else:  # scales[4] | ql u16[32]
                out[b + 4 + 8 * k + 2 * g] = c & 0xFF
                out[b + 5 + 8 * k + 2 * g] = c >> 8
            for t in range(8):
                q = values[c, t] * F(ls)
                sqx = fma32(wb[8 * g + t] * xb[8 * g + t], q, sqx)
                sq2 = fma32(wb[8 * g + t] * q, q, sq2)
    return sqx, sq2


@njit(nogil=True, cache=True, error_model="numpy")
def _iq12_row(out, x, qw, mode, cb, iq1):
    # IQ2_KT row: d f32 | per 256: scales u8[4] (block ib low nibble, ib+4 high) | ql u16[32]
    # IQ1_KT row: d f32 | per 256: sh u8[8] (scale nibble | code bit 12 of group g at 4+g)
    #             | ql u8[32] | qh u8[16] (code bits 8-11, blocks 0-3 low / 4-7 high nibble)
    n = x.shape[0]
    nb = n // 32
    out[:] = 0
    w = np.empty(n, dtype=np.float32)
    set_weights(w, x, qw, mode, False)
    amax_row = F(0.0)
    for j in range(n):
        amax_row = max(amax_row, abs(x[j]))
    scales = np.zeros(nb, dtype=np.float32)
    idx = np.zeros(4 * nb, dtype=np.int64)
    buf = np.empty(cb[0].shape[0], dtype=np.float32)
    amax_scale = F(0.0)
    max_scale = F(0.0)
    for ib in range(nb):
        _block_trials(scales, idx, x, w, amax_row, ib, cb, iq1, buf)
        if abs(scales[ib]) > amax_scale:
            amax_scale = abs(scales[ib])
            max_scale = scales[ib]
    if max_scale == 0:
        return
    d = _row_scale_iq4k(x, w, scales, idx, cb[0], max_scale)
    inv = F(1.0) / d if d != 0 else F(0.0)
    ls_of = np.empty(nb, dtype=np.int64)
    for ib in range(nb):
        li = best_index_iq4nl(IQ4K, 0, inv * scales[ib])
        ls_of[ib] = np.int64(IQ4K[li])
        b = 4 + (56 if iq1 else 68) * (ib // 8)
        if iq1:
            out[b + ib % 8] = li
        else:
            out[b + ib % 4] |= li << (4 * ((ib % 8) // 4))
    put_f32(out, 0, d)
    if d == 0:
        return
    sqx, sq2 = _final_iq12(out, x, w, d, ls_of, idx, cb, iq1, buf)
    if sq2 > 0:
        put_f32(out, 0, sqx / sq2 * F(1.07) if iq1 else sqx / sq2)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq12_rows(out, x, qw, mode, cb, iq1):
    for r in prange(x.shape[0]):
        _iq12_row(out[r], x[r], qw, mode, cb, iq1)


def _book(name):
    b = codebook(name)
    return (b.values, b.mids, b.start, b.members, b.cvt, b.vt)


def _iq1_kernel(out, x, qw, mode):
    _iq12_rows(out, x, qw, mode, _book("iq1_kt"), True)


def _iq2_kernel(out, x, qw, mode):
    _iq12_rows(out, x, qw, mode, _book("iq2_kt"), False)


@njit(nogil=True, cache=True)
def _iq1_kt_kernel(y, raw, kv):
    # row: d:f32 | blocks { sh:u8[8] | ql:u8[32] | qh:u8[16] } (56 B)
    # 32-block ib: scale kv[sh[ib] & 15]; group ig of 8: 13-bit code = ql[4ib+ig]
    #   | bits 8-11 from qh[4(ib%4)+ig] (low nibble for ib<4, high for ib>=4) | bit 12 = sh bit 4+ig
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 56 * ibl
            for ib in range(8):
                sh = np.int32(raw[r, b + ib])
                sl = d * kv[sh & 15]
                for ig in range(4):
                    qh = np.int32(raw[r, b + 40 + 4 * (ib % 4) + ig])
                    code = np.int32(raw[r, b + 8 + 4 * ib + ig])
                    code |= (qh << (8 - 4 * (ib // 4))) & 0xF00
                    code |= (sh << (8 - ig)) & 0x1000
                    code_values(y, r, 256 * ibl + 32 * ib + 8 * ig, code, 4096, 8, sl, False)


@njit(nogil=True, cache=True)
def _iq2_kt_kernel(y, raw, kv):
    # row: d:f32 | blocks { scales:u8[4] | ql:u16[32] } (68 B)
    # code j<16 -> values 8j.. (first half), code 16+j -> 128 + 8j..; 32-block ib<4 uses the low
    # nibble of scales[ib] for the first half and the high nibble for the second half
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 68 * ibl
            for ib in range(4):
                sc = np.int32(raw[r, b + ib])
                sl = d * kv[sc & 15]
                sh = d * kv[sc >> 4]
                for ig in range(4):
                    j = 4 * ib + ig
                    lo = np.int32(raw[r, b + 4 + 2 * j]) | (np.int32(raw[r, b + 5 + 2 * j]) << 8)
                    hi = np.int32(raw[r, b + 36 + 2 * j]) | (np.int32(raw[r, b + 37 + 2 * j]) << 8)
                    code_values(y, r, 256 * ibl + 8 * j, lo, 4096, 8, sl, False)
                    code_values(y, r, 256 * ibl + 128 + 8 * j, hi, 4096, 8, sh, False)


QUANT = {"iq1_kt": quantizer("iq1_kt", _iq1_kernel), "iq2_kt": quantizer("iq2_kt", _iq2_kernel)}
DEQUANT = {"iq1_kt": dequantizer("iq1_kt", lambda out, raw: _iq1_kt_kernel(out, raw, IQ4K_VALUES)),
           "iq2_kt": dequantizer("iq2_kt", lambda out, raw: _iq2_kt_kernel(out, raw, IQ4K_VALUES))}
