"""Codebooks of the trellis quantizers (ik_llama.cpp QuantizerIQKT): the integer trellis values,
their fixed-bin clustering (no k-means: 256 or 625 bins) and each bin's candidate list.

Deterministic and thread-free. Float arithmetic as GCC built it: the bin centroids are float32
running sums over points in index order divided by the count; distances are fused chains
dist = fma(d, d, dist) (read from iqk_quantize.cpp's -fdump-tree-optimized).
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from iqk_studio.quant.common import fma32

F = np.float32
KA = 0xCBAC1FED


def trellis_values(nbits: int, group: int, offset: int, is_abs: bool) -> np.ndarray:
    """(2^nbits, group) float32: value k of code i is the byte sum of ka^(k+1)·(i+offset) & 0x3f3f3f3f
    minus 126 (its absolute value for IQ3_KT)."""
    x = np.arange(1 << nbits, dtype=np.uint64) + np.uint64(offset)
    out = np.empty((1 << nbits, group), dtype=np.float32)
    for k in range(group):
        x = (x * np.uint64(KA)) & np.uint64(0xFFFFFFFF)
        s = x & np.uint64(0x3F3F3F3F)
        v = ((s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + (s >> 24)).astype(np.int64) - 126
        out[:, k] = np.abs(v) if is_abs else v
    return out


def bin_mids(values: np.ndarray, is_abs: bool) -> np.ndarray:
    """Per-dimension split points of the 256-bin clustering: the range midpoint, or for IQ3_KT the
    median (mean of the two middle integers; the point count is even)."""
    n = values.shape[0]
    if is_abs:
        p = np.sort(values.astype(np.int64), axis=0)
        return (F(0.5) * (p[n // 2] + p[n // 2 - 1]).astype(np.float32)).astype(np.float32)
    return (F(0.5) * (values.min(axis=0) + values.max(axis=0))).astype(np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def bin5(v):
    return 0 if v < -48.0 else 1 if v < -16.0 else 2 if v < 16.0 else 3 if v < 48.0 else 4


@njit(nogil=True, cache=True, error_model="numpy")
def _centroids(out, values, mids, nbins):
    # out (nbins, group): mean of the points in each bin, float32 sums in point order; empty -> 0
    group = values.shape[1]
    sump = np.zeros((nbins, group), dtype=np.float32)
    counts = np.zeros(nbins, dtype=np.int64)
    for ip in range(values.shape[0]):
        u = 0
        if group == 8:
            for k in range(8):
                if values[ip, k] > mids[k]:
                    u |= 1 << k
        else:
            s = 1
            for k in range(4):
                u += s * bin5(values[ip, k])
                s *= 5
        counts[u] += 1
        for k in range(group):
            sump[u, k] += values[ip, k]
    out[:] = 0
    for ic in range(nbins):
        if counts[ic]:
            for k in range(group):
                out[ic, k] = sump[ic, k] / F(counts[ic])


@njit(nogil=True, cache=True, error_model="numpy")
def _dist2(values, ip, cents, ic):
    d2 = F(0.0)
    for k in range(values.shape[1]):
        d = values[ip, k] - cents[ic, k]
        d2 = fma32(d, d, d2)
    return d2


@njit(nogil=True, cache=True, error_model="numpy")
def _neighbours(which, values, cents):
    # which (npoint, nn): each point's nn nearest bins, nearest first, ties to the lower bin
    nn = which.shape[1]
    best = np.empty(nn, dtype=np.float32)
    for ip in range(values.shape[0]):
        best[:] = np.inf
        which[ip, :] = -1
        for ic in range(cents.shape[0]):
            d2 = _dist2(values, ip, cents, ic)
            for j in range(nn):
                if d2 < best[j]:
                    for k in range(nn - 1, j, -1):
                        best[k] = best[k - 1]
                        which[ip, k] = which[ip, k - 1]
                    best[j] = d2
                    which[ip, j] = ic
                    break


@njit(nogil=True, cache=True, error_model="numpy")
def _members(which, values, cents):
    """CSR (start, members): bin ic holds the points naming it (in point order), padded to a
    multiple of 8 with the nearest other points (by (distance, index)); empty bins stay empty."""
    npoint, nn = which.shape
    nbins = cents.shape[0]
    counts = np.zeros(nbins, dtype=np.int64)
    for ip in range(npoint):
        for j in range(nn):
            counts[which[ip, j]] += 1
    padded = np.empty(nbins, dtype=np.int64)
    for ic in range(nbins):
        padded[ic] = 8 * ((counts[ic] + 7) // 8)
    start = np.zeros(nbins + 1, dtype=np.int64)
    for ic in range(nbins):
        start[ic + 1] = start[ic] + padded[ic]
    members = np.empty(start[nbins], dtype=np.int32)
    fill = start[:nbins].copy()
    inbin = np.zeros(npoint, dtype=np.bool_)
    for ip in range(npoint):
        for j in range(nn):
            ic = which[ip, j]
            members[fill[ic]] = ip
            fill[ic] += 1
    for ic in range(nbins):
        nadd = padded[ic] - counts[ic]
        if nadd == 0:
            continue
        inbin[:] = False
        for m in range(start[ic], start[ic] + counts[ic]):
            inbin[members[m]] = True
        bd = np.full(8, np.inf, dtype=np.float32)
        bi = np.full(8, npoint, dtype=np.int64)
        for ip in range(npoint):  # the nadd smallest (dist2, ip), as std::sort of pairs
            if inbin[ip]:
                continue
            d2 = _dist2(values, ip, cents, ic)
            if d2 < bd[nadd - 1]:
                j = nadd - 1
                while j > 0 and d2 < bd[j - 1]:
                    bd[j] = bd[j - 1]
                    bi[j] = bi[j - 1]
                    j -= 1
                bd[j] = d2
                bi[j] = ip
        for j in range(nadd):
            members[fill[ic]] = bi[j]
            fill[ic] += 1
    return start, members


def _bin_major(values, start, members):
    group = values.shape[1]
    out = np.empty(group * members.shape[0], dtype=np.float32)
    for u in range(start.shape[0] - 1):
        s0, s1 = start[u], start[u + 1]
        out[group * s0:group * s1] = values[members[s0:s1]].T.reshape(-1)
    return out


class Codebook:
    """values (N, G); mids (8,) for the 256-bin 8-D books; start/members CSR over the bins;
    cvt: flat, bin after bin, each bin's candidates dimension-major (G, n) at G·start[bin];
    vt = values.T (G, N) for the empty-bin fallback."""

    def __init__(self, nbits, group, offset, is_abs, nbins, nn):
        self.values = trellis_values(nbits, group, offset, is_abs)
        self.mids = bin_mids(self.values, is_abs) if group == 8 else np.zeros(group, np.float32)
        cents = np.empty((nbins, group), dtype=np.float32)
        _centroids(cents, self.values, self.mids, nbins)
        which = np.empty((self.values.shape[0], nn), dtype=np.int32)
        _neighbours(which, self.values, cents)
        self.start, self.members = _members(which, self.values, cents)
        self.cvt = _bin_major(self.values, self.start, self.members)
        self.vt = np.ascontiguousarray(self.values.T)


# name -> (nbits, group, offset, is_abs, nbins, neighbours), as iq*kt_quantizer() builds them
SPECS = {
    "iq1_kt": (13, 8, 4096, False, 256, 32),
    "iq2_kt": (16, 8, 4096, False, 256, 8),
    "iq3_kt": (16, 8, 4096, True, 256, 8),
    "iq4_kt": (15, 4, 4096, False, 625, 6),
    "iq4_kt_shift": (15, 4, 4096 + 32768, False, 625, 6),
}
_BOOKS: dict[str, Codebook] = {}
_LOCK = threading.Lock()


def codebook(name: str) -> Codebook:
    """The (lazily built, process-wide) codebook of one quantizer."""
    with _LOCK:
        if name not in _BOOKS:
            _BOOKS[name] = Codebook(*SPECS[name])
        return _BOOKS[name]


@njit(nogil=True, cache=True, inline="always")
def code_values(y, r, o, code, offset, group, scale, is_abs):
    # y[r, o:o+group] = scale·trellis(code)
    x = np.uint32(code + offset)
    for k in range(group):
        x = np.uint32(np.uint64(x) * np.uint64(0xCBAC1FED) & np.uint64(0xFFFFFFFF))
        s = x & np.uint32(0x3F3F3F3F)
        v = np.int32((s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + (s >> 24)) - 126
        y[r, o + k] = scale * np.float32(abs(v) if is_abs else v)
