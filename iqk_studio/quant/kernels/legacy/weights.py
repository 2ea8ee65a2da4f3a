"""Weights and sums shared by the legacy and k-quant quantizers (ggml-quants.c)."""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant.common import F, fma32
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX


@njit(nogil=True, cache=True, error_model="numpy")
def sum_sq(x):
    s = F(0.0)
    for j in range(x.shape[0]):
        s = s + x[j] * x[j]
    return s


@njit(nogil=True, cache=True, error_model="numpy")
def row_sigma2(x):
    """Σx²/n over the whole row (Q4_0/Q5_0/Q6_0/Q4_1/Q5_1 imatrix weighting); not fused
    (the reference vectorizes it as an in-order reduction)."""
    s = sum_sq(x)
    return s / F(x.shape[0])


@njit(nogil=True, cache=True, error_model="numpy")
def block_weights(w, xb, qwb, mode, sigma2, default_kind):
    """w for one block: imatrix qw·sqrt(σ²+x²); uniform 1; default x² (kind 0) or 1 (kind 1)."""
    for j in range(xb.shape[0]):
        if mode == MODE_IMATRIX:
            w[j] = qwb[j] * np.sqrt(fma32(xb[j], xb[j], sigma2))
        elif mode == MODE_DEFAULT and default_kind == 0:
            w[j] = xb[j] * xb[j]
        else:
            w[j] = F(1.0)


@njit(nogil=True, cache=True, error_model="numpy")
def roundf(v):
    """C roundf: half away from zero."""
    a = abs(v)
    i = np.int64(a)
    if a - F(i) >= F(0.5):
        i += 1
    return -i if v < 0 else i
