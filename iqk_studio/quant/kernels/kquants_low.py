"""q2_K, q3_K (256-block) and mxfp4 (32-block): ports of ggml-quants.c / iqk_quantize.cpp
(ik_llama.cpp 8337e4cd3) quantizers and their dequantizers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    fma32,
    get_fp16,
    make_qkx2_quants,
    make_qkx3_quants,
    make_qp_quants,
    make_qx_quants_ggml,
    nearest_int,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT
from iqk_studio.quant.kernels.legacy import _check_x, block_weights, sum_sq

KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def _pack2(qs, L):
    """2-bit labels of a 256-block into qs[64] (Q2_K/Q3_K order)."""
    for h in range(2):
        for k in range(32):
            qs[32 * h + k] = (L[128 * h + k] | (L[128 * h + k + 32] << 2)
                              | (L[128 * h + k + 64] << 4) | (L[128 * h + k + 96] << 6))


# ---- Q2_K  scales:u8[16] | qs:u8[64] | d:f16 | dmin:f16
@njit(nogil=True, cache=True, error_model="numpy")
def is_trinet(x):
    """quantize_row_q2_K_ref's ternary-net test over all rows of one call (row-major order)."""
    mx = F(0.0)
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            mx = max(mx, abs(x[r, j]))
    mse0 = F(0.0)
    mse = F(0.0)
    half = F(0.5) * mx
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[r, j]
            lv = -1 if v < -half else (0 if v < half else 1)
            mse0 = fma32(v, v, mse0)
            diff = fma32(-F(lv), mx, v)
            mse = fma32(diff, diff, mse)
    return mse < F(0.1) * mse0, mx


@njit(nogil=True, cache=True, error_model="numpy")
def _q2_k_block_ref(yb, x, L, Laux):
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    max_scale = F(0.0)
    max_min = F(0.0)
    for j in range(16):
        xs = x[16 * j:16 * j + 16]
        for k in range(16):
            w[k] = abs(xs[k])
        s, m = make_qkx2_quants(xs, w, 3, L[16 * j:16 * j + 16], Laux, F(-0.5), F(0.1), 15,
                                True, True)
        scales[j] = s
        mins[j] = m
        if s > max_scale:
            max_scale = s
        if m > max_min:
            max_min = m
    yb[:16] = 0
    put_fp16(yb, 80, F(0.0))
    put_fp16(yb, 82, F(0.0))
    if max_scale > 0:
        iscale = F(15.0) / max_scale
        for j in range(16):
            yb[j] = nearest_int_mul(iscale, scales[j]) & 0xFF
        put_fp16(yb, 80, max_scale / F(15.0))
    if max_min > 0:
        iscale = F(15.0) / max_min
        for j in range(16):
            yb[j] |= (nearest_int_mul(iscale, mins[j]) << 4) & 0xFF
        put_fp16(yb, 82, max_min / F(15.0))
    d = get_fp16(yb, 80)
    dmin = get_fp16(yb, 82)
    for j in range(16):
        dj = d * F(yb[j] & 0xF)
        if dj == 0:
            continue
        dm = dmin * F(yb[j] >> 4)
        for k in range(16):
            L[16 * j + k] = max(0, min(3, nearest_int((x[16 * j + k] + dm) / dj)))


