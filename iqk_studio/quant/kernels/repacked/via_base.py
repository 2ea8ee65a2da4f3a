"""Repacked types that are their base type's rows interleaved: quantize with the base quantizer
(after QHelper's imatrix sanitation where ik's repack_* does it), then interleave; dequantize by
undoing the interleaving and calling the base dequantizer."""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.gguf.types import BY_NAME
from iqk_studio.quant import registry
from iqk_studio.quant.kernels.repacked.layout import VIA_BASE, from_base, to_base
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

# repack_* callers that run the imatrix through QHelper first (iqk_quantize.cpp:46-110), with
# its block size; the others pass the imatrix straight to the base quantizer
QHELPER_BLOCK = {"q4_0_r8": 32, "iq4_nl_r4": 32, "q6_0_r4": 32, "iq4_xs_r8": 32, "q4_k_r4": 32,
                 "q5_k_r4": 32, "q6_k_r4": 16, "q3_k_r4": 16, "q2_k_r4": 16, "iq2_xxs_r4": 32,
                 "iq2_xs_r4": 16, "iq2_s_r4": 16, "iq3_xxs_r4": 32, "iq3_s_r4": 16}


# quantized as base + repack (q4_0_4x4/4x8/8x8 and mxfp4_r8 have their own simpler quantizers)
QUANT_VIA_BASE = tuple(n for n in VIA_BASE if n not in ("q4_0_4x4", "q4_0_4x8", "q4_0_8x8",
                                                        "mxfp4_r8"))


@njit(nogil=True, cache=True)
def _qhelper_weights(w, x, qw, bs):
    # w (rows, n) = qw, except bs-blocks whose Σqw², Σx² or Σqw·|x| (float32, in order) is
    # <= bs·1e-18: those get 1e-9 (QHelper::row_weights)
    lim = np.float32(bs) * (np.float32(1e-9) * np.float32(1e-9))
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // bs):
            sw2 = sx2 = swx = np.float32(0)
            for j in range(b * bs, (b + 1) * bs):
                w[r, j] = qw[j]
                sw2 += qw[j] * qw[j]
                sx2 += x[r, j] * x[r, j]
                swx += qw[j] * abs(x[r, j])
            if not (sw2 > lim and sx2 > lim and swx > lim):
                for j in range(b * bs, (b + 1) * bs):
                    w[r, j] = np.float32(1e-9)


def _via_base_quant(name: str):
    base = BY_NAME[name].base
    bs = QHELPER_BLOCK.get(name)

    def rows(out, x, qw, mode):
        fn = registry.quantizers()[base]
        if qw.size == 0 or bs is None:
            q = fn(x, qw if qw.size else None, mode)
        else:  # QHelper: rows with a degenerate block are quantized with their own weights
            w = np.empty_like(x)
            _qhelper_weights(w, x, qw, bs)
            bad = (w != qw).any(axis=1)
            if not bad.any():
                q = fn(x, qw, mode)
            else:
                q = np.empty((x.shape[0], BY_NAME[base].row_bytes(x.shape[1])), np.uint8)
                if not bad.all():
                    q[~bad] = fn(np.ascontiguousarray(x[~bad]), qw, mode)
                for r in np.flatnonzero(bad):
                    q[r] = fn(x[r:r + 1], w[r], mode)[0]
        out[:] = from_base(q, name, x.shape[1])

    return quantizer(name, rows)


def _via_base_dequant(name: str):
    base = BY_NAME[name].base

    def rows(out, raw):
        n = out.shape[1]
        out[:] = registry.dequantizers()[base](to_base(raw, name, n), n)

    return dequantizer(name, rows)


QUANT = {name: _via_base_quant(name) for name in QUANT_VIA_BASE
         if registry.quantizes(BY_NAME[name].base)}
DEQUANT = {name: _via_base_dequant(name) for name in VIA_BASE}
