"""IQ2_K kernels, bit-exact with ik_llama.cpp (quantize_row_iq2_k_impl); quant-formats.md §6.9.
FMA placement from GCC 12's tree dump of iqk_quantize.cpp.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    amax_signed,
    fma32,
    get_fp16,
    make_qx_quants,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels.iqk.common import sanitize_weights
from iqk_studio.quant.kernels.iqk.common_low import (
    IQ2NL,
    MODE_IMATRIX,
    best_index_iq2nl,
    split_hit16,
    sum_sq,
    weights_sigma,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

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
def _split_sums(sumx, sumw, i1, i2, i3, n, v0, v1, v2, v3):
    """sumqx, sumq2 of one value order for ranks split at i1 <= i2 <= i3, FMA placement as GCC
    made it (tree dump): fma(d4, v3, fma(d3, v2, fma(s1, v0, d2*v1)))."""
    bx = fma32(sumx[i1], v0, (sumx[i2] - sumx[i1]) * v1)
    bw = fma32(sumw[i1] * v0, v0, (sumw[i2] - sumw[i1]) * v1 * v1)
    sumqx = fma32(sumx[n] - sumx[i3], v3, fma32(sumx[i3] - sumx[i2], v2, bx))
    sumq2 = fma32((sumw[n] - sumw[i3]) * v3, v3, fma32((sumw[i3] - sumw[i2]) * v2, v2, bw))
    return sumqx, sumq2


@njit(nogil=True, cache=True)
def _any_accept(sumx, sumw, i1, i2, pat, best, par):
    """Bit mask of the i3 >= i2 for which some candidate (i1, i2, i3, p) passes
    `sumqx² > best·sumq2` against this best (0: none can be accepted). The i1/i2 parts of
    _split_sums here, the i3 part in one <16 x float> pass (split_hit16). par: 17 float32."""
    for p in range(4):
        v0 = pat[p, 0]
        v1 = pat[p, 1]
        par[p] = fma32(sumx[i1], v0, (sumx[i2] - sumx[i1]) * v1)
        par[4 + p] = fma32(sumw[i1] * v0, v0, (sumw[i2] - sumw[i1]) * v1 * v1)
        par[8 + 2 * p] = pat[p, 2]
        par[9 + 2 * p] = pat[p, 3]
    par[16] = best
    return split_hit16(sumx, sumw, par, i2)


@njit(nogil=True, cache=True)
def _search16x4(sumx, sumw, pat):
    """IQ2_K exhaustive 3-split search over sorted prefix sums, 4 value orders per split (rows
    of pat: base, shifted, base reversed, shifted reversed). Value k goes to sorted ranks
    [i_k, i_k+1). Returns (d, shifted) of the last accepted candidate.
    A vectorized pre-test skips every (i1, i2) row none of whose candidates beats the current
    best (most of them); a row with a hit is scanned in order from its first hit, as the
    reference does."""
    best = F(0.0)
    d = F(0.0)
    shifted = False
    n = sumx.shape[0] - 1
    assert n == 16
    par = np.empty(17, np.float32)
    for i1 in range(n):
        for i2 in range(i1, n):
            hits = _any_accept(sumx, sumw, i1, i2, pat, best, par)
            if hits == 0:
                continue
            first = i2  # candidates before the first hit fail against this best: skip them
            while not (hits >> first) & 1:
                first += 1
            for i3 in range(first, n):
                for p in range(4):
                    sumqx, sumq2 = _split_sums(sumx, sumw, i1, i2, i3, n,
                                               pat[p, 0], pat[p, 1], pat[p, 2], pat[p, 3])
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


@njit(nogil=True, cache=True, parallel=True)
def _quant_rows(out, x, qw, mode):
    """out (rows, row_bytes) from x (rows, n); qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        w = qw
        if mode == MODE_IMATRIX:
            w = np.empty_like(qw)
            sanitize_weights(w, qw, x[r], 16)
        _iq2k_row(out[r], x[r], w, mode)


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


QUANT = {"iq2_k": quantizer("iq2_k", _quant_rows)}
DEQUANT = {"iq2_k": dequantizer("iq2_k", _dequant_iq2k)}
