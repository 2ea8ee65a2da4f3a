"""Quantizers of the trellis types IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT (ik_llama.cpp iqk_quantize.cpp
quantize_row_iq*_kt_impl): per 32-block codebook search at a few trial scales, one row scale
fitted over the block scales, a final search at the stored scales and a least-squares row scale.

Rows are independent and deterministic (the codebook bins are fixed, no k-means), so prange
over rows gives the reference's bytes. One caveat: the reference reuses its block-scale buffer
across the rows of one call and IQ4_KT reads it back for a block where no trial scored > 0 (a
degenerate block); we start such a block from 0, where llama-quantize's result would depend on
how its threads chunked the rows. (IQ3_KT's reused code buffer is only read times 0.)
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant._iqk_common import (
    IQ4K,
    best_index_iq4nl,
    make_quant,
    put_f32,
    row_bytes_fn,
)
from iqk_studio.quant.common import fma32, nearest_int
from iqk_studio.quant.kernels._trellis_cb import codebook
from iqk_studio.quant.kernels._trellis_search import (
    best_scale,
    find_match4,
    find_match8,
    set_weights,
)

F = np.float32


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


def _book(name):
    b = codebook(name)
    return (b.values, b.mids, b.start, b.members, b.cvt, b.vt)


def _iq1_kernel(out, x, qw, mode):
    _iq12_rows(out, x, qw, mode, _book("iq1_kt"), True)


def _iq2_kernel(out, x, qw, mode):
    _iq12_rows(out, x, qw, mode, _book("iq2_kt"), False)


def _book4(name):
    b = codebook(name)
    return (b.values, b.start, b.members, b.cvt)


def _iq4_kernel(out, x, qw, mode):
    _iq4_rows(out, x, qw, mode, _book4("iq4_kt"), _book4("iq4_kt_shift"))


def _iq3_kernel(out, x, qw, mode):
    _iq3_rows(out, x, qw, mode, _book("iq3_kt"))


QUANT = {
    "iq1_kt": make_quant(_iq1_kernel, row_bytes_fn(56, 4)),
    "iq2_kt": make_quant(_iq2_kernel, row_bytes_fn(68, 4)),
    "iq3_kt": make_quant(_iq3_kernel, row_bytes_fn(100, 4)),
    "iq4_kt": make_quant(_iq4_kernel, row_bytes_fn(128, 4)),
}
