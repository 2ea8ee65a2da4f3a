"""Trellis quantizers (kernels/trellis/): codebook pieces against plain numpy,
the AVX2-order pick against its literal lane version, and golden bytes of ik_llama.cpp (8337e4cd3,
GCC 12 -O3 -march=native -mtune=znver3 build of iqk_quantize.cpp) for small rows in both modes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from iqk_studio.quant import registry
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX
from iqk_studio.quant.kernels.trellis import codebook as cb
from iqk_studio.quant.kernels.trellis import search as ts

KT = ("iq1_kt", "iq2_kt", "iq3_kt", "iq4_kt")
QUANT = {n: registry.quantizers()[n] for n in KT}
DEQUANT = {n: registry.dequantizers()[n] for n in KT}

F = np.float32

# sha256 of the reference's bytes for _golden_inputs() (3 rows x 512), mode 0 / 1
GOLDEN = {
    ("iq1_kt", 0): "9b3ac811092e89d935ce71ccd301fa5447bd8214b5ec844a345dc4d8bf327677",
    ("iq1_kt", 1): "11150110c7bb048e0ea434acf57efaa67c545408917260558e491e171e455db3",
    ("iq2_kt", 0): "8e05b47160e5d47ed0829776001dbc8391ac29d51b0cea8a52e5f3629cb4865c",
    ("iq2_kt", 1): "56da89b15daa765bb5851189c8beddb2830582e8c60654b491e4a0ae29c822df",
    ("iq3_kt", 0): "12fbf002c52e6daf8d92c93fe179f676c28536c6c50cf8493b1040ab6c4743f2",
    ("iq3_kt", 1): "fcf6055d25fa8397a43f2a746e74fceaf95655677ee24811edd2835d7310a0d2",
    ("iq4_kt", 0): "1e55c511d1a24c1fe9c4c62f298292c479420f110277bd42612dabd9e5695dcc",
    ("iq4_kt", 1): "d7364306dd24fb7751f1b94eaba49611d771cd666926d400b9d9afd127494aef",
}


def _golden_inputs():
    """Platform-independent inputs: an integer hash mapped to [-0.5, 0.5), shaped u³·8 + u/4;
    row 1 starts with two zero 32-blocks, row 2 is scaled by 1e-3."""
    k = np.arange(3 * 512, dtype=np.uint64)
    h = ((k * np.uint64(2654435761) + np.uint64(12345)) % np.uint64(1 << 32)).astype(np.float64)
    u = (h / 2**32 - 0.5).astype(np.float32)
    x = (u * u * u * F(8.0) + u * F(0.25)).reshape(3, 512).astype(np.float32)
    x[1, :64] = 0
    x[2] *= F(1e-3)
    qw = (np.abs(u[:512]) * F(4.0) + F(0.01)).astype(np.float32)
    return np.ascontiguousarray(x), qw


@pytest.mark.parametrize("qtype, mode", sorted(GOLDEN))
def test_golden_bytes(qtype, mode):
    x, qw = _golden_inputs()
    got = QUANT[qtype](x, qw if mode == MODE_IMATRIX else None, mode)
    assert hashlib.sha256(got.tobytes()).hexdigest() == GOLDEN[(qtype, mode)]
    y = DEQUANT[qtype](got, x.shape[1])
    err = np.sqrt(((y - x) ** 2).mean(axis=1) / (x**2).mean(axis=1))
    assert (err < 0.6).all(), err  # a sane round trip, not just matching bytes
    if qtype in ("iq3_kt", "iq4_kt"):  # IQ1/IQ2_KT have no zero block-scale level
        assert not y[1, :64].any()


def test_zero_row_and_errors():
    x = np.zeros((2, 256), dtype=np.float32)
    for name, f in QUANT.items():
        out = f(x, None, MODE_DEFAULT)
        assert not out.any(), name
    with pytest.raises(ValueError):
        QUANT["iq2_kt"](np.zeros((1, 100), np.float32), None, MODE_DEFAULT)
    with pytest.raises(ValueError):
        QUANT["iq4_kt"](np.zeros((1, 256), np.float32), np.ones(3, np.float32), MODE_IMATRIX)


def test_trellis_values_match_plain_python():
    v = cb.trellis_values(16, 8, 4096, False)
    va = cb.trellis_values(16, 8, 4096, True)
    for code in (0, 1, 777, 65535):
        x = code + 4096
        for k in range(8):
            x = (x * 0xCBAC1FED) & 0xFFFFFFFF
            s = x & 0x3F3F3F3F
            want = sum((s >> (8 * b)) & 0xFF for b in range(4)) - 126
            assert v[code, k] == want and va[code, k] == abs(want)


def test_trellis_values_match_dequantizer():
    # an IQ4_KT row with d = 1, block scale 1 (byte 65 << 1), no shift: values of codes ql | qh
    raw = np.zeros((1, 4 + 128), dtype=np.uint8)
    raw[0, 0:4] = np.array([1.0], np.float32).view(np.uint8)
    codes = np.arange(64) * 37 % 4096
    for ib in range(8):
        raw[0, 4 + 4 * ib] = 65 << 1
    raw[0, 36:100] = codes & 0xFF
    for jj in range(64):
        raw[0, 100 + jj % 32] |= ((codes[jj] >> 8) & 0xF) << (4 * (jj // 32))
    y = DEQUANT["iq4_kt"](raw, 256)
    v = cb.trellis_values(15, 4, 4096, False)
    assert np.array_equal(y.reshape(64, 4), v[codes])


def test_bins_and_centroids_match_numpy():
    rng = np.random.default_rng(3)
    vals = rng.integers(-60, 61, size=(4000, 8)).astype(np.float32)
    mids = cb.bin_mids(vals, False)
    assert np.array_equal(mids, F(0.5) * (vals.min(0) + vals.max(0)))
    med = cb.bin_mids(np.abs(vals), True)
    s = np.sort(np.abs(vals), axis=0)
    assert np.array_equal(med, F(0.5) * (s[1999] + s[2000]))
    cents = np.empty((256, 8), np.float32)
    cb._centroids(cents, vals, mids, 256)
    u = ((vals > mids) * (1 << np.arange(8))).sum(1)
    for b in (0, 17, 255):
        sel = vals[u == b]
        want = sel.sum(0, dtype=np.float64) / len(sel) if len(sel) else np.zeros(8)
        np.testing.assert_allclose(cents[b], want, rtol=1e-6)


def test_members_nearest_bins_and_padding():
    rng = np.random.default_rng(5)
    vals = rng.integers(-8, 9, size=(300, 4)).astype(np.float32)
    cents = rng.integers(-8, 9, size=(20, 4)).astype(np.float32)
    which = np.empty((300, 3), np.int32)
    cb._neighbours(which, vals, cents)
    d2 = ((vals[:, None, :] - cents[None]) ** 2).sum(-1)  # exact: small integers
    order = np.argsort(d2, axis=1, kind="stable")[:, :3]
    assert np.array_equal(which, order)
    start, members = cb._members(which, vals, cents)
    for b in range(20):
        m = members[start[b]:start[b + 1]]
        own = np.nonzero((which == b).any(1))[0]
        assert len(m) % 8 == 0 and len(m) - len(own) < 8
        assert np.array_equal(m[:len(own)], own)
        rest = np.setdiff1d(np.arange(300), own)
        key = np.lexsort((rest, d2[rest, b]))
        assert np.array_equal(m[len(own):], rest[key][:len(m) - len(own)])


@pytest.mark.parametrize("kind", ["random", "ties", "nan", "negative", "inf"])
def test_select_matches_lane_pick(kind):
    rng = np.random.default_rng(11)
    for trial in range(200):
        n = 8 * int(rng.integers(1, 40))
        sc = rng.integers(0, 6, n).astype(np.float32) if kind == "ties" else rng.random(n, F)
        if kind == "nan":
            sc[rng.integers(0, n, 3)] = np.nan
        if kind == "negative":
            sc[rng.integers(0, n, 2)] *= -1
        if kind == "inf":
            sc[:] = np.inf if trial % 2 else sc
        for order, rank in ((ts._ORDER8, ts._ORDER8), (ts._ORDER4, ts._RANK4)):
            assert ts._select(sc, n, order, rank) == ts._select_lanes(sc, n, order)


def test_select_lane_semantics():
    sc = np.full(16, 5.0, np.float32)
    sc[9] = sc[2] = 1.0  # lane 1 (block 1) and lane 2 (block 0)
    assert ts._select_lanes(sc, 16, ts._ORDER8) == 9
    assert ts._select_lanes(sc, 16, ts._ORDER4) == 2  # 4-wide lane order 0,2,4,6,1,...


def test_find_match8_is_nearest_in_bin():
    book = cb.codebook("iq2_kt")
    tup = (book.values, book.mids, book.start, book.members, book.cvt, book.vt)
    rng = np.random.default_rng(7)
    buf = np.empty(65536, np.float32)
    out = np.empty(4, np.int64)
    for _ in range(20):
        xb = rng.standard_normal(32).astype(np.float32)
        wb = rng.random(32, F) + F(0.1)
        d = F(np.abs(xb).max() / 90)
        ts.find_match8(out, d, xb, wb, tup, buf)
        for g in range(4):
            vx = (F(1) / d) * xb[8 * g:8 * g + 8]
            u = int(((vx > book.mids) * (1 << np.arange(8))).sum())
            cand = book.members[book.start[u]:book.start[u + 1]]
            s = (wb[8 * g:8 * g + 8] * (book.values[cand] - vx) ** 2).sum(1, dtype=np.float64)
            assert out[g] in cand
            got = (wb[8 * g:8 * g + 8] * (book.values[out[g]] - vx) ** 2).sum(dtype=np.float64)
            assert got <= s.min() * (1 + 1e-5)


def test_best_scale_and_weights_match_numpy():
    rng = np.random.default_rng(9)
    vals = cb.trellis_values(15, 4, 4096, False)
    x = rng.standard_normal(256).astype(np.float32)
    qw = rng.random(256, F)
    idx = rng.integers(0, 32768, 8)
    d, score = ts.best_scale(x[:32], qw[:32], vals, idx, 4)
    q = vals[idx].reshape(-1).astype(np.float64)
    sqx, sq2 = (qw[:32] * q * x[:32]).sum(), (qw[:32] * q * q).sum()
    np.testing.assert_allclose([d, score], [sqx / sq2, sqx * sqx / sq2], rtol=1e-5)
    for mode, fused in ((MODE_DEFAULT, False), (MODE_IMATRIX, False), (MODE_IMATRIX, True)):
        w = np.empty(256, np.float32)
        ts.set_weights(w, x, qw, mode, fused)
        s2 = 2 * (x.astype(np.float64) ** 2).sum() / 256
        want = 0.25 * s2 + x**2 if mode == MODE_DEFAULT else qw * np.sqrt(s2 + x.astype(np.float64)**2)
        np.testing.assert_allclose(w, want, rtol=1e-5)
