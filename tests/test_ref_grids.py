"""Comparison grids and the block-normalized weight distribution."""

import numpy as np

from iqk_studio.quant.ref_grids import FE1M2, NF4, block_normalized, comparison_grids, normalized


def test_grids_sorted_and_sizes():
    g = comparison_grids()
    for name, v in g.items():
        assert np.all(np.diff(v) >= 0), name
    assert len(g["nf4"]) == 16 and len(g["fe1m2"]) == 15  # +0 and -0 are one value
    assert len(g["iq4k_values base"]) == 16 and len(g["iq4k_values shifted"]) == 16
    np.testing.assert_array_equal(g["iq4k base (mirrored)"], -g["iq4k_values base"][::-1])
    assert NF4[0] == -1 and NF4[-1] == 1 and FE1M2.max() == 1.75


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
