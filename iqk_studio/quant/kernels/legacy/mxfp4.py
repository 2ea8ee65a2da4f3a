"""mxfp4 (32-element blocks, an E8M0 scale and 4-bit E2M1 values): port of iqk_quantize.cpp
(ik_llama.cpp 8337e4cd3) and its dequantizer; the reference ignores the imatrix."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio.quant.common import F
from iqk_studio.quant.kernels.wrap import dequantizer, quantizer

KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)


# ---- MXFP4  e:u8 (E8M0) | qs:u8[16]   (imatrix ignored by the reference)
@njit(nogil=True, cache=True, error_model="numpy")
def e8m0_half(e):
    """GGML_E8M0_TO_FP32_HALF: 2^(e-128) as float32 (e = 0, 1 are subnormal cases)."""
    if e >= 2:
        return np.uint32((e - 1) << 23).view(np.float32)
    return np.uint32(0x00200000 if e == 0 else 0x00400000).view(np.float32)


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def mxfp4_rows(out, x, qw, mode):
    for r in prange(x.shape[0]):
        for ib in range(x.shape[1] // 32):
            xb = x[r, 32 * ib:32 * ib + 32]
            yb = out[r, 17 * ib:17 * ib + 17]
            yb[:] = 0
            amax = F(0.0)
            for j in range(32):
                amax = max(amax, abs(xb[j]))
            if amax == 0:
                continue
            e = np.int64(np.floor(np.log2(amax)) - F(2.0) + F(127.0)) & 0xFF
            d = e8m0_half(e)
            yb[0] = e
            for j in range(32):
                best = abs(xb[j] - d * KVALUES_MXFP4[0])
                idx = 0
                for k in range(1, 16):
                    diff = abs(xb[j] - d * KVALUES_MXFP4[k])
                    if diff < best:
                        best = diff
                        idx = k
                if j < 16:
                    yb[1 + j] = idx
                else:
                    yb[1 + j - 16] |= idx << 4


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def _mxfp4_dequant(out, raw):
    for r in prange(raw.shape[0]):
        for ib in range(out.shape[1] // 32):
            b = raw[r, 17 * ib:17 * ib + 17]
            d = e8m0_half(np.int64(b[0]))
            for j in range(16):
                out[r, 32 * ib + j] = d * KVALUES_MXFP4[b[1 + j] & 0xF]
                out[r, 32 * ib + 16 + j] = d * KVALUES_MXFP4[b[1 + j] >> 4]


QUANT = {"mxfp4": quantizer("mxfp4", mxfp4_rows)}
DEQUANT = {"mxfp4": dequantizer("mxfp4", _mxfp4_dequant)}
