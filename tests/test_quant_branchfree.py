"""The branch-free (vectorizable) searches equal the scalar ones they replaced."""

import numpy as np

from iqk_studio.quant import common as c
from iqk_studio.quant.kernels import legacy


def test_iq4_counted_labels_and_sums_equal_best_index():
    vals = legacy.KVALUES_IQ4NL
    mids = ((vals[1:] + vals[:-1]) / 2).astype(np.float32)
    xs = np.concatenate([np.linspace(-140, 130, 5408, dtype=np.float32), mids,
                         np.nextafter(mids, np.float32(-1e9)), np.nextafter(mids, np.float32(1e9)),
                         np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0])]).astype(np.float32)
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
