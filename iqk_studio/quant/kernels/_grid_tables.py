"""Search tables of the grid quantizers (IQ3_XXS, IQ3_S, IQ2_S), derived from the grids as
ggml-quants.c's iq3xs_init_impl / iq2xs_init_impl derive them: point map and neighbour lists."""

from __future__ import annotations

from functools import cache

import numpy as np

from iqk_studio.quant.kernels.grid import _tables as _dequant_tables

# grid name -> (bits per label, labels per group, how many distinct distances of neighbours)
_SPEC = {"iq3xxs": (3, 4, 2), "iq3s": (3, 4, 3), "iq2s": (2, 8, 1)}


def grid_levels(name: str) -> np.ndarray:
    """(entries, group) int64 labels l of each grid point (its values are 2l+1 on the odd lattice)."""
    g = _dequant_tables()[name]
    _, inv = np.unique(g, return_inverse=True)
    return inv.reshape(g.shape).astype(np.int64)


def _neighbours(points: np.ndarray, levels: np.ndarray, nwant: int) -> list[np.ndarray]:
    """For each off-grid point (labels), the grid indices whose squared distance is one of the
    nwant smallest distinct distances, ordered by (distance, index) as the reference's qsort."""
    p = 2 * points + 1
    q = 2 * levels + 1
    d2 = (p * p).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2 * (p @ q.T)
    order = np.argsort(d2, axis=1, kind="stable")
    ds = np.take_along_axis(d2, order, axis=1)
    rank = np.concatenate([np.zeros((len(ds), 1), np.int64),
                           np.cumsum(ds[:, 1:] != ds[:, :-1], axis=1)], axis=1)
    count = (rank < nwant).sum(1)
    return [order[i, :count[i]] for i in range(len(order))]


@cache
def search_tables(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, kmap, neighbours) for a grid name of quant.kernels.grid ("iq3xxs", "iq3s", "iq2s").

    grid: (entries, group) float32 lattice values 2l+1. kmap: int32 over packed labels
    u = Σ l_i << bits·i (labels 0..max used); >= 0 a grid index, else -(o+1) where
    neighbours[o] is the list length followed by the list (uint16 grid indices)."""
    bits, group, nwant = _SPEC[name]
    levels = grid_levels(name)
    nl = int(levels.max()) + 1
    shifts = bits * np.arange(group)
    kmap = np.full(1 << (bits * group), -1, np.int32)
    kmap[(levels << shifts).sum(1)] = np.arange(len(levels), dtype=np.int32)
    # every label vector the quantizer can produce (each label in 0..nl-1)
    allp = np.stack(np.meshgrid(*[np.arange(nl)] * group, indexing="ij"), -1).reshape(-1, group)
    codes = (allp << shifts).sum(1)
    off = kmap[codes] < 0
    lists = _neighbours(allp[off], levels, nwant)
    flat = []
    for code, lst in zip(codes[off], lists, strict=True):
        kmap[code] = -(len(flat) + 1)
        flat.append(len(lst))
        flat.extend(lst.tolist())
    grid = (2 * levels + 1).astype(np.float32)
    return grid, kmap, np.array(flat, np.uint16)
