"""iq4_nl (32-element blocks) and iq4_xs (256-element super-blocks of iq4_nl blocks with 6-bit
scales): ports of quantize_row_iq4_nl_impl of ggml-quants.c (ik_llama.cpp 8337e4cd3) -- the scale
candidates and greedy refinement, with the nearest-value lookup in branch-free table form -- and
their dequantizers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    amax_signed,
    fma32,
    get_fp16,
    index_table,
    nearest_int_mul,
    put_fp16,
)
from iqk_studio.quant.kernels.legacy.weights import block_weights, sum_sq
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.float32)
IQ4NL_TABLE = index_table(KVALUES_IQ4NL)
# Midpoints of neighbouring values (exact half-integers). For this table, and every float32 a,
# `a - v[k] >= v[k+1] - a` (the reference's tie test) equals `a >= mid[k]`: checked
# exhaustively over all float32 |a| <= 256 (beyond that both are decided by a wide margin).
IQ4NL_MID = ((KVALUES_IQ4NL[1:] + KVALUES_IQ4NL[:-1]) / 2).astype(np.float32)


def _unit_tables(values, mid):
    """For i = 0..255 (a in [i-128, i-127)): the number of mids below i-128 and the value it
    selects, the mid inside the interval (inf if none; the mids are >= 11 apart) and the gap
    to the next value that crossing it adds."""
    lo = np.arange(256) - 128.0
    cnt = np.searchsorted(mid.astype(np.float64), lo, side="left")
    inside = np.full(256, np.inf, np.float32)
    gap = np.zeros(256, np.float32)
    for k, m in enumerate(mid):
        i = int(np.floor(m)) + 128
        if 0 <= i < 256:
            inside[i] = m
            gap[i] = values[k + 1] - values[k]
    return cnt.astype(np.int64), values[cnt].astype(np.float32), inside, gap


# index = QI[i] + (a >= QM[i]), value = QV[i] + (a >= QM[i] ? QG[i] : 0), with
# i = int(clamp(a + 128, 0, 255)): a + 128 can round up to the next integer only for a just
# below it, where no mid lies strictly between (checked exhaustively for every float32).
IQ4NL_QI, IQ4NL_QV, IQ4NL_QM, IQ4NL_QG = _unit_tables(KVALUES_IQ4NL, IQ4NL_MID)


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_unit(a):
    """Row of the unit-interval tables for a (NaN -> 0, then a >= QM is false: index 0)."""
    f = a + F(128.0)
    f = f if f > F(0.0) else F(0.0)
    f = f if f < F(255.0) else F(255.0)
    return np.int64(f)


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_sums(q, xb, w, values, idd):
    """Σw·q·x and Σw·q² for q = values[best_index(idd·x)] (q gets the values); values is
    KVALUES_IQ4NL. Branch-free so LLVM vectorizes it (table gathers): best_index(a) =
    #{k : a >= mid[k]} (see IQ4NL_MID), read from the unit-interval tables."""
    n = xb.shape[0]
    for j in range(n):
        a = idd * xb[j]
        i = _iq4_unit(a)
        q[j] = IQ4NL_QV[i] + (IQ4NL_QG[i] if a >= IQ4NL_QM[i] else F(0.0))
    sumqx = F(0.0)
    sumq2 = F(0.0)
    for j in range(n):
        wq = w[j] * q[j]
        sumqx = fma32(wq, xb[j], sumqx)
        sumq2 = fma32(wq, q[j], sumq2)
    return sumqx, sumq2


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_labels(Lb, xb, values, idd):
    """Lb[j] = best_index(idd·x[j]) over KVALUES_IQ4NL, from the tables as in _iq4_sums."""
    for j in range(xb.shape[0]):
        a = idd * xb[j]
        i = _iq4_unit(a)
        Lb[j] = IQ4NL_QI[i] + (1 if a >= IQ4NL_QM[i] else 0)


@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_steps(cur, up, dn, j, values, lj):
    cur[j] = values[lj]
    up[j] = values[lj + 1] - values[lj] if lj < values.shape[0] - 1 else F(0.0)
    dn[j] = values[lj - 1] - values[lj] if lj > 0 else F(0.0)


