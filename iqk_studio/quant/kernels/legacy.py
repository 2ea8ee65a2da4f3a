"""Float and 32-block legacy types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q6_0, iq4_nl.

Bit-exact ports of ggml-quants.c (ik_llama.cpp 8337e4cd3); see quant-formats.md §6.1-§6.5.
MODE_UNIFORM runs each type's imatrix code path with w = 1 (q8_0 has no weights at all).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import (
    F,
    fma32,
    get_fp16,
    index_table,
    make_qkx3_quants,
    make_qx_quants_ggml,
    put_fp16,
)
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.float32)
IQ4NL_TABLE = index_table(KVALUES_IQ4NL)
# Midpoints of neighbouring values (exact half-integers). For this table, and every float32 a,
# `a - v[k] >= v[k+1] - a` (the reference's tie test) equals `a >= mid[k]`: checked
# exhaustively over all float32 |a| <= 256 (beyond that both are decided by a wide margin).
IQ4NL_MID = ((KVALUES_IQ4NL[1:] + KVALUES_IQ4NL[:-1]) / 2).astype(np.float32)


def _unit_tables(values, mid):
    """For i = 0..255 (a in [i-128, i-127)): mids below i-128 (as the value there), the mid
    inside the interval (inf if none; the mids are >= 11 apart) and the gap it crosses."""
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
_NO_QW = np.zeros(0, dtype=np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def sum_sq(x):
    s = F(0.0)
    for j in range(x.shape[0]):
        s = s + x[j] * x[j]
    return s


@njit(nogil=True, cache=True, error_model="numpy")
def row_sigma2(x):
    """Σx²/n over the whole row (Q4_0/Q5_0/Q6_0/Q4_1/Q5_1 imatrix weighting); not fused
    (the reference vectorizes it as an in-order reduction)."""
    s = sum_sq(x)
    return s / F(x.shape[0])


@njit(nogil=True, cache=True, error_model="numpy")
def block_weights(w, xb, qwb, mode, sigma2, default_kind):
    """w for one block: imatrix qw·sqrt(σ²+x²); uniform 1; default x² (kind 0) or 1 (kind 1)."""
    for j in range(xb.shape[0]):
        if mode == MODE_IMATRIX:
            w[j] = qwb[j] * np.sqrt(fma32(xb[j], xb[j], sigma2))
        elif mode == MODE_DEFAULT and default_kind == 0:
            w[j] = xb[j] * xb[j]
        else:
            w[j] = F(1.0)


@njit(nogil=True, cache=True, error_model="numpy")
def _amax_max(xb):
    amax = F(0.0)
    mx = F(0.0)
    for j in range(xb.shape[0]):
        if amax < abs(xb[j]):
            amax = abs(xb[j])
            mx = xb[j]
    return amax, mx


@njit(nogil=True, cache=True, error_model="numpy")
def _roundf(v):
    """C roundf: half away from zero."""
    a = abs(v)
    i = np.int64(a)
    if a - F(i) >= F(0.5):
        i += 1
    return -i if v < 0 else i


# ---- Q8_0  d:f16 | qs:i8[32]
@njit(nogil=True, cache=True, error_model="numpy")
def _q8_0_row(y, x):
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[34 * ib:34 * ib + 34]
        amax = F(0.0)
        for j in range(32):
            amax = max(amax, abs(xb[j]))
        d = amax / F(127.0)
        idd = F(1.0) / d if d != 0 else F(0.0)
        put_fp16(yb, 0, d)
        for j in range(32):
            yb[2 + j] = np.uint8(_roundf(xb[j] * idd) & 0xFF)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q8_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q8_0_row(out[r], x[r])


# ---- Q4_0  d:f16 | qs:u8[16] (low nibble j, high nibble j+16)
@njit(nogil=True, cache=True, error_model="numpy")
def _q4_0_row(y, x, qw, mode, nmax, bpb):
    """Shared by Q4_0 (nmax 8, 18 bytes) and Q5_0 (nmax 16, 22 bytes)."""
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sigma2 = row_sigma2(x) if mode == MODE_IMATRIX else F(0.0)
    half = F(nmax) + F(0.5)
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[bpb * ib:bpb * ib + bpb]
        if mode == MODE_DEFAULT:
            amax, mx = _amax_max(xb)
            d = mx / F(-nmax)
            idd = F(1.0) / d if d != 0 else F(0.0)
            put_fp16(yb, 0, d)
            for j in range(32):
                L[j] = min(2 * nmax - 1, np.int64(fma32(xb[j], idd, half)))
        else:
            block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 0)
            d = make_qx_quants_ggml(xb, w, nmax, L)
            put_fp16(yb, 0, d)
        _pack_q45(yb, L, nmax)


@njit(nogil=True, cache=True, error_model="numpy")
def _pack_q45(yb, L, nmax):
    if nmax == 8:
        for j in range(16):
            yb[2 + j] = L[j] | (L[j + 16] << 4)
        return
    off = yb.shape[0] - 16
    qh = np.uint32(0)
    for j in range(16):
        yb[off + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
        qh |= np.uint32((L[j] >> 4) & 1) << j
        qh |= np.uint32((L[j + 16] >> 4) & 1) << (j + 16)
    for k in range(4):
        yb[off - 4 + k] = (qh >> (8 * k)) & 0xFF


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q4_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_0_row(out[r], x[r], qw, mode, 8, 18)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q5_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_0_row(out[r], x[r], qw, mode, 16, 22)


# ---- Q4_1  d:f16 | m:f16 | qs:u8[16];  Q5_1  d:f16 | m:f16 | qh:u8[4] | qs:u8[16]
@njit(nogil=True, cache=True, error_model="numpy")
def _q4_1_row(y, x, qw, mode, nmax, bpb):
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    Laux = np.empty(32, np.uint8)
    sigma2 = row_sigma2(x) if mode == MODE_IMATRIX else F(0.0)
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[bpb * ib:bpb * ib + bpb]
        if mode == MODE_DEFAULT:
            mn = xb[0]
            mx = xb[0]
            for j in range(1, 32):
                mn = min(mn, xb[j])
                mx = max(mx, xb[j])
            d = (mx - mn) / F(nmax)
            idd = F(1.0) / d if d != 0 else F(0.0)
            put_fp16(yb, 0, d)
            put_fp16(yb, 2, mn)
            for j in range(32):
                q = np.int64(fma32(xb[j] - mn, idd, F(0.5)))
                L[j] = min(15, q) if nmax == 15 else q & 0x1F  # q5_1: (uint8_t), no clamp
        else:
            block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 1)
            d, the_min = make_qkx3_quants(xb, w, nmax, L, Laux, F(-0.9), F(0.05), 36)
            put_fp16(yb, 0, d)
            put_fp16(yb, 2, -the_min)
        if nmax == 15:
            for j in range(16):
                yb[4 + j] = L[j] | (L[j + 16] << 4)
        else:
            _pack_q45(yb, L, 16)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q4_1_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_1_row(out[r], x[r], qw, mode, 15, 20)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q5_1_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q4_1_row(out[r], x[r], qw, mode, 31, 24)


# ---- Q6_0  d:f16 | qh:u8[8] | qs:u8[16]
@njit(nogil=True, cache=True, error_model="numpy")
def _q6_0_row(y, x, qw, mode):
    w = np.empty(32, np.float32)
    L = np.empty(32, np.uint8)
    sigma2 = row_sigma2(x) if mode == MODE_IMATRIX else F(0.0)
    for ib in range(x.shape[0] // 32):
        xb = x[32 * ib:32 * ib + 32]
        yb = y[26 * ib:26 * ib + 26]
        block_weights(w, xb, qw[32 * ib:32 * ib + 32], mode, sigma2, 0)
        d = make_qx_quants_ggml(xb, w, 32, L)
        put_fp16(yb, 0, d)
        yb[2:10] = 0
        for j in range(16):
            yb[10 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
            h = (L[j] >> 4) | ((L[j + 16] >> 4) << 2)
            yb[2 + j % 8] |= h << (4 * (j // 8))


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def q6_0_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        _q6_0_row(out[r], x[r], qw, mode)


# ---- IQ4_NL  d:f16 | qs:u8[16] (kvalues_iq4nl indices); the search is shared with IQ4_XS
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
    amax, mx = _amax_max(xb)
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


# ---- dequantization (plain float32 products, no contraction, as gguf-py computes them)
@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _deq_32(out, raw, kind):
    """kind: 0 q4_0, 1 q4_1, 2 q5_0, 3 q5_1, 4 q6_0, 5 q8_0, 6 iq4_nl."""
    for r in prange(raw.shape[0]):
        y = out[r]
        row = raw[r]
        bpb = row.shape[0] // (y.shape[0] // 32)
        for ib in range(y.shape[0] // 32):
            b = row[bpb * ib:bpb * ib + bpb]
            yb = y[32 * ib:32 * ib + 32]
            d = get_fp16(b, 0)
            if kind == 5:
                for j in range(32):
                    yb[j] = d * F(np.int8(b[2 + j]))
                continue
            if kind == 1 or kind == 3:
                m = get_fp16(b, 2)
            qs = b[bpb - 16:]
            qh = np.uint32(0)
            if kind == 2 or kind == 3:
                for k in range(4):
                    qh |= np.uint32(b[bpb - 20 + k]) << (8 * k)
            for j in range(16):
                lo = np.int64(qs[j] & 0xF)
                hi = np.int64(qs[j] >> 4)
                if kind == 2 or kind == 3:
                    lo |= ((qh >> j) & 1) << 4
                    hi |= ((qh >> (j + 16)) & 1) << 4
                elif kind == 4:
                    h = np.int64(b[2 + j % 8]) >> (4 * (j // 8))
                    lo |= (h & 3) << 4
                    hi |= ((h >> 2) & 3) << 4
                if kind == 6:
                    yb[j] = d * KVALUES_IQ4NL[lo]
                    yb[j + 16] = d * KVALUES_IQ4NL[hi]
                elif kind == 1 or kind == 3:
                    yb[j] = d * F(lo) + m
                    yb[j + 16] = d * F(hi) + m
                else:
                    off = 8 if kind == 0 else (16 if kind == 2 else 32)
                    yb[j] = d * F(lo - off)
                    yb[j + 16] = d * F(hi - off)


def _check_x(x, qw):
    return np.ascontiguousarray(x, np.float32), (_NO_QW if qw is None else
                                                 np.ascontiguousarray(qw, np.float32))


def _make_quant(kernel, bpb, block=32):
    def quant(x, qw, mode):
        x, qw = _check_x(x, qw)
        out = np.empty((x.shape[0], bpb * (x.shape[1] // block)), np.uint8)
        kernel(out, x, qw, mode)
        return out
    return quant


def _make_deq(kind):
    def deq(raw, n):
        out = np.empty((raw.shape[0], n), np.float32)
        _deq_32(out, np.ascontiguousarray(raw, np.uint8), kind)
        return out
    return deq


def _f32_quant(x, qw, mode):
    return np.ascontiguousarray(x, np.float32).view(np.uint8).copy()


def _f16_quant(x, qw, mode):
    return np.ascontiguousarray(x, np.float32).astype(np.float16).view(np.uint8)


def _bf16_quant(x, qw, mode):
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    return b.view(np.uint8)


QUANT = {
    "f32": _f32_quant, "f16": _f16_quant, "bf16": _bf16_quant,
    "q8_0": _make_quant(q8_0_rows, 34), "q4_0": _make_quant(q4_0_rows, 18),
    "q4_1": _make_quant(q4_1_rows, 20), "q5_0": _make_quant(q5_0_rows, 22),
    "q5_1": _make_quant(q5_1_rows, 24), "q6_0": _make_quant(q6_0_rows, 26),
    "iq4_nl": _make_quant(iq4_nl_rows, 18),
}
DEQUANT = {
    "f32": lambda raw, n: np.ascontiguousarray(raw).view(np.float32).reshape(-1, n).copy(),
    "f16": lambda raw, n: np.ascontiguousarray(raw).view(np.float16).astype(np.float32).reshape(-1, n),
    "bf16": lambda raw, n: (np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16)
    .view(np.float32).reshape(-1, n),
    "q4_0": _make_deq(0), "q4_1": _make_deq(1), "q5_0": _make_deq(2), "q5_1": _make_deq(3),
    "q6_0": _make_deq(4), "q8_0": _make_deq(5), "iq4_nl": _make_deq(6),
}
