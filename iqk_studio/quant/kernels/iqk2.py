"""IQ2_K and IQ2_KS kernels, bit-exact with ik_llama.cpp (quantize_row_iq2_k_impl and the x86
AVX2 quantize_row_iq2_ks_fast_impl); quant-formats.md §6.9-6.10.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant._iqk_common import sanitize_weights
from iqk_studio.quant.common import F, fma32, get_fp16, make_qx_quants, nearest_int_mul, put_fp16
from iqk_studio.quant.kernels._iqk23 import (
    IQ2NL,
    MODE_IMATRIX,
    amax_signed,
    best_index_iq2nl,
    check_quant,
    check_raw,
    hsum8,
    sum_sq,
    weights_sigma,
)

QK = 256


@njit(nogil=True, cache=True)
def _sort16(xb, order):
    """order = indices of xb ascending, ties by index (std::sort of (x, i) pairs)."""
    n = order.shape[0]
    for j in range(n):
        order[j] = j
    for j in range(1, n):
        k = order[j]
        v = xb[k]
        i = j - 1
        while i >= 0 and xb[order[i]] > v:
            order[i + 1] = order[i]
            i -= 1
        order[i + 1] = k


@njit(nogil=True, cache=True)
def _search16x4(sumx, sumw, pat):
    """IQ2_K exhaustive 3-split search over sorted prefix sums, 4 value patterns per split.

    Value k goes to sorted ranks [i_k, i_k+1). FMA placement as GCC made it (tree dump):
    b = fma(s1, v0, d2*v1) per (i1, i2); sum = fma(d4, v3, fma(d3, v2, b)).
    Returns (d, shifted) of the last accepted candidate (patterns 1 and 3 are shifted)."""
    best = F(0.0)
    d = F(0.0)
    shifted = False
    n = sumx.shape[0] - 1
    bx = np.empty(4, np.float32)
    bw = np.empty(4, np.float32)
    for i1 in range(n):
        for i2 in range(i1, n):
            dx2 = sumx[i2] - sumx[i1]
            dw2 = sumw[i2] - sumw[i1]
            for p in range(4):
                v0 = pat[p, 0]
                v1 = pat[p, 1]
                bx[p] = fma32(sumx[i1], v0, dx2 * v1)
                bw[p] = fma32(sumw[i1] * v0, v0, dw2 * v1 * v1)
            for i3 in range(i2, n):
                dx3 = sumx[i3] - sumx[i2]
                dw3 = sumw[i3] - sumw[i2]
                dx4 = sumx[n] - sumx[i3]
                dw4 = sumw[n] - sumw[i3]
                for p in range(4):
                    v2 = pat[p, 2]
                    v3 = pat[p, 3]
                    sumqx = fma32(dx4, v3, fma32(dx3, v2, bx[p]))
                    sumq2 = fma32(dw4 * v3, v3, fma32(dw3 * v2, v2, bw[p]))
                    if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                        d = sumqx / sumq2
                        best = d * sumqx
                        shifted = (p & 1) == 1
    return d, shifted


# ---------------------------------------------------------------- IQ2_K
# block (76 bytes): d:f16 | extra:u16 (bit i: 16-block i shifted) | scales:u8[8] (nibble = ls+8)
#                   | qs:u8[64] (element e: qs[32*(e/128) + e%32] bits 2*((e/32)%4))
@njit(nogil=True, cache=True)
def _iq2k_row(out, x, qw, mode):
    n = x.shape[0]
    weight = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    Ls = np.empty(16, np.int64)
    order = np.empty(16, np.int64)
    sumx = np.empty(17, np.float32)
    sumw = np.empty(17, np.float32)
    pat = np.empty((4, 4), np.float32)
    for k in range(4):
        pat[0, k] = IQ2NL[k]
        pat[1, k] = IQ2NL[4 + k]
        pat[2, k] = IQ2NL[3 - k]
        pat[3, k] = IQ2NL[7 - k]
    out[:] = 0
    for ibl in range(n // QK):
        o = 76 * ibl
        x0 = ibl * QK
        sigma2 = F(1.5) * sum_sq(x, x0, QK) / F(QK)
        extra = 0
        max_abs_scale = F(0.0)
        for ib in range(16):
            j0 = x0 + 16 * ib
            weights_sigma(weight, x, qw, j0, 16, sigma2, mode, False)
            s = F(0.0)
            for j in range(16):
                s += weight[j]
            sw[ib] = s
            amax, _ = amax_signed(x, j0, 16)
            if amax < F(1e-16):
                scales[ib] = 0
                continue
            xb = x[j0:j0 + 16]
            _sort16(xb, order)
            sumx[0] = 0
            sumw[0] = 0
            for j in range(16):
                jj = order[j]
                sumw[j + 1] = sumw[j] + weight[jj]
                sumx[j + 1] = fma32(weight[jj], xb[jj], sumx[j])
            d, shifted = _search16x4(sumx, sumw, pat)
            scales[ib] = d
            if shifted:
                extra |= 1 << ib
            max_abs_scale = max(max_abs_scale, abs(d))
        if max_abs_scale == 0:
            continue
        d = make_qx_quants(scales, sw, 8, Ls)
        if d == 0:
            continue
        out[o + 2] = extra & 0xFF
        out[o + 3] = extra >> 8
        idd = F(1.0) / d
        sumqx = F(0.0)
        sumq2 = F(0.0)
        for ib in range(16):
            ls = max(-8, min(7, nearest_int_mul(idd, scales[ib])))
            out[o + 4 + ib // 2] |= (ls + 8) << (4 * (ib % 2))
            dl = d * F(ls)
            if dl == 0:
                continue
            off = 4 if (extra >> ib) & 1 else 0
            j0 = x0 + 16 * ib
            weights_sigma(weight, x, qw, j0, 16, sigma2, mode, False)
            idl = F(1.0) / dl
            ib32 = ib // 2
            qo = o + 12 + 32 * (ib32 // 4) + 16 * (ib % 2)
            for j in range(16):
                al = idl * x[j0 + j]
                ibest = best_index_iq2nl(IQ2NL, off, al)
                out[qo + j] |= ibest << (2 * (ib32 % 4))
                q = F(np.int64(IQ2NL[off + ibest]) * ls)
                wq = weight[j] * q
                sumqx = fma32(wq, x[j0 + j], sumqx)
                sumq2 = fma32(wq, q, sumq2)
        put_fp16(out, o, F(1.030) * (sumqx / sumq2 if sumq2 > 0 else d))


# ---------------------------------------------------------------- IQ2_KS (x86 AVX2 path)
# row: d:f16 | blocks (70 bytes): extra:u16 (bits 0-7: 32-block i shifted; bits 8-15: bit 4
#      of scale i) | scales:u8[4] (low nibbles, 32-block i in nibble i%2 of byte i/2)
#      | qs:u8[64] (element e: qs[32*(e/128) + e%32] bits 2*((e/32)%4)); y = d*(ls-16)*v
# The AVX2 code keeps element e = 8k + l in lane l of vector k; sums are per-lane FMA chains.
@njit(nogil=True, cache=True)
def _nearest4(xe, val, off):
    """Index of the iq2nl value v minimising (xe - d*v)² given val[j] = d*v[j]; ties low."""
    diff = xe - val[0]
    best = diff * diff
    ib = 0
    for j in range(1, 4):
        diff = xe - val[j]
        diff = diff * diff
        if diff < best:
            best = diff
            ib = j
    return ib


@njit(nogil=True, cache=True)
def _try_1block(d, x, j0, w, off, val, mval):
    """compute_1block_iq2ks: best of the direct and mirrored labelling; (ok, d, score)."""
    for j in range(4):
        val[j] = d * IQ2NL[off + j]
        mval[j] = -val[j]
    qx1 = np.zeros(8, np.float32)
    q21 = np.zeros(8, np.float32)
    qx2 = np.zeros(8, np.float32)
    q22 = np.zeros(8, np.float32)
    for k in range(4):
        for lane in range(8):
            e = 8 * k + lane
            xe = x[j0 + e]
            q1 = IQ2NL[off + _nearest4(xe, val, off)]
            q2 = IQ2NL[off + _nearest4(xe, mval, off)]
            wq1 = w[e] * q1
            wq2 = w[e] * q2
            qx1[lane] = fma32(wq1, xe, qx1[lane])
            q21[lane] = fma32(wq1, q1, q21[lane])
            qx2[lane] = fma32(wq2, xe, qx2[lane])
            q22[lane] = fma32(wq2, q2, q22[lane])
    sumqx1, sumq21 = hsum8(qx1), hsum8(q21)
    sumqx2, sumq22 = hsum8(qx2), hsum8(q22)
    ok = False
    bd = F(0.0)
    score = F(0.0)
    if sumq21 > 0:
        bd = sumqx1 / sumq21
        score = sumqx1 * bd
        ok = True
    if sumq22 > 0 and (not ok or sumqx2 * sumqx2 > score * sumq22):
        bd = sumqx2 / sumq22
        score = sumqx2 * bd
        ok = True
    return ok, bd, score


@njit(nogil=True, cache=True)
def _rmse_1block(d, x, j0, w, off, val, idx):
    """compute_1block_iq2ks_rmse: nearest labels into idx, returns Σ w·(x - d·v)² (lane order)."""
    for j in range(4):
        val[j] = d * IQ2NL[off + j]
    acc = np.zeros(8, np.float32)
    md = -d
    for k in range(4):
        for lane in range(8):
            e = 8 * k + lane
            xe = x[j0 + e]
            ib = _nearest4(xe, val, off)
            idx[e] = ib
            diff = fma32(md, IQ2NL[off + ib], xe)
            acc[lane] = fma32(w[e] * diff, diff, acc[lane])
    return hsum8(acc)


@njit(nogil=True, cache=True)
def _iq2ks_block_scale(x, j0, w, val, mval):
    """Per-32-block scale search of the fast path: (scale, shifted)."""
    amax, mx = amax_signed(x, j0, 32)
    if amax < F(1e-14):
        return F(0.0), False
    d = mx / F(22.0)
    best = F(0.0)
    ok, td, ts = _try_1block(d, x, j0, w, 0, val, mval)
    if ok:
        best = ts
        d = td
    shifted = False
    for off in (0, 4):
        for itry in range(-13, 14):
            ok, td, ts = _try_1block(mx / (IQ2NL[off] + F(0.5) * F(itry)), x, j0, w, off, val, mval)
            if ok and ts > best:
                best = ts
                d = td
                shifted = off == 4
    return d, shifted


@njit(nogil=True, cache=True)
def _iq2ks_row(out, x, qw, mode):
    n = x.shape[0]
    nb = n // QK
    weight = np.empty(32, np.float32)
    val = np.empty(4, np.float32)
    mval = np.empty(4, np.float32)
    scales = np.empty(8 * nb, np.float32)
    sw = np.empty(8 * nb, np.float32)
    Ls = np.empty(8 * nb, np.int64)
    idx1 = np.empty(32, np.int64)
    idx2 = np.empty(32, np.int64)
    out[:] = 0
    for ibl in range(nb):
        x0 = ibl * QK
        sigma2 = F(1.5) * sum_sq(x, x0, QK) / F(QK)
        extra = 0
        for ib in range(8):
            j0 = x0 + 32 * ib
            weights_sigma(weight, x, qw, j0, 32, sigma2, mode, True)
            s = F(0.0)
            for j in range(32):
                s += weight[j]
            sw[8 * ibl + ib] = s
            d, shifted = _iq2ks_block_scale(x, j0, weight, val, mval)
            scales[8 * ibl + ib] = d
            if shifted:
                extra |= 1 << ib
        out[2 + 70 * ibl] = extra
    d = make_qx_quants(scales, sw, 16, Ls)
    if d == 0:
        return
    vqx = np.zeros(8, np.float32)
    vq2 = np.zeros(8, np.float32)
    for ibl in range(nb):
        o = 2 + 70 * ibl
        x0 = ibl * QK
        sigma2 = F(1.5) * sum_sq(x, x0, QK) / F(QK)
        for ib in range(8):
            i = 8 * ibl + ib
            off = 4 if (out[o] >> ib) & 1 else 0
            j0 = x0 + 32 * ib
            weights_sigma(weight, x, qw, j0, 32, sigma2, mode, True)
            dl = d * F(Ls[i] - 16)
            rmse1 = _rmse_1block(dl, x, j0, weight, off, val, idx1)
            if Ls[i] > 0 and dl > scales[i]:
                if _rmse_1block(d * F(Ls[i] - 17), x, j0, weight, off, val, idx2) < rmse1:
                    Ls[i] -= 1
                    idx1[:] = idx2
            elif Ls[i] < 15 and dl < scales[i]:
                if _rmse_1block(d * F(Ls[i] - 15), x, j0, weight, off, val, idx2) < rmse1:
                    Ls[i] += 1
                    idx1[:] = idx2
            vd = F(Ls[i] - 16)
            for k in range(4):
                for lane in range(8):
                    e = 8 * k + lane
                    vq = vd * IQ2NL[off + idx1[e]]
                    wvq = weight[e] * vq
                    vqx[lane] = fma32(wvq, x[j0 + e], vqx[lane])
                    vq2[lane] = fma32(wvq, vq, vq2[lane])
            ls = Ls[i]
            out[o + 2 + ib // 2] |= (ls & 0xF) << (4 * (ib % 2))
            out[o + 1] |= (ls >> 4) << ib
            for e in range(32):
                out[o + 6 + 32 * (ib // 4) + e] |= idx1[e] << (2 * (ib % 4))
    sumqx = hsum8(vqx)
    sumq2 = hsum8(vq2)
    put_fp16(out, 0, sumqx / sumq2 if sumq2 > 0 else d)


@njit(nogil=True, cache=True, parallel=True)
def _quant_rows(out, x, qw, mode, kind):
    """out (rows, row_bytes) from x (rows, n); qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        w = qw
        if mode == MODE_IMATRIX:
            w = np.empty_like(qw)
            sanitize_weights(w, qw, x[r], 16 if kind == 0 else 32)
        if kind == 0:
            _iq2k_row(out[r], x[r], w, mode)
        else:
            _iq2ks_row(out[r], x[r], w, mode)