@njit(nogil=True, cache=True, error_model="numpy")
def iq4_block_scale(xb, w, values, Lb, ntry, sc):
    """Scale of one block of quantize_row_iq4_nl_impl (candidates + greedy refinement);
    Lb gets the labels, sc (4 x block length) is scratch. Returns 0 for an all-(near-)zero block."""
    bs = xb.shape[0]
    amax, mx = amax_signed(xb, 0, xb.shape[0])
    if amax < F(1e-15):
        return F(0.0)
    d = -mx / values[0]
    idd = F(1.0) / d
    _iq4_labels(Lb, xb, values, idd)
    sumqx, sumq2 = _iq4_sums(sc, xb, w, values, idd)
    d = sumqx / sumq2
    best = d * sumqx
    best_sumqx = sumqx
    best_sumq2 = sumq2
    nv = values.shape[0]
    for itry in range(-ntry, ntry + 1):
        for cand in range(2):
            base = values[0] if cand == 0 else values[nv - 1]
            idd = (F(itry) + base) / mx
            sumqx, sumq2 = _iq4_sums(sc, xb, w, values, idd)
            if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
                best_sumqx = sumqx
                best_sumq2 = sumq2
                _iq4_labels(Lb, xb, values, idd)
    sumqx = best_sumqx
    sumq2 = best_sumq2
    cur = sc[:bs]  # values[L], and the gaps to the next value up / down (0 at the ends)
    up = sc[bs:2 * bs]
    dn = sc[2 * bs:3 * bs]
    st = sc[3 * bs:4 * bs]
    for j in range(bs):
        _iq4_steps(cur, up, dn, j, values, np.int64(Lb[j]))
    for _ in range(32 * bs):
        # step of every weight toward its gradient (inf when it cannot move), in one
        # vectorizable pass; then the first smallest, as the reference's strict '<' scan
        for j in range(bs):
            g = d * w[j] * fma32(-d, cur[j], xb[j])
            s_up = up[j] / g
            s_dn = dn[j] / g
            st[j] = s_up if (g > 0 and up[j] > 0) else (s_dn if (g < 0 and dn[j] < 0) else np.inf)
        min_step = np.float32(np.inf)
        best_j = -1
        for j in range(bs):
            if st[j] < min_step:
                min_step = st[j]
                best_j = j
        if best_j < 0:
            break
        wj = w[best_j]
        dr = 1 if d * wj * fma32(-d, cur[best_j], xb[best_j]) > 0 else -1
        lj = np.int64(Lb[best_j])
        vn = values[lj + dr]
        vo = values[lj]
        new_sumqx = fma32(wj * xb[best_j], vn - vo, sumqx)
        new_sumq2 = fma32(wj, vn * vn - vo * vo, sumq2)
        if new_sumq2 > 0 and new_sumqx * new_sumqx > best * new_sumq2:
            sumqx = new_sumqx
            sumq2 = new_sumq2
            d = sumqx / sumq2
            best = d * sumqx
            Lb[best_j] = lj + dr
            _iq4_steps(cur, up, dn, best_j, values, lj + dr)
        else:
            break
    return d


