"""Dequantizers for the mainline grid types IQ1_S ... IQ3_S (numba, ggml-quants.c dequantize_row_*;
grid tables taken from gguf-py) and the small odd types Q1_0_G128, IQ1_BN, IQ2_BN, Q8_KV."""

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
def _tables() -> dict[str, np.ndarray]:
    from gguf.quants import IQ2_XXS

    return {"iq2xxs": _table("IQ2_XXS", np.uint8), "iq2xs": _table("IQ2_XS", np.uint8),
            "iq2s": _table("IQ2_S", np.uint8), "iq3xxs": _table("IQ3_XXS", np.uint8),
            "iq3s": _table("IQ3_S", np.uint8), "iq1s": _table("IQ1_S", np.int8),
            "ksigns": np.frombuffer(IQ2_XXS.ksigns, np.uint8).copy()}


def _d_f16(raw: np.ndarray, nbytes: int, off: int) -> np.ndarray:
    """(rows, n_blocks) float32 of the fp16 at `off` in each `nbytes` block."""
    b = raw.reshape(raw.shape[0], -1, nbytes)[:, :, off:off + 2]
    return b.copy().view(np.float16)[..., 0].astype(np.float32)


@njit(nogil=True, cache=True, inline="always")
def _sign(byte, j):
    return np.float32(-1.0) if (byte >> j) & 1 else np.float32(1.0)


# ---------------------------------------------------------------- IQ2_XXS (256, 66 B)
# d:f16 | qs:u16[32]; 32-block ib = u32 of 4 grid bytes | u32 (4 × 7-bit ksigns index, scale
# bits 28-31); y = d·(0.5 + scale)·0.25 · grid · sign

@njit(nogil=True, cache=True)
def _iq2_xxs_kernel(y, raw, d, grid, ksigns):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 66 * ibl + 2
            for ib in range(8):
                p = o + 8 * ib
                aux = np.uint32(raw[r, p + 4]) | (np.uint32(raw[r, p + 5]) << 8) | (
                    np.uint32(raw[r, p + 6]) << 16) | (np.uint32(raw[r, p + 7]) << 24)
                db = d[r, ibl] * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.25)
                for li in range(4):
                    g = grid[raw[r, p + li]]
                    sg = ksigns[(aux >> (7 * li)) & 127]
                    o2 = 256 * ibl + 32 * ib + 8 * li
                    for j in range(8):
                        y[r, o2 + j] = db * np.float32(g[j]) * _sign(sg, j)


# ---------------------------------------------------------------- IQ2_XS (256, 74 B) / IQ2_S (82 B)
# IQ2_XS: d | qs:u16[32] (9-bit grid index | 7-bit ksigns index) | scales:u8[8]
# IQ2_S:  d | qs:u8[32] | signs:u8[32] | qh:u8[8] (2 high index bits per group) | scales:u8[8]
# y = d·(0.5 + nibble)·0.25 · grid · sign, nibble l//2 of scales[ib] for group l

@njit(nogil=True, cache=True)
def _iq2_xs_s_kernel(y, raw, d, grid, ksigns, is_s):
    rows, n = y.shape
    bs = 82 if is_s else 74
    for r in range(rows):
        for ibl in range(n // 256):
            o = bs * ibl
            for ib in range(8):
                sc = raw[r, o + bs - 8 + ib]
                for li in range(4):
                    nib = (sc & 15) if li < 2 else (sc >> 4)
                    dl = d[r, ibl] * (np.float32(0.5) + np.float32(nib)) * np.float32(0.25)
                    if is_s:
                        idx = np.int32(raw[r, o + 2 + 4 * ib + li]) | (
                            (np.int32(raw[r, o + 66 + ib]) << (8 - 2 * li)) & 0x300)
                        sg = raw[r, o + 34 + 4 * ib + li]
                    else:
                        q = np.int32(raw[r, o + 2 + 8 * ib + 2 * li]) | (
                            np.int32(raw[r, o + 3 + 8 * ib + 2 * li]) << 8)
                        idx = q & 511
                        sg = ksigns[q >> 9]
                    g = grid[idx]
                    o2 = 256 * ibl + 32 * ib + 8 * li
                    for j in range(8):
                        y[r, o2 + j] = dl * np.float32(g[j]) * _sign(sg, j)


# ---------------------------------------------------------------- IQ3_XXS (256, 98 B)
# d | qs:u8[64] (grid index per 4 values) | u32[8] (4 × 7-bit ksigns index, scale bits 28-31)
# y = d·(0.5 + scale)·0.5 · grid · sign

@njit(nogil=True, cache=True)
def _iq3_xxs_kernel(y, raw, d, grid, ksigns):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 98 * ibl + 2
            for ib in range(8):
                p = o + 64 + 4 * ib
                aux = np.uint32(raw[r, p]) | (np.uint32(raw[r, p + 1]) << 8) | (
                    np.uint32(raw[r, p + 2]) << 16) | (np.uint32(raw[r, p + 3]) << 24)
                db = d[r, ibl] * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.5)
                for li in range(4):
                    sg = ksigns[(aux >> (7 * li)) & 127]
                    for h in range(2):
                        g = grid[raw[r, o + 8 * ib + 2 * li + h]]
                        for j in range(4):
                            y[r, 256 * ibl + 32 * ib + 8 * li + 4 * h + j] = (
                                db * np.float32(g[j]) * _sign(sg, 4 * h + j))


# ---------------------------------------------------------------- IQ3_S (256, 110 B)
# d | qs:u8[64] | qh:u8[8] (9th index bit) | signs:u8[32] | scales:u8[4] (nibble per 32 values)
# y = d·(1 + 2·nibble) · grid · sign

