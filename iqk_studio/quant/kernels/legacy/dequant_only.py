"""Types we only dequantize: q1_0_g128, q8_KV, and the BitNet types iq1_bn / iq2_bn (row-addressable),
plus i2_s, whose scale sits after the whole tensor (dequant_i2_s_tensor, not in DEQUANT)."""

from __future__ import annotations

import numpy as np
from numba import njit

from iqk_studio.quant.kernels.floats import f16_to_f32
from iqk_studio.quant.kernels.wrap import dequantizer

# ---------------------------------------------------------------- Q1_0_G128 (block 128, 18 B)
# d:f16 | qs:u8[16]  element j = bit j%8 of qs[j/8]: set -> +d, clear -> -d


def dequant_q1_0_g128(raw: np.ndarray, n: int) -> np.ndarray:
    blocks = raw.reshape(raw.shape[0], n // 128, 18)
    d = f16_to_f32(blocks[..., 0:2].copy())  # (rows, n/128, 1)
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
    d = f16_to_f32(raw[:, 0:2].copy())[:, 0]
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


# ---------------------------------------------------------------- I2_S (whole tensor)
# Not row-addressable (not in DEQUANT): 2-bit values of the whole tensor, then one f32 scale at
# byte n_elements/4 (ggml_nbytes = n/4 + 32). 128-value block b: 32 bytes; value 32g + j is
# (byte j >> (6 − 2g)) & 3; y = d·(q − 1) (iqk_quantize.cpp dequantize_row_ms_i2s).


def dequant_i2_s_tensor(raw: np.ndarray, n_elements: int) -> np.ndarray:
    """float32 (n_elements,) of an I2_S tensor's bytes."""
    raw = np.asarray(raw, np.uint8).reshape(-1)
    if n_elements % 128 or raw.size < n_elements // 4 + 4:
        raise ValueError(f"i2_s: {raw.size} bytes cannot hold {n_elements} values (n % 128 == 0, "
                         f"n/4 + 32 bytes)")
    d = raw[n_elements // 4:n_elements // 4 + 4].copy().view(np.float32)[0]
    q = raw[:n_elements // 4].reshape(-1, 1, 32) >> np.array([6, 4, 2, 0], np.uint8)[:, None]
    return d * ((q & 3).astype(np.float32) - np.float32(1)).reshape(-1)


def _into(fn):
    def rows(out, raw):
        out[:] = fn(raw, out.shape[1])
    return rows


DEQUANT = {"q1_0_g128": dequantizer("q1_0_g128", _into(dequant_q1_0_g128)),
           "iq1_bn": dequantizer("iq1_bn", _into(dequant_iq1_bn)),
           "iq2_bn": dequantizer("iq2_bn", _into(dequant_iq2_bn)),
           "q8_KV": dequantizer("q8_KV", _into(dequant_q8_kv))}