# ---- IQ4_NL  d:f16 | qs:u8[16] (kvalues_iq4nl indices); the search is shared with IQ4_XS
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_nl_row(y, x, qw, mode):
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sc = np.empty(128, np.float32)
    values = KVALUES_IQ4NL
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[18 * ib:18 * ib + 18]
        sigma2 = sum_sq(xb) * F(2.0 / 32)
        block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 0)
        d = iq4_block_scale(xb, w, values, L, 7, sc)
        put_fp16(yb, 0, d)
        idd = F(1.0) / d if d != 0 else F(0.0)
        _iq4_labels(L, xb, values, idd)
        for j in range(16):
            yb[2 + j] = L[j] | (L[j + 16] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_nl_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq4_nl_row(out[r], x[r], qw, mode)


# ---- IQ4_XS  d:f16 | scales_h:u16 | scales_l:u8[4] | qs:u8[128]
@njit(nogil=True, cache=True, error_model="numpy")
def _iq4_xs_row(y, x, qw, mode):
    L = np.empty(256, np.uint8)
    w = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    sc = np.empty(128, np.float32)
    values = KVALUES_IQ4NL
    for ibl in range(x.shape[0] // 256):
        xb = x[256 * ibl:256 * ibl + 256]
        yb = y[136 * ibl:136 * ibl + 136]
        sigma2 = sum_sq(xb) * F(2.0 / 256)
        max_scale = F(0.0)
        amax_scale = F(0.0)
        for ib in range(8):
            xs = xb[32 * ib:32 * ib + 32]
            block_weights(w, xs, qw[256 * ibl + 32 * ib:256 * ibl + 32 * ib + 32], mode, sigma2, 0)
            d = iq4_block_scale(xs, w, values, L[32 * ib:32 * ib + 32], 7, sc)
            scales[ib] = d
            if abs(d) > amax_scale:
                amax_scale = abs(d)
                max_scale = d
        yb[:8] = 0
        d = -max_scale / F(32.0)
        put_fp16(yb, 0, d)
        idd = F(1.0) / d if d != 0 else F(0.0)
        sh = 0
        for ib in range(8):
            ls = max(-32, min(31, nearest_int_mul(idd, scales[ib])))
            dl = d * F(ls)
            idl = F(1.0) / dl if dl != 0 else F(0.0)
            _iq4_labels(L[32 * ib:32 * ib + 32], xb[32 * ib:32 * ib + 32], values, idl)
            ls += 32
            if ib % 2 == 0:
                yb[4 + ib // 2] = ls & 0xF
            else:
                yb[4 + ib // 2] |= (ls & 0xF) << 4
            sh |= (ls >> 4) << (2 * ib)
        yb[2] = sh & 0xFF
        yb[3] = sh >> 8
        for i in range(8):
            for k in range(16):
                yb[8 + 16 * i + k] = L[32 * i + k] | (L[32 * i + 16 + k] << 4)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def iq4_xs_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _iq4_xs_row(out[r], x[r], qw, mode)


# ---- dequantization (plain float32 products, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq4_nl_dequant(out, raw):
    for r in prange(raw.shape[0]):
        for ib in range(out.shape[1] // 32):
            b = raw[r, 18 * ib:18 * ib + 18]
            yb = out[r, 32 * ib:32 * ib + 32]
            d = get_fp16(b, 0)
            for j in range(16):
                yb[j] = d * KVALUES_IQ4NL[np.int64(b[2 + j] & 0xF)]
                yb[j + 16] = d * KVALUES_IQ4NL[np.int64(b[2 + j] >> 4)]


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _iq4_xs_dequant(out, raw):
    for r in prange(raw.shape[0]):
        for ibl in range(out.shape[1] // 256):
            b = raw[r, 136 * ibl:136 * ibl + 136]
            yb = out[r, 256 * ibl:256 * ibl + 256]
            d = get_fp16(b, 0)
            sh = np.int64(b[2]) | (np.int64(b[3]) << 8)
            for i in range(8):
                ls = ((np.int64(b[4 + i // 2]) >> (4 * (i % 2))) & 0xF) | (((sh >> (2 * i)) & 3) << 4)
                dl = d * F(ls - 32)
                for k in range(16):
                    q = np.int64(b[8 + 16 * i + k])
                    yb[32 * i + k] = dl * KVALUES_IQ4NL[q & 0xF]
                    yb[32 * i + 16 + k] = dl * KVALUES_IQ4NL[q >> 4]


QUANT = {"iq4_nl": quantizer("iq4_nl", iq4_nl_rows), "iq4_xs": quantizer("iq4_xs", iq4_xs_rows)}
DEQUANT = {"iq4_nl": dequantizer("iq4_nl", _iq4_nl_dequant),
           "iq4_xs": dequantizer("iq4_xs", _iq4_xs_dequant)}
