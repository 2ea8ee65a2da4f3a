"""The branch-free (vectorizable) searches equal the scalar ones they replaced (IQ4_NL: every float\nwithin 1000 ulps of each midpoint, both signs; the full float32 range was checked once offline)."""

import numpy as np

from iqk_studio.quant import common as c
from iqk_studio.quant.kernels import legacy


def test_iq4_counted_labels_and_sums_equal_best_index():
    vals = legacy.KVALUES_IQ4NL
    mids = ((vals[1:] + vals[:-1]) / 2).astype(np.float32)
    around = (mids.view(np.int32)[:, None] + np.arange(-1000, 1001, dtype=np.int32)).ravel()
    xs = np.concatenate([np.linspace(-140, 130, 5408, dtype=np.float32), mids,
                         around.view(np.float32), -around.view(np.float32),
                         np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30])])
    xs = xs[: xs.size // 32 * 32]
    L = np.empty(32, np.uint8)
    q = np.empty(32, np.float32)
    w = np.ones(32, np.float32)
    for b in range(xs.size // 32):
        xb = xs[32 * b:32 * b + 32]
        want = np.array([c.best_index(vals, x) for x in xb])
        legacy._iq4_labels(L, xb, vals, np.float32(1.0))
        assert np.array_equal(L, want)
        legacy._iq4_sums(q, xb, w, vals, np.float32(1.0))
        assert np.array_equal(q, vals[want])
