"""4-bit value grids from outside ggml, for comparison with the IQK grids (not used by any kernel).

nf4: QLoRA's NormalFloat4 (Dettmers et al. 2023, bitsandbytes' table). fe1m2: a 4-bit float with a
sign, 1 exponent bit and 2 mantissa bits with subnormals, magnitudes {0, .25, .5, .75, 1, 1.25, 1.5,
1.75}. int4: the uniform symmetric grid -8..7 (Q4_0). All as float64 values of one block.
"""

from __future__ import annotations

import numpy as np

from iqk_studio.quant.grids import GRIDS

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0])
_E1M2 = np.array([m / 4 if e == 0 else 1 + m / 4 for e in (0, 1) for m in range(4)])
FE1M2 = np.unique(np.concatenate([-_E1M2, _E1M2]))
INT4 = np.arange(-8, 8, dtype=np.float64)


def comparison_grids() -> dict[str, np.ndarray]:
    """Name -> sorted 1-D values: every ggml 1-D grid half, the four IQ4_K variants (base,
    shifted, and both mirrored, as IQ4_K's search tries them), and nf4 / fe1m2 / int4."""
    out: dict[str, np.ndarray] = {}
    for g in GRIDS:
        if g.values.ndim != 1:
            continue
        out[g.name if g.halves == 1 else f"{g.name} base"] = np.sort(g.base.astype(np.float64))
        if g.halves == 2:
            out[f"{g.name} shifted"] = np.sort(g.shifted.astype(np.float64))
    iq4 = next(g for g in GRIDS if g.name == "iq4k_values")
    out["iq4k base (mirrored)"] = np.sort(-iq4.base.astype(np.float64))
    out["iq4k shifted (mirrored)"] = np.sort(-iq4.shifted.astype(np.float64))
    out["nf4"], out["fe1m2"], out["int4 (q4_0)"] = NF4, FE1M2, INT4
    return out


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
