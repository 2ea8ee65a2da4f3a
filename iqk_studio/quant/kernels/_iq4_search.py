"""IQ4_NL / IQ4_XS block scale search (quantize_row_iq4_nl_impl of ggml-quants.c): the scale
candidates and greedy refinement, with the nearest-value lookup in branch-free table form.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant.common import F, fma32, index_table

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
def _amax_max(xb):
    amax = F(0.0)
    mx = F(0.0)
    for j in range(xb.shape[0]):
        if amax < abs(xb[j]):
            amax = abs(xb[j])
            mx = xb[j]
    return amax, mx


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