@njit(nogil=True, cache=True, error_model="numpy")
def _q2_k_block_impl(yb, x, qw, mode, L, Laux):
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    sw = np.zeros(16, np.float32)
    Ls = np.empty(16, np.uint8)
    Lm = np.empty(16, np.uint8)
    sigma2 = F(0.75) * sum_sq(x) / F(256.0)
    for j in range(16):
        xs = x[16 * j:16 * j + 16]
        block_weights(w, xs, qw[16 * j:16 * j + 16], mode, sigma2, 1)
        for k in range(16):
            sw[j] += w[k]
        s, m = make_qkx3_quants(xs, w, 3, L[16 * j:16 * j + 16], Laux, F(-0.9), F(0.05), 36, True)
        scales[j] = s
        mins[j] = m
    dm = make_qp_quants(scales, sw, 15, Ls)
    mm = make_qp_quants(mins, sw, 15, Lm)
    put_fp16(yb, 80, dm)
    put_fp16(yb, 82, mm)
    for j in range(16):
        d = dm * F(Ls[j])
        m = mm * F(Lm[j])
        idd = F(1.0) / d if d != 0 else F(0.0)
        for k in range(16):
            L[16 * j + k] = max(0, min(3, nearest_int_mul(x[16 * j + k] + m, idd)))
        yb[j] = Ls[j] | (Lm[j] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q2_k_rows(out, x, qw, mode, trinet, tmax):
    for r in prange(x.shape[0]):
        L = np.empty(256, np.uint8)
        Laux = np.empty(16, np.uint8)
        for ib in range(x.shape[1] // 256):
            xb = x[r, 256 * ib:256 * ib + 256]
            yb = out[r, 84 * ib:84 * ib + 84]
            if trinet:
                put_fp16(yb, 80, tmax)
                put_fp16(yb, 82, tmax)
                yb[:16] = 1 | (1 << 4)
                for k in range(256):
                    L[k] = 0 if xb[k] < -F(0.5) * tmax else (1 if xb[k] < F(0.5) * tmax else 2)
            elif mode == MODE_DEFAULT:
                _q2_k_block_ref(yb, xb, L, Laux)
            else:
                _q2_k_block_impl(yb, xb, qw[256 * ib:256 * ib + 256], mode, L, Laux)
            _pack2(yb[16:80], L)


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


# ---- MXFP4  e:u8 (E8M0) | qs:u8[16]   (imatrix ignored by the reference)
@njit(nogil=True, cache=True, error_model="numpy")
def e8m0_half(e):
    """GGML_E8M0_TO_FP32_HALF: 2^(e-128) as float32 (e = 0, 1 are subnormal cases)."""
    if e >= 2:
        return np.uint32((e - 1) << 23).view(np.float32)
    return np.uint32(0x00200000 if e == 0 else 0x00400000).view(np.float32)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def mxfp4_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        for ib in range(x.shape[1] // 32):
            xb = x[r, 32 * ib:32 * ib + 32]
            yb = out[r, 17 * ib:17 * ib + 17]
            yb[:] = 0
            amax = F(0.0)
            for j in range(32):
                amax = max(amax, abs(xb[j]))
            if amax == 0:
                continue
            e = np.int64(np.floor(np.log2(amax)) - F(2.0) + F(127.0)) & 0xFF
            d = e8m0_half(e)
            yb[0] = e
            for j in range(32):
                best = abs(xb[j] - d * KVALUES_MXFP4[0])
                idx = 0
                for k in range(1, 16):
                    diff = abs(xb[j] - d * KVALUES_MXFP4[k])
                    if diff < best:
                        best = diff
                        idx = k
                if j < 16:
                    yb[1 + j] = idx
                else:
                    yb[1 + j - 16] |= idx << 4


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _deq(out, raw, kind):
    """kind: 0 q2_K, 1 q3_K, 2 mxfp4."""
    for r in prange(raw.shape[0]):
        y = out[r]
        row = raw[r]
        if kind == 2:
            for ib in range(y.shape[0] // 32):
                b = row[17 * ib:17 * ib + 17]
                d = e8m0_half(np.int64(b[0]))
                for j in range(16):
                    y[32 * ib + j] = d * KVALUES_MXFP4[b[1 + j] & 0xF]
                    y[32 * ib + 16 + j] = d * KVALUES_MXFP4[b[1 + j] >> 4]
            continue
        bpb = 84 if kind == 0 else 110
        for ib in range(y.shape[0] // 256):
            b = row[bpb * ib:bpb * ib + bpb]
            yb = y[256 * ib:256 * ib + 256]
            qs = b[16:80] if kind == 0 else b[32:96]
            for e in range(256):
                h, rr = e // 128, e % 128
                q = (np.int64(qs[32 * h + rr % 32]) >> (2 * (rr // 32))) & 3
                j = e // 16
                if kind == 0:
                    sc = np.int64(b[j])
                    dl = get_fp16(b, 80) * F(sc & 0xF)
                    ml = get_fp16(b, 82) * F(sc >> 4)
                    yb[e] = dl * F(q) - ml
                else:
                    if not (b[e % 32] >> (e // 32)) & 1:
                        q -= 4
                    dl = get_fp16(b, 108) * F(q3_scale(b[96:108], j))
                    yb[e] = dl * F(q)


def _q2_k_quant(x, qw, mode):
    x, qw = _check_x(x, qw)
    out = np.empty((x.shape[0], 84 * (x.shape[1] // 256)), np.uint8)
    trinet, tmax = is_trinet(x) if mode == MODE_DEFAULT else (False, np.float32(0))
    q2_k_rows(out, x, qw, mode, trinet, np.float32(tmax))
    return out


def _make_quant(kernel, bpb, block):
    def quant(x, qw, mode):
        x, qw = _check_x(x, qw)
        out = np.empty((x.shape[0], bpb * (x.shape[1] // block)), np.uint8)
        kernel(out, x, qw, mode)
        return out
    return quant


def _make_deq(kind):
    def deq(raw, n):
        out = np.empty((raw.shape[0], n), np.float32)
        _deq(out, np.ascontiguousarray(raw, np.uint8), kind)
        return out
    return deq


QUANT = {"q2_K": _q2_k_quant, "q3_K": _make_quant(q3_k_rows, 110, 256),
         "mxfp4": _make_quant(mxfp4_rows, 17, 32)}
DEQUANT = {"q2_K": _make_deq(0), "q3_K": _make_deq(1), "mxfp4": _make_deq(2)}
