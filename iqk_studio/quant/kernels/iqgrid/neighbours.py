"""The neighbour search of the imatrix-only grid quantizers iq2_xxs, iq2_xs, iq1_s, iq1_m
(ggml-quants.c): the iq2 nearest-grid search, level rounding, weights and sign folding, a stable
sort and make_qp_quants as the reference build compiles it there; and their one wrapper, which
refuses to run without an importance matrix as llama-quantize does and turns a row status into
the error llama-quantize aborts with."""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant.common import fma32, nearest_int
from iqk_studio.quant.errors import QuantError
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_UNIFORM
from iqk_studio.quant.kernels.iqgrid.tables import neighbour_tables
from iqk_studio.quant.kernels.wrap import quantizer

F = np.float32
# What GCC 12 -O3 -march=znver3 made of these functions (ggml-quants.c, -fdump-tree-optimized):
# nearest_int(v) is never fused with its + 1.5·2^23 (only an inner id·x - 1 is an FMA); running
# sums w·x·q are fused except IQ1_M's prefix sums and refit; the IQ1 split searches fuse only
# their last term (see _iq1s_split, _iq1m_split); sumx² loops are in-order. qsort on these small
# arrays is glibc's merge sort, i.e. stable.
# kernel status per row; each is a row on which llama-quantize aborts
OFF_GRID = 1  # final levels off the grid: "Oops: found point not on grid"
NO_NEIGHBOUR = 2  # no neighbour with a finite error: GGML_ASSERT(grid_index >= 0)
ZERO_BLOCK = 3  # no split has weight: GGML_ASSERT(besti1 >= 0 && ...)


@njit(nogil=True, cache=True, error_model="numpy")
def argsort_stable(idx, v, n):
    """idx[:n] = the indices of v[:n] by ascending value, ties in index order (glibc's qsort is a
    merge sort for these small arrays, so it is stable)."""
    for j in range(n):
        idx[j] = j
    for j in range(1, n):
        k = idx[j]
        key = v[k]
        i = j - 1
        while i >= 0 and v[idx[i]] > key:
            idx[i + 1] = idx[i]
            i -= 1
        idx[i + 1] = k


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def best_neighbour(L, o, codes, nb_off, nb_idx, u, x, w, scale, qa, qb):
    """ggml iq2_find_best_neighbour / iq1_find_best_neighbour2: among u's neighbours the one
    minimising sum w·(scale·q - x)² for q = qa·code + qb (exact: 1,3,5 for iq2; qa = 0.5,
    qb = -1.5 ± δ gives iq1's shifted -1,0,1), with diff = fma(scale, q, -x) and
    d2 = fma(w·diff, diff, d2) as the reference; first on ties, branch-free. Writes the levels to
    L[o:o+8]; returns the index, -1 if no d2 is finite (the reference aborts then)."""
    best = F(np.inf)
    gi = -1
    for t in range(nb_off[u], nb_off[u + 1]):
        j = np.int64(nb_idx[t])
        d2 = F(0.0)
        for i in range(8):
            diff = fma32(scale, qa * codes[j, i] + qb, -x[o + i])
            d2 = fma32(w[o + i] * diff, diff, d2)
        lt = d2 < best
        gi = j if lt else gi
        best = d2 if lt else best
    if gi >= 0:
        for i in range(8):
            L[o + i] = (np.int64(codes[gi, i]) - 1) >> 1
    return gi


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def level_key(L, o):
    """u = sum L[o+i] << 2i for the 8 levels at o."""
    u = 0
    for i in range(8):
        u |= np.int64(L[o + i]) << (2 * i)
    return u


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def grid_lookup(kmap, L, o):
    """The final lookup of the levels at o: u = OR of L << 2i in 16 bits as the reference builds
    it (levels above 2 can only come from make_qp_quants when no scale was ever accepted);
    -1 where the reference aborts or would read past its 43692-entry kmap."""
    u = 0
    for i in range(8):
        u |= (np.int64(L[o + i]) << (2 * i)) & 0xFFFF
    return kmap[u] if u < 43692 else -1


