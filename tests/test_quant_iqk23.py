"""Unit tests of the 2-3 bit IQK kernel helpers (iqk/iq2_k, iq3_k, iq2_kl, common_low) against obvious
numpy versions, plus round trips and the uniform (w = 1) mode. Byte-exactness against
ik_llama.cpp's outputs is tests/test_quant_refs.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import quant_refs_numpy
from numba import njit

from iqk_studio.quant import grids, registry
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX, MODE_UNIFORM
from iqk_studio.quant.kernels.iqk import common_low as H
from iqk_studio.quant.kernels.iqk import iq2_k as iqk2
from iqk_studio.quant.kernels.iqk import iq2_kl as iqk2kl
from iqk_studio.quant.kernels.iqk import iq2_ks as iqk2ks
from iqk_studio.quant.types import by_name

F = np.float32
TYPES = {
    name: (registry.quantizers()[name], registry.dequantizers()[name], bpw)
    for name, bpw in (("iq2_k", 2.4), ("iq2_ks", 2.2), ("iq3_k", 3.4), ("iq3_ks", 3.2),
                      ("iq2_kl", 2.7))
}


def _nearest_hi(values: np.ndarray, x: float) -> int:
    """Index of the nearest value; on an exact tie the higher index."""
    dist = np.abs(values.astype(np.float64) - x)
    return int(np.flatnonzero(dist == dist.min())[-1])


def _sweep(values):
    lo, hi = float(values[0]) - 3, float(values[-1]) + 3
    xs = list(np.arange(lo, hi, 0.01, dtype=np.float32))
    mids = (values[:-1].astype(np.float64) + values[1:]) / 2
    return xs + [F(m) for m in mids] + [F(-0.0), F(0.0), F(0.3), F(-0.3)]


@pytest.mark.parametrize("off", [0, 4])
def test_best_index_iq2nl_is_nearest_with_ties_up(off):
    vals = H.IQ2NL[off:off + 4]
    for x in _sweep(vals):
        assert H.best_index_iq2nl(H.IQ2NL, off, F(x)) == _nearest_hi(vals, x), x


@pytest.mark.parametrize("off", [0, 8])
def test_best_index_iq3nl_is_nearest_with_ties_up(off):
    vals = H.IQ3NL[off:off + 8]
    for x in _sweep(vals):
        assert H.best_index_iq3nl(H.IQ3NL, off, F(x)) == _nearest_hi(vals, x), x


def test_tables_match_grids():
    assert np.array_equal(H.IQ2NL, [-31, -13, 1, 17, -26, -8, 6, 22])
    assert np.array_equal(H.IQ3NL[8:], H.IQ3NL[:8] + 4)
    # the pair grid rebuilt from k_index equals ggml-common.h's iq2kl_values
    assert np.array_equal(iqk2kl.GRID, grids.iq2kl_pairs.astype(np.float32))
    neg = iqk2kl.K_INDEX[iqk2kl.K_INDEX < 0]
    assert sorted(-neg - 1) == list(range(32))  # every neighbour row used exactly once
    assert sorted(iqk2kl.K_INDEX[iqk2kl.K_INDEX >= 0]) == list(range(32))
    assert iqk2kl.K_NEIGHBOURS.min() >= 0 and iqk2kl.K_NEIGHBOURS.max() < 32


def test_hsum8_lane_order():
    v = np.array([1e8, 1, -1e8, 3, 5, 7, 11, 13], np.float32)
    want = F(F(F(v[0] + v[4]) + F(v[2] + v[6])) + F(F(v[1] + v[5]) + F(v[3] + v[7])))
    assert H.hsum8(v) == want


def test_sort16_is_stable_argsort():
    rng = np.random.default_rng(0)
    order = np.empty(16, np.int64)
    for _ in range(50):
        x = np.round(rng.standard_normal(16), 1).astype(np.float32)
        x[rng.random(16) < 0.2] = -0.0
        iqk2._sort16(x, order)
        assert np.array_equal(order, np.argsort(x, kind="stable"))


def test_search16x4_finds_the_best_split():
    """The exhaustive search returns the least-squares scale of the best (pattern, split), as a
    float64 brute force over every labelling finds it."""
    rng = np.random.default_rng(1)
    pat = np.array([[-31, -13, 1, 17], [-26, -8, 6, 22], [17, 1, -13, -31], [22, 6, -8, -26]],
                   np.float32)
    for _ in range(10):
        x = rng.standard_normal(16).astype(np.float32)
        w = (rng.random(16) + 0.1).astype(np.float32)
        o = np.argsort(x, kind="stable")
        sx = np.concatenate([[0], np.cumsum(w[o] * x[o])]).astype(np.float32)
        sw = np.concatenate([[0], np.cumsum(w[o])]).astype(np.float32)
        d, shifted = iqk2._search16x4(sx, sw, pat)
        cands = []
        for ip, p in enumerate(pat.astype(np.float64)):
            for i1 in range(16):
                for i2 in range(i1, 16):
                    for i3 in range(i2, 16):
                        q = np.repeat(p, [i1, i2 - i1, i3 - i2, 16 - i3])
                        qx, q2 = (w[o] * q * x[o]).sum(), (w[o] * q * q).sum()
                        cands.append((qx * qx / q2, qx / q2, ip % 2 == 1))
        best = max(c[0] for c in cands)
        near = [(c[1], c[2]) for c in cands if c[0] >= best * (1 - 1e-6)]
        assert any(abs(d - dd) <= 1e-5 * abs(dd) and shifted == sh for dd, sh in near)


def _dot32_avx2_order(a, b):
    """Obvious float32 version: lane l = fma chain over elements l, l+8, l+16, l+24 from +0
    (each fma exact in float64 before rounding), then hsum_float_8."""
    lanes = []
    for lane in range(8):
        s = F(0.0)
        for k in range(4):
            s = F(np.float64(a[8 * k + lane]) * np.float64(b[8 * k + lane]) + np.float64(s))
        lanes.append(s)
    return H.hsum8(np.array(lanes, np.float32))


def test_dot32_lanes_is_the_avx2_sum():
    rng = np.random.default_rng(5)
    f = njit(lambda a, b: H.dot32_lanes(a, b))
    for _ in range(300):
        a = (rng.standard_normal(40) * 10.0 ** rng.integers(-4, 4)).astype(np.float32)
        b = rng.standard_normal(40).astype(np.float32)
        o1, o2 = rng.integers(0, 8, 2)
        assert f(a[o1:o1 + 32], b[o2:o2 + 32]) == _dot32_avx2_order(a[o1:], b[o2:])


def test_iq2ks_lane_sums_match_plain_sums():
    """compute_1block_iq2ks: labels nearest to d·v (direct) or -d·v (mirrored), least squares."""
    rng = np.random.default_rng(2)
    lab = np.empty((4, 32), np.float32)
    for _ in range(20):
        x = rng.standard_normal(32).astype(np.float32)
        w = (rng.random(32) + 0.1).astype(np.float32)
        d = F(np.abs(x).max() / 22)
        ok, bd, score = iqk2ks._try_1block(d, x, 0, w, 0, lab)
        v = H.IQ2NL[:4]
        cands = []
        for sgn in (F(1), F(-1)):  # distances in float32 as the reference computes them
            q = v[np.argmin(np.square(x[:, None] - sgn * (d * v[None, :])), axis=1)]
            q = q.astype(np.float64)
            qx, q2 = (w * q * x).sum(), (w * q * q).sum()
            cands.append((qx * qx / q2, qx / q2))
        s, dd = max(cands)
        assert ok and score == pytest.approx(s, rel=1e-5) and bd == pytest.approx(dd, rel=1e-5)


@pytest.mark.parametrize("qtype", list(TYPES))
def test_round_trip_and_modes(qtype):
    q, dq, bpw = TYPES[qtype]
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 512)) * 0.02).astype(np.float32)
    qw = (rng.random(512) + 0.5).astype(np.float32)
    rel = {}
    for mode, w in ((MODE_DEFAULT, None), (MODE_IMATRIX, qw), (MODE_UNIFORM, None)):
        raw = q(x, w, mode)
        assert raw.dtype == np.uint8 and raw.shape[0] == 6
        assert abs(raw.shape[1] * 8 / 512 - bpw) < 0.1
        y = dq(raw, 512)
        assert np.array_equal(y, quant_refs_numpy.get(qtype)(raw, 512))
        rel[mode] = float(((y - x) ** 2).sum() / (x ** 2).sum())
        # rows are independent: a block of rows equals the rows one by one
        assert np.array_equal(np.concatenate([q(x[i:i + 1], w, mode) for i in range(6)]), raw)
    limit = 0.2 if qtype.startswith("iq2") else 0.08
    assert all(r < limit for r in rel.values()), rel
    # w = 1 is its own weighting: it ignores qw and differs from the reference's default
    uni = q(x, qw, MODE_UNIFORM)
    assert np.array_equal(uni, q(x, None, MODE_UNIFORM))
    assert not np.array_equal(uni, q(x, None, MODE_DEFAULT))


@pytest.mark.parametrize("qtype", list(TYPES))
def test_zero_rows_and_bad_input(qtype):
    q, dq, _ = TYPES[qtype]
    raw = q(np.zeros((2, 256), np.float32), None, MODE_DEFAULT)
    assert not dq(raw, 256).any()
    if qtype == "iq3_ks":  # the reference stores d = -max_scale/16 = -0.0 before giving up
        assert (raw[:, :2] == [0, 0x80]).all()
        raw = raw[:, 2:]
    assert not raw.any()
    with pytest.raises(ValueError):
        q(np.zeros((1, 100), np.float32), None, MODE_DEFAULT)
    with pytest.raises(ValueError):
        q(np.zeros((1, 256), np.float32), np.ones(128, np.float32), MODE_IMATRIX)
    with pytest.raises(ValueError):
        dq(np.zeros((1, 7), np.uint8), 256)


@pytest.mark.parametrize("qtype", list(TYPES))
def test_dequant_random_bytes_matches_numpy(qtype):
    _, dq, _ = TYPES[qtype]
    t = by_name(qtype)
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 256, (5, t.row_bytes(512)), dtype=np.uint8)
    halves = (rng.standard_normal((5, 2)) * 0.01).astype(np.float16).view(np.uint8)
    if t.row_meta:  # one fp16 row scale
        raw[:, 0:2] = halves[:, 0:2]
    else:  # one fp16 scale at the start of each 256-block
        raw[:, 0:2] = halves[:, 0:2]
        raw[:, t.type_size:t.type_size + 2] = halves[:, 2:4]
    assert np.array_equal(dq(raw, 512), quant_refs_numpy.get(qtype)(raw, 512))
