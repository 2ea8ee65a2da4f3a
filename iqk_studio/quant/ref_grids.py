"""Helpers for comparing weights with value grids: grids scaled to max |v| = 1 and the
block-normalized weight distribution a block-scaled grid has to fit (tables: quant/grids.py)."""

from __future__ import annotations

import numpy as np

from iqk_studio.quant.grids import curves


def comparison_grids() -> dict[str, np.ndarray]:
    """Name -> sorted values scaled to max |v| = 1: the four IQ4_K variants, every ggml 1-D grid
    row, nf4 / fe1m2 / e2m1 and the linear q4_0 / q8_0 (grids.curves)."""
    return curves()


def normalized(values: np.ndarray) -> np.ndarray:
    """A grid scaled so its largest magnitude is 1 (how a block's absmax maps onto it)."""
    m = np.abs(values).max()
    return values / m if m else values


def block_normalized(x: np.ndarray, block: int = 32) -> np.ndarray:
    """Weights divided by the max |w| of their block of `block` along the row: the distribution a
    block-scaled grid has to fit. All-zero blocks are dropped."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[-1] - x.shape[-1] % block
    b = x[..., :n].reshape(-1, block)
    amax = np.abs(b).max(axis=1)
    keep = amax > 0
    return (b[keep] / amax[keep, None]).reshape(-1)
