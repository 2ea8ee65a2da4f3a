"""q3_K (256-element super-blocks of 16 3-bit sub-blocks with 6-bit scales): port of
ggml-quants.c (ik_llama.cpp 8337e4cd3) quantize_row_q3_K_ref / _impl, and its dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    fma32,
    get_fp16,
    make_qx_quants_ggml,
    nearest_int,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT
from iqk_studio.quant.kernels.kquants.q2_k import _pack2
from iqk_studio.quant.kernels.legacy.weights import block_weights, sum_sq
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


# ---- Q3_K  hmask:u8[32] | qs:u8[64] | scales:u8[12] | d:f16
@njit(nogil=True, cache=True, error_model="numpy")
def make_q3_quants(x, nmax, L):
    """ggml-quants.c make_q3_quants with do_rmse (w = x²): L[i] = l + nmax; returns scale."""
    n = x.shape[0]
    amax = F(0.0)
    mx = F(0.0)
    for i in range(n):
        if abs(x[i]) > amax:
            amax = abs(x[i])
            mx = x[i]
    if amax < F(1e-15):
        L[:] = 0
        return F(0.0)
    iscale = F(-nmax) / mx
    Li = np.empty(n, np.int64)
    sumlx = F(0.0)
    suml2 = F(0.0)
    for i in range(n):
        li = max(-nmax, min(nmax - 1, nearest_int_mul(iscale, x[i])))
        Li[i] = li
        w = x[i] * x[i]
        sumlx = fma32(w * x[i], F(li), sumlx)
        suml2 = fma32(w * F(li), F(li), suml2)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            slx = fma32(-(w * x[i]), F(Li[i]), sumlx)
            if slx > 0:
                sl2 = fma32(-(w * F(Li[i])), F(Li[i]), suml2)
                new_l = max(-nmax, min(nmax - 1, nearest_int(x[i] * sl2 / slx)))
                if new_l != Li[i]:
                    slx = fma32(w * x[i], F(new_l), slx)
                    sl2 = fma32(w * F(new_l), F(new_l), sl2)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        Li[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] = Li[i] + nmax
    return sumlx / suml2


@njit(nogil=True, cache=True, error_model="numpy")
def _q3_pack_scale(sc, j, lv):
    """6-bit scale lv (0..63) of 16-block j into the 12-byte Q3_K scales (zeroed first)."""
    if j < 8:
        sc[j] = lv & 0xF
    else:
        sc[j - 8] |= (lv & 0xF) << 4
    sc[8 + j % 4] |= (lv >> 4) << (2 * (j // 4))


@njit(nogil=True, cache=True, error_model="numpy")
def q3_scale(sc, j):
    if j < 8:
        s = np.int64(sc[j]) & 0xF
    else:
        s = np.int64(sc[j - 8]) >> 4
    return (s | (((np.int64(sc[8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(nogil=True, cache=True, error_model="numpy")
def _q3_k_row(y, x, qw, mode):
    L = np.empty(256, np.uint8)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    Ls = np.empty(16, np.uint8)
    for ib in range(x.shape[0] // 256):
        xb = x[256 * ib:256 * ib + 256]
        yb = y[110 * ib:110 * ib + 110]
        sc = yb[96:108]
        sc[:] = 0
        if mode == MODE_DEFAULT:
            max_scale = F(0.0)
            amax = F(0.0)
            for j in range(16):
                s = make_q3_quants(xb[16 * j:16 * j + 16], 4, L[16 * j:16 * j + 16])
                scales[j] = s
                if abs(s) > amax:
                    amax = abs(s)
                    max_scale = s
            if max_scale != 0:
                iscale = F(-32.0) / max_scale
                for j in range(16):
                    lv = np.int64(np.int8(nearest_int_mul(iscale, scales[j]) & 0xFF))
                    _q3_pack_scale(sc, j, max(-32, min(31, lv)) + 32)
                put_fp16(yb, 108, F(1.0) / iscale)
            else:
                put_fp16(yb, 108, F(0.0))
        else:
            sigma2 = F(2.0) * sum_sq(xb) / F(256.0)
            for j in range(16):
                xs = xb[16 * j:16 * j + 16]
                block_weights(w, xs, qw[256 * ib + 16 * j:256 * ib + 16 * j + 16], mode, sigma2, 0)
                sumw = F(0.0)
                for k in range(16):
                    sumw += w[k]
                sw[j] = sumw
                scales[j] = make_qx_quants_ggml(xs, w, 4, L[16 * j:16 * j + 16])
            d_block = make_qx_quants_ggml(scales, sw, 32, Ls)
            for j in range(16):
                _q3_pack_scale(sc, j, np.int64(Ls[j]))
            put_fp16(yb, 108, d_block)
        d = get_fp16(yb, 108)
        for j in range(16):
            dj = d * F(q3_scale(sc, j))
            if dj == 0:
                continue
            for k in range(16):
                L[16 * j + k] = max(-4, min(3, nearest_int(xb[16 * j + k] / dj))) + 4
        yb[:32] = 0
        for j in range(256):
            if L[j] > 3:
                yb[j % 32] |= 1 << (j // 32)
                L[j] -= 4
        _pack2(yb[32:96], L)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q3_k_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q3_k_row(out[r], x[r], qw, mode)


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _q3_k_dequant(out, raw):
    for r in prange(raw.shape[0]):
        for ib in range(out.shape[1] // 256):
            b = raw[r, 110 * ib:110 * ib + 110]
            yb = out[r, 256 * ib:256 * ib + 256]
            qs = b[32:96]
            for e in range(256):
                h, rr = e // 128, e % 128
                q = (np.int64(qs[32 * h + rr % 32]) >> (2 * (rr // 32))) & 3
                if not (b[e % 32] >> (e // 32)) & 1:
                    q -= 4
                dl = get_fp16(b, 108) * F(q3_scale(b[96:108], e // 16))
                yb[e] = dl * F(q)


QUANT = {"q3_K": quantizer("q3_K", q3_k_rows)}
DEQUANT = {"q3_K": dequantizer("q3_K", _q3_k_dequant)}