@njit(nogil=True, cache=True)
def _iq3_s_kernel(y, raw, d, grid):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 110 * ibl
            for ib in range(8):
                sc = raw[r, o + 106 + ib // 2]
                nib = (sc & 15) if ib % 2 == 0 else (sc >> 4)
                db = d[r, ibl] * np.float32(1 + 2 * np.int32(nib))
                qh = np.int32(raw[r, o + 66 + ib])
                for li in range(4):
                    sg = raw[r, o + 74 + 4 * ib + li]
                    for h in range(2):
                        idx = np.int32(raw[r, o + 2 + 8 * ib + 2 * li + h]) | (
                            (qh << (8 - 2 * li - h)) & 256)
                        g = grid[idx]
                        for j in range(4):
                            y[r, 256 * ibl + 32 * ib + 8 * li + 4 * h + j] = (
                                db * np.float32(g[j]) * _sign(sg, 4 * h + j))


# ---------------------------------------------------------------- IQ1_S (256, 50 B) / IQ1_M (56 B)
# IQ1_S: d | qs:u8[32] | qh:u16[8] (3 high index bits per group, scale bits 12-14, delta sign 15)
#   y = d·(2·scale + 1) · (grid ± 0.125)
# IQ1_M: qs:u8[32] | qh:u8[16] (3 index bits + delta sign per group) | scales:u16[4] (3-bit
#   scales per 16 values; the fp16 d in their top nibbles)

@njit(nogil=True, cache=True)
def _iq1_s_kernel(y, raw, d, grid):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 50 * ibl
            for ib in range(8):
                qh = np.int32(raw[r, o + 34 + 2 * ib]) | (np.int32(raw[r, o + 35 + 2 * ib]) << 8)
                dl = d[r, ibl] * np.float32(2 * ((qh >> 12) & 7) + 1)
                delta = np.float32(-0.125) if qh & 0x8000 else np.float32(0.125)
                for li in range(4):
                    g = grid[np.int32(raw[r, o + 2 + 4 * ib + li]) | (((qh >> (3 * li)) & 7) << 8)]
                    for j in range(8):
                        y[r, 256 * ibl + 32 * ib + 8 * li + j] = dl * (np.float32(g[j]) + delta)


@njit(nogil=True, cache=True)
def _iq1_m_kernel(y, raw, d, grid):
    rows, n = y.shape
    for r in range(rows):
        for ibl in range(n // 256):
            o = 56 * ibl
            for ib in range(8):
                p = o + 48 + 2 * (ib // 2)
                sc = np.int32(raw[r, p]) | (np.int32(raw[r, p + 1]) << 8)
                for li in range(4):
                    s3 = (sc >> (6 * (ib % 2) + 3 * (li // 2))) & 7
                    dl = d[r, ibl] * np.float32(2 * s3 + 1)
                    qh = np.int32(raw[r, o + 32 + 2 * ib + li // 2]) >> (4 * (li % 2))
                    idx = np.int32(raw[r, o + 4 * ib + li]) | ((qh & 7) << 8)
                    delta = np.float32(-0.125) if qh & 8 else np.float32(0.125)
                    g = grid[idx]
                    for j in range(8):
                        y[r, 256 * ibl + 32 * ib + 8 * li + j] = dl * (np.float32(g[j]) + delta)


def _iq1_m_d(raw: np.ndarray) -> np.ndarray:
    sc = raw.reshape(raw.shape[0], -1, 56)[:, :, 48:56].copy().view("<u2").astype(np.uint16)
    u = (sc[..., 0] >> 12) | ((sc[..., 1] >> 8) & 0x00F0) | ((sc[..., 2] >> 4) & 0x0F00) | (
        sc[..., 3] & 0xF000)
    return u.astype(np.uint16).view(np.float16).astype(np.float32)


def _grid_dequant(name: str):
    def dequant(raw: np.ndarray, n: int) -> np.ndarray:
        tb = _tables()
        y = np.empty((raw.shape[0], n), dtype=np.float32)
        if name == "iq2_xxs":
            _iq2_xxs_kernel(y, raw, _d_f16(raw, 66, 0), tb["iq2xxs"], tb["ksigns"])
        elif name in ("iq2_xs", "iq2_s"):
            is_s = name == "iq2_s"
            _iq2_xs_s_kernel(y, raw, _d_f16(raw, 82 if is_s else 74, 0),
                             tb["iq2s" if is_s else "iq2xs"], tb["ksigns"], is_s)
        elif name == "iq3_xxs":
            _iq3_xxs_kernel(y, raw, _d_f16(raw, 98, 0), tb["iq3xxs"], tb["ksigns"])
        elif name == "iq3_s":
            _iq3_s_kernel(y, raw, _d_f16(raw, 110, 0), tb["iq3s"])
        elif name == "iq1_s":
            _iq1_s_kernel(y, raw, _d_f16(raw, 50, 0), tb["iq1s"])
        else:
            _iq1_m_kernel(y, raw, _iq1_m_d(raw), tb["iq1s"])
        return y

    dequant.__name__ = f"dequant_{name}"
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


GRID_TYPES = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s")
DEQUANT = {name: _grid_dequant(name) for name in GRID_TYPES}
DEQUANT.update({
    "q1_0_g128": dequant_q1_0_g128,
    "iq1_bn": dequant_iq1_bn,
    "iq2_bn": dequant_iq2_bn,
    "q8_KV": dequant_q8_kv,
})
