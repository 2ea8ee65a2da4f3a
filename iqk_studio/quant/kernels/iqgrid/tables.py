"""The grids of the IQ grid types (gguf-py's copies of ggml-common.h) and the search tables the two
quantizer generations derive from them (iq3xs_init_impl / iq2xs_init_impl of ggml-quants.c), plus
the dequantizers' block-scale and sign helpers."""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit


def _table(gguf_class: str, dtype) -> np.ndarray:
    """A ggml grid (iq2xxs_grid, ...) as (entries, values) integers, from gguf-py's copy."""
    import gguf.quants as gq

    cls = getattr(gq, gguf_class)
    cls.init_grid()
    return cls.grid.reshape(cls.grid_shape).astype(dtype)


@cache
def grid_tables() -> dict[str, np.ndarray]:
    from gguf.quants import IQ2_XXS

    return {"iq2xxs": _table("IQ2_XXS", np.uint8), "iq2xs": _table("IQ2_XS", np.uint8),
            "iq2s": _table("IQ2_S", np.uint8), "iq3xxs": _table("IQ3_XXS", np.uint8),
            "iq3s": _table("IQ3_S", np.uint8), "iq1s": _table("IQ1_S", np.int8),
            "ksigns": np.frombuffer(IQ2_XXS.ksigns, np.uint8).copy()}


def d_f16(raw: np.ndarray, nbytes: int, off: int) -> np.ndarray:
    """(rows, n_blocks) float32 of the fp16 at `off` in each `nbytes` block."""
    b = raw.reshape(raw.shape[0], -1, nbytes)[:, :, off:off + 2]
    return b.copy().view(np.float16)[..., 0].astype(np.float32)


@njit(nogil=True, cache=True, inline="always")
def _sign(byte, j):
    return np.float32(-1.0) if (byte >> j) & 1 else np.float32(1.0)


# grid name -> (bits per label, labels per group, how many distinct distances of neighbours)
_SPEC = {"iq3xxs": (3, 4, 2), "iq3s": (3, 4, 3), "iq2s": (2, 8, 1)}


def grid_levels(name: str) -> np.ndarray:
    """(entries, group) int64 labels l of each grid point (its values are 2l+1 on the odd lattice)."""
    g = grid_tables()[name]
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
def lattice_tables(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, kmap, neighbours) for a grid of the lattice search ("iq3xxs", "iq3s", "iq2s").

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


_KMAP_SIZE = 1 << 16  # u = sum l_i << 2i over 8 two-bit fields


def grid_codes(kind: str) -> np.ndarray:
    """(entries, 8) int8 grid as ggml's quantizers hold it: 2·l + 1 with l in 0..2, in the order of
    gguf-py's dequantization grid (iq2xxs: 8/25/43 -> l 0/1/2; iq1s: -1/0/1 -> l 0/1/2)."""
    g = grid_tables()["iq2xxs" if kind == "iq2xxs" else "iq2xs" if kind == "iq2xs" else "iq1s"]
    if kind == "iq1s":
        lv = g.astype(np.int64) + 1
    else:
        lv = np.searchsorted(np.array([8, 25, 43]), g.astype(np.int64))
    return (2 * lv + 1).astype(np.int8)


@cache
def neighbour_tables(kind: str) -> tuple:
    """(codes as float32, kmap, nb_off, nb_idx) for kind iq2xxs / iq2xs / iq1s.

    kmap[u] is the grid index of the point u (8 two-bit levels) or -1; for an off-grid u with
    levels 0..2 the candidates are nb_idx[nb_off[u]:nb_off[u+1]]: every grid point whose squared
    distance is among the nwant smallest distinct distances (nwant 2 for iq2, 3 for iq1), by
    (distance, index) as ggml's qsort orders them."""
    codes = grid_codes(kind)
    nwant = 3 if kind == "iq1s" else 2
    levels = (codes.astype(np.int64) - 1) // 2
    keys = (levels << (2 * np.arange(8))).sum(axis=1)
    kmap = np.full(_KMAP_SIZE, -1, np.int32)
    kmap[keys] = np.arange(len(codes), dtype=np.int32)
    # every u with levels 0..2 that is off the grid
    lv3 = np.array(np.meshgrid(*[np.arange(3)] * 8, indexing="ij")).reshape(8, -1).T  # (6561, 8)
    us = (lv3 << (2 * np.arange(8))).sum(axis=1)
    off = kmap[us] < 0
    lv3, us = lv3[off], us[off]
    pos = 2 * lv3 + 1
    d2 = ((codes[None, :, :].astype(np.int32) - pos[:, None, :].astype(np.int32)) ** 2).sum(-1)
    counts = np.zeros(_KMAP_SIZE, np.int64)
    lists = {}
    for r in range(len(us)):
        dist = d2[r]
        order = np.argsort(dist, kind="stable")  # (d2, j) ascending
        distinct = np.unique(dist)[:nwant]
        sel = order[dist[order] <= distinct[-1]]
        lists[int(us[r])] = sel
        counts[us[r]] = len(sel)
    nb_off = np.zeros(_KMAP_SIZE + 1, np.int64)
    nb_off[1:] = np.cumsum(counts)
    nb_idx = np.empty(nb_off[-1], np.int32)
    for u, sel in lists.items():
        nb_idx[nb_off[u]:nb_off[u + 1]] = sel
    return codes.astype(np.float32), kmap, nb_off, nb_idx  # float codes: the searches' q
