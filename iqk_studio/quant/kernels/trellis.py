"""Dequantizers for the trellis types IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT (ik_llama.cpp
iqk_quantize.cpp dequantize_row_iq*_kt): integer trellis codes expanded by a multiplicative hash.

Expansion of a code c into a group of values: x = c + offset (offset 4096, or 4096 + 32768 for
IQ4_KT blocks with the shift bit); per value x = 0xCBAC1FED·x mod 2^32, s = x & 0x3f3f3f3f,
value = (sum of the 4 bytes of s) − 126 (absolute value for IQ3_KT); y = scale·value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# iq4k_values (quant-formats.md §5): the IQ2_KT / IQ1_KT block-scale table
IQ4K_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                        1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


@njit(nogil=True, cache=True, inline="always")
def _code_values(y, r, o, code, offset, group, scale, is_abs):
    # y[r, o:o+group] = scale·trellis(code)
    x = np.uint32(code + offset)
    for k in range(group):
        x = np.uint32(np.uint64(x) * np.uint64(0xCBAC1FED) & np.uint64(0xFFFFFFFF))
        s = x & np.uint32(0x3F3F3F3F)
        v = np.int32((s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + (s >> 24)) - 126
        y[r, o + k] = scale * np.float32(abs(v) if is_abs else v)


@njit(nogil=True, cache=True)
def _iq1_kt_kernel(y, raw, kv):
    # row: d:f32 | blocks { sh:u8[8] | ql:u8[32] | qh:u8[16] } (56 B)
    # 32-block ib: scale kv[sh[ib] & 15]; group ig of 8: 13-bit code = ql[4ib+ig]
    #   | bits 8-11 from qh[4(ib%4)+ig] (low nibble for ib<4, high for ib>=4) | bit 12 = sh bit 4+ig
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 56 * ibl
            for ib in range(8):
                sh = np.int32(raw[r, b + ib])
                sl = d * kv[sh & 15]
                for ig in range(4):
                    qh = np.int32(raw[r, b + 40 + 4 * (ib % 4) + ig])
                    code = np.int32(raw[r, b + 8 + 4 * ib + ig])
                    code |= (qh << (8 - 4 * (ib // 4))) & 0xF00
                    code |= (sh << (8 - ig)) & 0x1000
                    _code_values(y, r, 256 * ibl + 32 * ib + 8 * ig, code, 4096, 8, sl, False)


@njit(nogil=True, cache=True)
def _iq2_kt_kernel(y, raw, kv):
    # row: d:f32 | blocks { scales:u8[4] | ql:u16[32] } (68 B)
    # code j<16 -> values 8j.. (first half), code 16+j -> 128 + 8j..; 32-block ib<4 uses the low
    # nibble of scales[ib] for the first half and the high nibble for the second half
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 68 * ibl
            for ib in range(4):
                sc = np.int32(raw[r, b + ib])
                sl = d * kv[sc & 15]
                sh = d * kv[sc >> 4]
                for ig in range(4):
                    j = 4 * ib + ig
                    lo = np.int32(raw[r, b + 4 + 2 * j]) | (np.int32(raw[r, b + 5 + 2 * j]) << 8)
                    hi = np.int32(raw[r, b + 36 + 2 * j]) | (np.int32(raw[r, b + 37 + 2 * j]) << 8)
                    _code_values(y, r, 256 * ibl + 8 * j, lo, 4096, 8, sl, False)
                    _code_values(y, r, 256 * ibl + 128 + 8 * j, hi, 4096, 8, sh, False)


@njit(nogil=True, cache=True)
def _iq3_kt_kernel(y, raw):
    # row: d:f32 | blocks { scales:u8[4] | ql:u16[32] | qh:u8[32] } (100 B)
    # as IQ2_KT but |value|, scales are plain nibbles (d·s), and the sign of value 8·ig + j of
    # 32-block ib (first half) is qh[8ig + j] bit ib, of the second half bit ib + 4
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 100 * ibl
            o = 256 * ibl
            for ib in range(4):
                sc = np.int32(raw[r, b + ib])
                sl = d * np.float32(sc & 15)
                sh = d * np.float32(sc >> 4)
                for ig in range(4):
                    j = 4 * ib + ig
                    lo = np.int32(raw[r, b + 4 + 2 * j]) | (np.int32(raw[r, b + 5 + 2 * j]) << 8)
                    hi = np.int32(raw[r, b + 36 + 2 * j]) | (np.int32(raw[r, b + 37 + 2 * j]) << 8)
                    _code_values(y, r, o + 8 * j, lo, 4096, 8, sl, True)
                    _code_values(y, r, o + 128 + 8 * j, hi, 4096, 8, sh, True)
                    for k in range(8):  # sign flips as products with ±1 (exact, no branch)
                        qh = np.int32(raw[r, b + 68 + 8 * ig + k])
                        y[r, o + 8 * j + k] *= np.float32(1 - 2 * ((qh >> ib) & 1))
                        y[r, o + 128 + 8 * j + k] *= np.float32(1 - 2 * ((qh >> (ib + 4)) & 1))


@njit(nogil=True, cache=True)
def _iq4_kt_kernel(y, raw):
    # row: d:f32 | blocks { shb:u32[8] | ql:u8[64] | qh:u8[32] } (128 B)
    # 32-block ib: shb bit 0 = offset shift, bits 1-7 = scale + 64, bits 8+3ig.. = code bits 12-14
    # of group ig (4 values); code of group jj = 8ib + ig: ql[jj] | nibble of qh[jj % 32] << 8
    rows, n = y.shape
    for r in range(rows):
        d = raw[r, 0:4].copy().view(np.float32)[0]
        for ibl in range(n // 256):
            b = 4 + 128 * ibl
            for ib in range(8):
                p = b + 4 * ib
                shb = (np.uint32(raw[r, p]) | (np.uint32(raw[r, p + 1]) << 8)
                       | (np.uint32(raw[r, p + 2]) << 16) | (np.uint32(raw[r, p + 3]) << 24))
                offset = 4096 + 32768 if shb & 1 else 4096
                sl = d * np.float32(np.int32((shb & 0xFF) >> 1) - 64)
                for ig in range(8):
                    jj = 8 * ib + ig
                    qh = np.int32(raw[r, b + 96 + jj % 32])
                    code = (np.int32(raw[r, b + 32 + jj]) | ((qh << (8 - 4 * (jj // 32))) & 0xF00)
                            | (np.int32((shb >> (8 + 3 * ig)) & 7) << 12))
                    _code_values(y, r, 256 * ibl + 4 * jj, code, offset, 4, sl, False)


def dequant_iq1_kt(raw: np.ndarray, n: int) -> np.ndarray:
    y = np.empty((raw.shape[0], n), dtype=np.float32)
    _iq1_kt_kernel(y, raw, IQ4K_VALUES)
    return y


def dequant_iq2_kt(raw: np.ndarray, n: int) -> np.ndarray:
    y = np.empty((raw.shape[0], n), dtype=np.float32)
    _iq2_kt_kernel(y, raw, IQ4K_VALUES)
    return y


def dequant_iq3_kt(raw: np.ndarray, n: int) -> np.ndarray:
    y = np.empty((raw.shape[0], n), dtype=np.float32)
    _iq3_kt_kernel(y, raw)
    return y


def dequant_iq4_kt(raw: np.ndarray, n: int) -> np.ndarray:
    y = np.empty((raw.shape[0], n), dtype=np.float32)
    _iq4_kt_kernel(y, raw)
    return y


DEQUANT = {
    "iq1_kt": dequant_iq1_kt,
    "iq2_kt": dequant_iq2_kt,
    "iq3_kt": dequant_iq3_kt,
    "iq4_kt": dequant_iq4_kt,
}
