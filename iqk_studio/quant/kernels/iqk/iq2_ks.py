"""IQ2_KS kernels, bit-exact with ik_llama.cpp's x86 AVX2 quantizer
(quantize_row_iq2_ks_fast_impl, the llama-quantize default on x86); quant-formats.md §6.10.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F, amax_signed, fma32, get_fp16, make_qx_quants, put_fp16
from iqk_studio.quant.kernels.iqk.common import sanitize_weights
from iqk_studio.quant.kernels.iqk.common_low import (
    IQ2NL,
    MODE_IMATRIX,
    hsum8,
    label4_sums,
    nearest4_rmse,
    sum_sq,
    weights_sigma,
)
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

QK = 256


# ---------------------------------------------------------------- IQ2_KS (x86 AVX2 path)
# row: d:f16 | blocks (70 bytes): extra:u16 (bits 0-7: 32-block i shifted; bits 8-15: bit 4
#      of scale i) | scales:u8[4] (low nibbles, 32-block i in nibble i%2 of byte i/2)
#      | qs:u8[64] (element e: qs[32*(e/128) + e%32] bits 2*((e/32)%4)); y = d*(ls-16)*v
# The AVX2 code keeps element e = 8k + l in lane l of vector k; sums are per-lane FMA chains.
@njit(nogil=True, cache=True)
def _try_1block(d, x, j0, w, off, lab):
    """compute_1block_iq2ks: best of the direct and mirrored labelling; (ok, d, score).
    lab: (2, 4) float32 scratch. Labels and sums are one <8 x float> block (label4_sums)."""
    v, t = lab[0], lab[1]
    for j in range(4):
        t[j] = IQ2NL[off + j]
        v[j] = d * t[j]
    sumqx1, sumq21, sumqx2, sumq22 = label4_sums(x[j0:j0 + 32], w, v, t)
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
def _rmse_1block(d, x, j0, w, off, idx, acc):
    """compute_1block_iq2ks_rmse: nearest labels into idx, returns Σ w·(x - d·v)² (lane order).
    acc: (>= 2, >= 32) float32 scratch; one <8 x float> block (nearest4_rmse)."""
    v, t, fidx = acc[0], acc[1], acc[2]
    for j in range(4):
        t[j] = IQ2NL[off + j]
        v[j] = d * t[j]
    v[4] = -d
    r = nearest4_rmse(x[j0:j0 + 32], w, v, t, fidx)
    for e in range(32):
        idx[e] = np.int64(fidx[e])
    return r


@njit(nogil=True, cache=True)
def _iq2ks_block_scale(x, j0, w, lab):
    """Per-32-block scale search of the fast path: (scale, shifted)."""
    amax, mx = amax_signed(x, j0, 32)
    if amax < F(1e-14):
        return F(0.0), False
    d = mx / F(22.0)
    best = F(0.0)
    ok, td, ts = _try_1block(d, x, j0, w, 0, lab)
    if ok:
        best = ts
        d = td
    shifted = False
    for off in (0, 4):
        for itry in range(-13, 14):
            dt = mx / (IQ2NL[off] + F(0.5) * F(itry))
            ok, td, ts = _try_1block(dt, x, j0, w, off, lab)
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
    acc = np.empty((3, 32), np.float32)
    lab = np.empty((2, 4), np.float32)
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
            d, shifted = _iq2ks_block_scale(x, j0, weight, lab)
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
            rmse1 = _rmse_1block(dl, x, j0, weight, off, idx1, acc)
            if Ls[i] > 0 and dl > scales[i]:
                if _rmse_1block(d * F(Ls[i] - 17), x, j0, weight, off, idx2, acc) < rmse1:
                    Ls[i] -= 1
                    idx1[:] = idx2
            elif Ls[i] < 15 and dl < scales[i]:
                if _rmse_1block(d * F(Ls[i] - 15), x, j0, weight, off, idx2, acc) < rmse1:
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
def _quant_rows(out, x, qw, mode):
    """out (rows, row_bytes) from x (rows, n); qw (n,) used only in MODE_IMATRIX."""
    for r in prange(x.shape[0]):
        w = qw
        if mode == MODE_IMATRIX:
            w = np.empty_like(qw)
            sanitize_weights(w, qw, x[r], 32)
        _iq2ks_row(out[r], x[r], w, mode)


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


QUANT = {"iq2_ks": quantizer("iq2_ks", _quant_rows)}
DEQUANT = {"iq2_ks": dequantizer("iq2_ks", _dequant_iq2ks)}
