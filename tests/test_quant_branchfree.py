"""The branch-free (vectorizable) searches equal the reference's scalar tests they replaced.

IQ4_NL: every float within 1000 ulps of each midpoint and of each integer in [-130, 130] (where
a + 128 may round up into the next unit interval), both signs, specials; the whole float32
range |a| <= 256 was checked once offline."""

import numpy as np

from iqk_studio.quant import common as c
from iqk_studio.quant.kernels.legacy import iq4_nl as legacy


def _reference_index(vals, a):
    """#{k : a - v[k] >= v[k+1] - a} in float32, the tie test of best_index_iq4nl."""
    a = a.astype(np.float32)[:, None]
    return ((a - vals[:-1]) >= (vals[1:] - a)).sum(axis=1)


def test_iq4_table_labels_and_sums_equal_the_tie_test():
    vals = legacy.KVALUES_IQ4NL
    mids = ((vals[1:] + vals[:-1]) / 2).astype(np.float32)
    ints = np.arange(-130, 131, dtype=np.float32)
    steps = np.arange(-1000, 1001, dtype=np.int32)
    near = [(np.abs(p).view(np.int32)[:, None] + steps).ravel().view(np.float32) for p in (mids, ints)]
    near = np.concatenate(near)
    xs = np.concatenate([np.linspace(-140, 130, 5408, dtype=np.float32), near, -near,
                         np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30])])
    xs = xs[: xs.size // 32 * 32]
    assert xs.size > 1_000_000
    want = _reference_index(vals, xs)
    L = np.empty(32, np.uint8)
    q = np.empty(32, np.float32)
    w = np.ones(32, np.float32)
    for b in range(xs.size // 32):
        xb = xs[32 * b:32 * b + 32]
        wb = want[32 * b:32 * b + 32]
        legacy._iq4_labels(L, xb, vals, np.float32(1.0))
        assert np.array_equal(L, wb), xb[L != wb]
        legacy._iq4_sums(q, xb, w, vals, np.float32(1.0))
        assert np.array_equal(q, vals[wb])


def test_iq4_tie_test_is_best_index():
    vals = legacy.KVALUES_IQ4NL
    xs = np.linspace(-140, 130, 2701, dtype=np.float32)
    got = _reference_index(vals, xs)
    assert all(c.best_index(vals, x) == g for x, g in zip(xs, got, strict=True))
