"""Dequantizers for the mainline grid types (IQ1_S ... IQ3_S, via gguf-py's numpy code, which is
identical to ggml's) and the small odd types: Q1_0_G128, IQ1_BN, IQ2_BN, Q8_KV (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

# gguf-py's class for each grid type: its numpy dequantizer decodes (rows, row_bytes) uint8.
# Measured 50-125 M values/s on this machine (IQ2_XXS slowest), enough for evaluation.
_GGUF_NAMES = {
    "iq1_s": "IQ1_S", "iq1_m": "IQ1_M", "iq2_xxs": "IQ2_XXS", "iq2_xs": "IQ2_XS",
    "iq2_s": "IQ2_S", "iq3_xxs": "IQ3_XXS", "iq3_s": "IQ3_S",
}


def _gguf_dequant(gguf_name: str):
    def dequant(raw: np.ndarray, n: int) -> np.ndarray:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf fp16 scales stay NaN/Inf
            y = dequantize(np.ascontiguousarray(raw), GGMLQuantizationType[gguf_name])
        return np.ascontiguousarray(y.reshape(raw.shape[0], n), dtype=np.float32)

    dequant.__name__ = f"dequant_{gguf_name.lower()}"
    return dequant


def _f16(raw: np.ndarray, off: int) -> np.ndarray:
    """(rows, nblocks) fp16 -> float32 from bytes [off, off+2) of each block view."""
    return raw[..., off:off + 2].copy().view(np.float16)[..., 0].astype(np.float32)


# ---------------------------------------------------------------- Q1_0_G128 (block 128, 18 B)
# d:f16 | qs:u8[16]  element j = bit j%8 of qs[j/8]: set -> +d, clear -> -d

def dequant_q1_0_g128(raw: np.ndarray, n: int) -> np.ndarray:
    blocks = raw.reshape(raw.shape[0], n // 128, 18)
    d = _f16(blocks, 0)[..., None]
    bits = np.unpackbits(blocks[..., 2:], axis=-1, bitorder="little").astype(bool)
    return np.where(bits, d, -d).reshape(raw.shape[0], n)


# ---------------------------------------------------------------- IQ1_BN (block 64, 13 B)
# row: d:f16 | blocks { ql:u8[12] | extra:u8 }. 16-value group g: ql[3g+k] holds 5 ternary
# digits (values 5k..5k+4 of the group, digit j = (3·(u8)(ql·{81,27,9,3,1}[j])) >> 8), the 16th
# value comes from extra with multiplier {81,27,9,3}[g]; y = d·(digit − 1).

_K_MULT = np.array([81, 27, 9, 3, 1], dtype=np.uint8)


@njit(nogil=True, cache=True)
def _iq1_bn_kernel(y, raw, d, kmult):
    # y (rows, n) f32; raw (rows, 2 + 13·n/64) u8; d (rows,) f32
    rows, n = y.shape
    for r in range(rows):
        for ib in range(n // 64):
            b = 2 + 13 * ib
            extra = raw[r, b + 12]
            for g in range(4):
                o = 64 * ib + 16 * g
                for k in range(3):
                    q = raw[r, b + 3 * g + k]
                    for j in range(5):
                        v = np.int32(np.uint8(np.int32(q) * np.int32(kmult[j])))
                        y[r, o + 5 * k + j] = d[r] * np.float32(((v + (v >> 1)) >> 7) - 1)
                v = np.int32(np.uint8(np.int32(extra) * np.int32(kmult[g])))
                y[r, o + 15] = d[r] * np.float32(((v + (v >> 1)) >> 7) - 1)


def dequant_iq1_bn(raw: np.ndarray, n: int) -> np.ndarray:
    y = np.empty((raw.shape[0], n), dtype=np.float32)
    d = raw[:, 0:2].copy().view(np.float16)[:, 0].astype(np.float32)
    _iq1_bn_kernel(y, raw, d, _K_MULT)
    return y


# ---------------------------------------------------------------- IQ2_BN (block 64, 16 B)
# row: d:f32 | blocks { qs:u8[16] }  value j + 16i = (qs[j] >> 2i) & 3; y = d·q − d

def dequant_iq2_bn(raw: np.ndarray, n: int) -> np.ndarray:
    rows = raw.shape[0]
    d = raw[:, 0:4].copy().view(np.float32)  # (rows, 1)
    qs = raw[:, 4:].reshape(rows, n // 64, 1, 16)
    q = (qs >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3
    return (d[:, :, None, None] * q.astype(np.float32) - d[:, :, None, None]).reshape(rows, n)


# ---------------------------------------------------------------- Q8_KV (block 32, 32 B)
# row: d:f32 | sum:i32 (of the quants, unused here) | qs:i8[n]  y = d·q

def dequant_q8_kv(raw: np.ndarray, n: int) -> np.ndarray:
    d = raw[:, 0:4].copy().view(np.float32)
    return d * raw[:, 8:8 + n].view(np.int8).astype(np.float32)


DEQUANT = {name: _gguf_dequant(g) for name, g in _GGUF_NAMES.items()}
DEQUANT.update({
    "q1_0_g128": dequant_q1_0_g128,
    "iq1_bn": dequant_iq1_bn,
    "iq2_bn": dequant_iq2_bn,
    "q8_KV": dequant_q8_kv,
})