@njit(nogil=True, cache=True, error_model="numpy")
def make_qp_quants_nf(x, w, nmax, L):
    """ggml make_qp_quants as inlined into quantize_row_iq2_xxs_impl: like common's, but there
    nearest_int(iscale·x) is NOT fused (product rounded, then + 1.5·2^23); sums are. L is
    uint8 as in the C: a level of -1 (a flipped sign's negative x) is stored and read as 255."""
    n = x.shape[0]
    mx = F(0.0)
    for i in range(n):
        mx = max(mx, x[i])
    if mx < F(1e-16):
        L[:] = 0
        return F(0.0)
    iscale = F(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i])
    scale = F(1.0) / iscale
    best_mse = F(0.0)
    for i in range(n):
        diff = fma32(-scale, F(L[i]), x[i])
        best_mse = fma32(w[i] * diff, diff, best_mse)
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = fma32(F(is_), F(0.1), F(nmax)) / mx
        scale_is = F(1.0) / iscale_is
        mse = F(0.0)
        for i in range(n):
            li = min(nmax, nearest_int(iscale_is * x[i]))
            diff = fma32(-scale_is, F(li), x[i])
            mse = fma32(w[i] * diff, diff, mse)
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F(0.0)
    suml2 = F(0.0)
    for i in range(n):
        li = min(nmax, nearest_int(iscale * x[i]))
        L[i] = li
        sumlx = fma32(x[i] * w[i], F(li), sumlx)
        suml2 = fma32(F(li), w[i] * F(li), suml2)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            wi = w[i]
            li = F(L[i])
            slx = fma32(-(wi * x[i]), li, sumlx)
            sl2 = fma32(-li, wi * li, suml2)
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    slx = fma32(wi * x[i], F(new_l), slx)
                    sl2 = fma32(F(new_l), wi * F(new_l), sl2)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2


@njit(nogil=True, cache=True, error_model="numpy")
def weights_signs(w, waux, xval, signs, xb, qw, sigma2):
    """w = qw·sqrt(σ² + x²) (fused), waux = sqrt(w); xval = |x| with an even number of sign
    flips per 8-group: on odd parity the smallest w·x·x keeps its sign (7 stored sign bits)."""
    n = xb.shape[0]
    for i in range(n):
        w[i] = qw[i] * np.sqrt(fma32(xb[i], xb[i], sigma2))
        waux[i] = np.sqrt(w[i])
    for k in range(n // 8):
        s = 0
        nflip = 0
        for i in range(8):
            v = xb[8 * k + i]
            if v >= 0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                nflip += 1
                s |= 1 << i
        if nflip % 2:
            imin = 0
            mn = w[8 * k] * xb[8 * k] * xb[8 * k]
            for i in range(1, 8):
                ax = w[8 * k + i] * xb[8 * k + i] * xb[8 * k + i]
                if ax < mn:
                    mn = ax
                    imin = i
            xval[8 * k + imin] = -xval[8 * k + imin]
            s ^= 1 << imin
        signs[k] = s & 127


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def iq2_levels(L, o, xval, waux, id_, scale, codes, kmap, nb_off, nb_idx):
    """Levels nearest_int(0.5·(id·x - 1)) clamped to 0..2 for the 8-group at o; off the grid,
    the best neighbour at `scale`. Returns the grid index (-1: no neighbour)."""
    for i in range(8):
        li = nearest_int(F(0.5) * fma32(id_, xval[o + i], F(-1.0)))
        L[o + i] = max(0, min(2, li))
    u = level_key(L, o)
    gi = kmap[u]
    if gi < 0:
        gi = best_neighbour(L, o, codes, nb_off, nb_idx, u, xval, waux, scale, F(1.0), F(0.0))
    return gi


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def level_sums(L, w, xval, n):
    """sum w·x·q and sum w·q·q for q = 2L+1 (both running sums fused)."""
    sqx = F(0.0)
    sq2 = F(0.0)
    for i in range(n):
        q = F(2 * L[i] + 1)
        sqx = fma32(w[i] * xval[i], q, sqx)
        sq2 = fma32(w[i] * q, q, sq2)
    return sqx, sq2


# ---------------------------------------------------------------- the wrapper
_STATUS = {OFF_GRID: "a block's levels fall off the grid (llama-quantize aborts here: "
                      "'Oops: found point not on grid'; an importance that is zero over a whole "
                      "block does this)",
           NO_NEIGHBOUR: "no grid neighbour has a finite error (llama-quantize aborts here)",
           ZERO_BLOCK: "the importance is zero over a whole block (llama-quantize aborts here: "
                       "GGML_ASSERT(besti1 >= 0 && besti2 >= 0 && ...))"}


def imatrix_quantizer(name: str, kernel, kind: str, *extra):
    """QUANT[name] around kernel(out, x, w, codes, kmap, nb_off, nb_idx, *extra, status): w is
    the imatrix (MODE_IMATRIX) or 1 (MODE_UNIFORM); MODE_DEFAULT is refused as llama-quantize
    refuses it; a non-zero row status is the QuantError of its first row."""
    def rows(out, x, qw, mode):
        if mode == MODE_DEFAULT:
            raise QuantError(f"{name} requires an importance matrix (llama-quantize refuses "
                             f"{name} without one: 'Missing importance matrix for tensor ... in "
                             "a very low-bit quantization'); pass an imatrix or use uniform "
                             "weights")
        w = np.ones(x.shape[1], np.float32) if mode == MODE_UNIFORM else qw
        status = np.zeros(x.shape[0], np.int64)
        kernel(out, x, w, *neighbour_tables(kind), *(f() for f in extra), status)
        bad = np.flatnonzero(status)
        if bad.size:
            r = int(bad[0])
            raise QuantError(f"{name}: row {r}: {_STATUS[int(status[r])]}")

    return quantizer(name, rows)