@njit(nogil=True, cache=True, parallel=True)
def _dequant_iq2k(y, raw):
    for r in prange(raw.shape[0]):
        for ibl in range(y.shape[1] // QK):
            o = 76 * ibl
            d = get_fp16(raw[r], o)
            extra = np.int64(raw[r, o + 2]) | (np.int64(raw[r, o + 3]) << 8)
            for ib in range(16):
                dl = d * F((np.int64(raw[r, o + 4 + ib // 2]) >> (4 * (ib % 2)) & 0xF) - 8)
                off = 4 if (extra >> ib) & 1 else 0
                ib32 = ib // 2
                qo = o + 12 + 32 * (ib32 // 4) + 16 * (ib % 2)
                for j in range(16):
                    q = (raw[r, qo + j] >> (2 * (ib32 % 4))) & 3
                    y[r, QK * ibl + 16 * ib + j] = dl * IQ2NL[off + q]


@njit(nogil=True, cache=True, parallel=True)
def _dequant_iq2ks(y, raw):
    for r in prange(raw.shape[0]):
        d = get_fp16(raw[r], 0)
        for ibl in range(y.shape[1] // QK):
            o = 2 + 70 * ibl
            extra = np.int64(raw[r, o]) | (np.int64(raw[r, o + 1]) << 8)
            for ib in range(8):
                ls = (np.int64(raw[r, o + 2 + ib // 2]) >> (4 * (ib % 2))) & 0xF
                ls |= ((extra >> (8 + ib)) & 1) << 4
                dl = d * F(ls - 16)
                off = 4 if (extra >> ib) & 1 else 0
                for e in range(32):
                    q = (raw[r, o + 6 + 32 * (ib // 4) + e] >> (2 * (ib % 4))) & 3
                    y[r, QK * ibl + 32 * ib + e] = dl * IQ2NL[off + q]


def quantize_iq2_k(x, qw, mode):
    x, qw = check_quant(x, qw, mode)
    out = np.empty((x.shape[0], 76 * (x.shape[1] // QK)), np.uint8)
    _quant_rows(out, x, qw, mode, 0)
    return out


def quantize_iq2_ks(x, qw, mode):
    x, qw = check_quant(x, qw, mode)
    out = np.empty((x.shape[0], 2 + 70 * (x.shape[1] // QK)), np.uint8)
    _quant_rows(out, x, qw, mode, 1)
    return out


def dequantize_iq2_k(raw, n):
    raw, y = check_raw(raw, n, 76 * (n // QK))
    _dequant_iq2k(y, raw)
    return y


def dequantize_iq2_ks(raw, n):
    raw, y = check_raw(raw, n, 2 + 70 * (n // QK))
    _dequant_iq2ks(y, raw)
    return y


QUANT = {"iq2_k": quantize_iq2_k, "iq2_ks": quantize_iq2_ks}
DEQUANT = {"iq2_k": dequantize_iq2_k, "iq2_ks": dequantize_iq2_ks}
