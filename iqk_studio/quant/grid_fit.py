"""Which iq4k variant IQ4_KS / IQ4_K blocks use (read from their bytes), and how well each block of
weights fits the fp4 grids (e2m1, fe1m2, nf4) compared with its best iq4k variant: the numbers
behind "was this model trained towards an fp4 format?" (ik_llama.cpp discussion #359)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from iqk_studio._parallel import KERNEL_LOCK
from iqk_studio.quant.grids import E2M1, FE1M2, NF4, iq4k_values, iq4k_variants

VARIANTS = tuple(iq4k_variants())  # index = 2 * (scale < 0) + shifted
FP4 = {"e2m1": E2M1, "fe1m2": FE1M2, "nf4": NF4}
BLOCK = {"iq4_ks": 32, "iq4_k": 16}


@dataclass(frozen=True)
class BlockCodes:
    """A row block of IQ4_KS / IQ4_K, decoded: value = scale * iq4k_values[16*shifted + idx]."""

    scale: np.ndarray  # float32 (rows, n // block): the block's signed scale
    shifted: np.ndarray  # bool (rows, n // block)
    idx: np.ndarray  # uint8 (rows, n): 4-bit index of each weight
    block: int

    def values(self) -> np.ndarray:
        """float32 (rows, n), as the reference dequantizes (scale * value, one float32 product)."""
        rows, nb = self.scale.shape
        row = (self.shifted.astype(np.int64) * 16)[:, :, None] + self.idx.reshape(rows, nb, -1)
        v = iq4k_values.astype(np.float32)[row]
        return (self.scale[:, :, None] * v).reshape(rows, -1)

    def variants(self) -> np.ndarray:
        """int8 (rows, n // block): index into VARIANTS, -1 for a block whose scale is 0."""
        v = (2 * (self.scale < 0) + self.shifted).astype(np.int8)
        v[self.scale == 0] = -1
        return v


def _nibbles(qs: np.ndarray, half: int) -> np.ndarray:
    """(..., half) packed bytes -> (..., 2 * half) indices: low nibbles first, then high."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1)


def decode_iq4_ks(raw: np.ndarray, n: int) -> BlockCodes:
    # row: d:f32 | per 256: scales:u8[8] (bit 0 shift, bits 1-7 scale + 127) | qs:u8[128]
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1, 4 + n // 256 * 136)
    rows = raw.shape[0]
    d = raw[:, :4].copy().view(np.float32)  # (rows, 1)
    sb = raw[:, 4:].reshape(rows, n // 256, 136)
    sc = sb[:, :, :8].reshape(rows, -1)
    qs = sb[:, :, 8:].reshape(rows, n // 32, 16)
    scale = d * ((sc & 254).astype(np.float32) - np.float32(127))
    return BlockCodes(scale.astype(np.float32), (sc & 1).astype(bool),
                      _nibbles(qs, 16).reshape(rows, n), 32)


def decode_iq4_k(raw: np.ndarray, n: int) -> BlockCodes:
    # per 256: d:f16 | extra:u16 (shift bit per 16) | scales_h:u8[4] | scales_l:u8[8] | qs:u8[128]
    raw = np.asarray(raw, dtype=np.uint8).reshape(-1, n // 256 * 144)
    rows, nsb = raw.shape[0], n // 256
    b = raw.reshape(rows, nsb, 144)
    d = b[:, :, 0:2].copy().view(np.float16).astype(np.float32)  # (rows, nsb, 1)
    extra = b[:, :, 2:4].copy().view(np.uint16).astype(np.int64)  # (rows, nsb, 1)
    sh = b[:, :, 4:8].astype(np.int64)
    sl = b[:, :, 8:16].astype(np.int64)
    ib = np.arange(8)
    shv = sh[:, :, ib // 2] >> (4 * (ib % 2))  # (rows, nsb, 8)
    ls1 = (sl & 0xF) | ((shv << 4) & 0x30)
    ls2 = (sl >> 4) | ((shv << 2) & 0x30)
    ls = np.stack([ls1, ls2], axis=-1).reshape(rows, nsb, 16) - 32  # 16-blocks in order
    scale = (d * ls.astype(np.float32)).reshape(rows, -1)
    shifted = ((extra >> np.arange(16)) & 1).astype(bool).reshape(rows, -1)
    qs = b[:, :, 16:].reshape(rows, nsb * 8, 16)  # per 32: low nibbles -> first 16, high -> next
    return BlockCodes(scale.astype(np.float32), shifted, _nibbles(qs, 16).reshape(rows, n), 16)


DECODERS = {"iq4_ks": decode_iq4_ks, "iq4_k": decode_iq4_k}


def variant_counts(codes: BlockCodes, keep: np.ndarray | None = None) -> np.ndarray:
    """int64 (4,): blocks per variant (VARIANTS order); `keep` masks blocks (e.g. non-zero
    weights); zero-scale blocks are not counted."""
    v = codes.variants().reshape(-1)
    if keep is not None:
        v = v[np.asarray(keep, dtype=bool).reshape(-1)]
    return np.bincount(v[v >= 0], minlength=4)[:4].astype(np.int64)


# ------------------------------------------------------------------------ best fit per block

TRIALS = np.linspace(0.5, 1.5, 41)  # max |x| / scale tried; each assignment then refit


@njit(nogil=True, cache=True, parallel=True)
def _fit_kernel(out, xb, grids, mids, trials):
    """out (nb, ng) float64: per block of xb (nb, B) and 16-value grid (ng, 16) (sorted, max |v|
    = 1; mids (ng, 15) the midpoints), the least Σ(x - s·q)² over the trials, q the nearest grid
    values of x·t/max|x| (ties to the lower value), s refit by least squares for q."""
    nb, bs = xb.shape
    ng, nm = mids.shape
    for b in prange(nb):
        amax, sxx = 0.0, 0.0
        for j in range(bs):
            amax = max(amax, abs(xb[b, j]))
            sxx += xb[b, j] * xb[b, j]
        for k in range(ng):
            best = sxx
            for t in trials:
                inv = t / amax if amax > 0 else 0.0
                sxq, sqq = 0.0, 0.0
                for j in range(bs):
                    y = xb[b, j] * inv
                    lo, hi = 0, nm  # binary search: lo = number of midpoints below y
                    while lo < hi:
                        m = (lo + hi) >> 1
                        if mids[k, m] < y:
                            lo = m + 1
                        else:
                            hi = m
                    q = grids[k, lo]
                    sxq += xb[b, j] * q
                    sqq += q * q
                err = sxx - sxq * sxq / sqq if sqq > 0 else sxx
                best = min(best, err)
            out[b, k] = max(best, 0.0)


def grid_fit_errors(xb: np.ndarray, grids) -> np.ndarray:
    """float64 (nb, len(grids)): for blocks xb (nb, B), the least squared error Σ(x - s·q)² over
    block scales s, q the nearest values of each 16-value grid to x/s. Each trial in TRIALS maps
    max |x| to that fraction of max |grid|, assigns nearest values (ties to the lower one) and
    refits s by least squares for that assignment (error Σx² - (Σxq)²/Σq²); the least is kept."""
    g = np.array([np.sort(np.asarray(v, dtype=np.float64)) for v in grids])
    if g.ndim != 2 or g.shape[1] != 16:
        raise ValueError("grid_fit_errors takes 16-value grids")
    g /= np.abs(g).max(axis=1, keepdims=True)
    xb = np.ascontiguousarray(xb, dtype=np.float64)
    out = np.empty((xb.shape[0], len(g)), dtype=np.float64)
    with KERNEL_LOCK:
        _fit_kernel(out, xb, g, (g[:, 1:] + g[:, :-1]) / 2, TRIALS)
    return out


@dataclass(frozen=True)
class FitStats:
    """Per-block fits of one tensor (or sample): errors relative to the block's Σx²."""

    names: tuple[str, ...]  # grids: the fp4 grids, then "iq4k" (best of the four variants)
    errors: np.ndarray  # float64 (nb, len(names)): Σ(x - s·q)² of the best fit
    energy: np.ndarray  # float64 (nb,): Σx² of each block (zero blocks removed)

    def rel(self) -> dict[str, float]:
        """Grid -> Σ errors / Σ energy over all blocks (the relative MSE of the tensor)."""
        tot = float(self.energy.sum())
        return {n: float(self.errors[:, i].sum()) / tot if tot else 0.0
                for i, n in enumerate(self.names)}

    def distance(self) -> np.ndarray:
        """float64 (nb,): (best fp4 error - best iq4k error) / Σx² of each block; negative
        where an fp4 grid fits the block better than every iq4k variant."""
        fp4 = self.errors[:, :-1].min(axis=1)
        return (fp4 - self.errors[:, -1]) / self.energy


def fit_stats(x: np.ndarray, block: int = 32) -> FitStats:
    """Best fits of every `block`-block of x (rows, n) to e2m1, fe1m2, nf4 and the best iq4k
    variant (grids scaled to the block: only their shape matters). All-zero blocks are skipped."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[-1] - x.shape[-1] % block
    xb = x[..., :n].reshape(-1, block).astype(np.float64)
    xb = xb[np.abs(xb).max(axis=1) > 0]
    err = grid_fit_errors(xb, [*FP4.values(), *iq4k_variants().values()])
    cols = np.concatenate([err[:, :len(FP4)], err[:, len(FP4):].min(axis=1, keepdims=True)], 1)
    return FitStats((*FP4, "iq4k"), cols, (xb * xb).sum(axis=1))
