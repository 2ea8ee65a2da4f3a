"""Comparison grids and the block-normalized weight distribution."""

import numpy as np

from iqk_studio.quant.ref_grids import block_normalized, comparison_grids, normalized


def test_grids_sorted_and_scaled():
    g = comparison_grids()
    for name, v in g.items():
        assert np.all(np.diff(v) >= 0), name
        assert np.abs(v).max() == 1.0, name
    assert all(len(g[k]) == 16 for k in ("nf4", "fe1m2", "e2m1", "iq4k", "iq4k shifted mirrored"))
    np.testing.assert_array_equal(g["iq4k mirrored"], -g["iq4k"][::-1])
    np.testing.assert_array_equal(g["iq4k"], g["iq4nl"])


def test_block_normalized_obvious():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 64)).astype(np.float32)
    x[1, :32] = 0  # an all-zero block is dropped
    got = block_normalized(x, 32)
    want = []
    for r in range(3):
        for b in range(2):
            blk = x[r, 32 * b:32 * b + 32]
            if np.abs(blk).max() > 0:
                want.extend(blk / np.abs(blk).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=0)
    assert np.abs(got).max() == 1
    assert normalized(np.array([-2.0, 1.0]))[0] == -1
