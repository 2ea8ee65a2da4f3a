"""The weights ik_llama.cpp multiplies at large batches: its 8-bit repacking of each weight type
(iqk_convert_* in iqk_gemm_*.cpp; the math per kind is in ik_paths.py), dequantized to float32.

Vectorized numpy, float32 throughout (each numpy float32 op rounds as the C code's scalar or SIMD
op does); computed once per tensor, in row blocks to bound temporary memory.
"""

from __future__ import annotations

import numpy as np

from iqk_studio.engine.ik_paths import Path
from iqk_studio.quant.api import dequantize
from iqk_studio.quant.types import by_name

_ROWS = 2048  # rows converted at a time
F = np.float32


def f16(a: np.ndarray) -> np.ndarray:
    """float32 -> nearest float16 (ties to even, as F16C's cvtps_ph) -> float32."""
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def _half(b: np.ndarray) -> np.ndarray:
    """Little-endian f16 from (..., 2) uint8 -> float32 (...)."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def repacked(type_name: str, p: Path, raw: np.ndarray, n: int) -> np.ndarray:
    """float32 (rows, n): the values ik's repacked weights hold, from the (rows, row_bytes) bytes."""
    raw = np.asarray(raw, dtype=np.uint8)
    out = np.empty((raw.shape[0], n), np.float32)
    for r0 in range(0, raw.shape[0], _ROWS):
        blk = raw[r0:r0 + _ROWS]
        if p.repack in ("same", "native"):
            out[r0:r0 + _ROWS] = dequantize(blk, type_name, n)
        elif p.repack == "q8_1":
            out[r0:r0 + _ROWS] = _q8_1(blk, type_name == "q5_K", n)
        elif p.repack == "q2_K":
            out[r0:r0 + _ROWS] = _q2_k(blk, n)
        elif p.repack == "q6_K":
            out[r0:r0 + _ROWS] = _q6_k(blk, dequantize(blk, type_name, n))
        elif p.repack == "q8_k" and type_name == "iq6_k":
            v, d = _iq6k_levels(blk, n)
            out[r0:r0 + _ROWS] = _q8_k_levels(v, d, p.d0)
        elif p.repack == "q8_k":
            d = _superblock_d(type_name, p, blk, n)
            out[r0:r0 + _ROWS] = _q8_k(dequantize(blk, type_name, n), d, p.d0)
        else:
            raise ValueError(f"unknown repack kind {p.repack!r}")
    return out


def kernel_values(type_name: str, raw: np.ndarray, n: int) -> np.ndarray:
    """float32 (rows, n): the weights as ik's matmul kernels see them without repacking; equal to
    the dequantized values except for iq6_k, whose kernels use the int8 table iq6nl_values where
    dequantize_row_iq6_k evaluates a cubic."""
    raw = np.asarray(raw, dtype=np.uint8)
    if type_name != "iq6_k":
        return dequantize(raw, type_name, n)
    out = np.empty((raw.shape[0], n), np.float32)
    for r0 in range(0, raw.shape[0], _ROWS):
        v, d = _iq6k_levels(raw[r0:r0 + _ROWS], n)
        out[r0:r0 + _ROWS] = (d[..., None] * v).reshape(-1, n)
    return out


def _iq6k_levels(raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    # iq6_k: d:f16 | extra:u16 | scales:i8[16] | qs:u8[128] | qh:u8[64]
    # element 64c + 16k + j: q from qs/qh, level iq6nl_values[q + 64*extra_bit] * scales[4c + k]
    from iqk_studio.quant.grids import iq6nl_values

    b = _blocks(raw, "iq6_k", n)
    d = _half(b[..., 0:2])
    extra = (b[..., 2].astype(np.int32) | (b[..., 3].astype(np.int32) << 8))
    sc = b[..., 4:20].view(np.int8).astype(np.int32)  # (R, nb, 16)
    qs = b[..., 20:148].reshape(b.shape[:-1] + (4, 2, 16)).astype(np.int32)  # (c, half, j)
    qh = b[..., 148:212].reshape(b.shape[:-1] + (2, 2, 16)).astype(np.int32)  # (c//2, half, j)
    shift = (4 * (np.arange(4) % 2))[:, None, None]
    qhc = qh[..., np.arange(4) // 2, :, :] >> shift  # (R, nb, c, half, j)
    lo = (qs & 0xF) | ((qhc & 3) << 4)  # k = half (0, 1)
    hi = (qs >> 4) | ((qhc & 0xC) << 2)  # k = 2 + half
    q = np.concatenate([lo, hi], axis=-2)  # (R, nb, c, k, j)
    bit = (extra[..., None, None] >> (4 * np.arange(4)[:, None] + np.arange(4)[None, :])) & 1
    lv = np.asarray(iq6nl_values, np.int32)[q + 64 * bit[..., None]]
    v = lv * sc.reshape(sc.shape[:-1] + (4, 4))[..., None]
    return v.reshape(raw.shape[0], -1, 256).astype(F), d


def _blocks(raw: np.ndarray, type_name: str, n: int) -> np.ndarray:
    """(rows, n_blocks, type_size) uint8 view of the blocks after the row meta."""
    t = by_name(type_name)
    return raw[:, t.row_meta:].reshape(raw.shape[0], n // t.block, t.type_size)


def _q8_1(raw: np.ndarray, five: bool, n: int) -> np.ndarray:
    # q4_K: d:f16 | dmin:f16 | scales:u8[12] | qs:u8[128];  q5_K: ... | qh:u8[32] | qs:u8[128]
    b = _blocks(raw, "q5_K" if five else "q4_K", n)
    d, dmin = _half(b[..., 0:2]), _half(b[..., 2:4])
    s = b[..., 4:16].astype(np.int32)  # (R, nb, 12)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | ((s[..., 0:4] >> 6) << 4)], -1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], -1)
    qs = b[..., 48:176] if five else b[..., 16:144]
    q = np.empty(qs.shape[:-1] + (8, 32), np.int32)  # sub-block 2c: low nibbles, 2c+1: high
    q[..., 0::2, :] = (qs & 0xF).reshape(qs.shape[:-1] + (4, 32))
    q[..., 1::2, :] = (qs >> 4).reshape(qs.shape[:-1] + (4, 32))
    if five:
        qh = b[..., 16:48].astype(np.int32)[..., None, :]  # (R, nb, 1, 32)
        q += ((qh >> np.arange(8)[:, None]) & 1) << 4
    scale = f16(d[..., None] * sc.astype(F))  # (R, nb, 8)
    mins = f16(-dmin[..., None] * mn.astype(F))
    w = scale[..., None] * q.astype(F) + mins[..., None]
    return w.reshape(raw.shape[0], n)


def _q2_k(raw: np.ndarray, n: int) -> np.ndarray:
    # q2_K: scales:u8[16] (sc | m << 4) | qs:u8[64] | d:f16 | dmin:f16
    b = _blocks(raw, "q2_K", n)
    sc = (b[..., 0:16] & 0xF).astype(F)
    mn = (b[..., 0:16] >> 4).astype(F)
    d, dmin = _half(b[..., 80:82]), _half(b[..., 82:84])
    qs = b[..., 16:80].reshape(b.shape[:-1] + (2, 1, 32)).astype(np.int32)
    q = ((qs >> (2 * np.arange(4))[:, None]) & 3).reshape(b.shape[:-1] + (16, 16))
    # v = fma(q·sc, d, -dmin·m): q·sc·d is exact in float32, so the FMA is one rounding of the sum
    v = (q * sc[..., None]).astype(F) * d[..., None, None] + (-dmin[..., None] * mn)[..., None]
    v = v.reshape(b.shape[:-1] + (256,))
    dn = np.abs(v).max(-1) / F(127)
    with np.errstate(divide="ignore"):
        inv = np.where(dn != 0, F(1) / dn, F(0)).astype(F)
    q8 = np.clip(np.rint(v * inv[..., None]), -128, 127)
    return (f16(dn)[..., None] * q8).reshape(raw.shape[0], n)


def _q6_k(raw: np.ndarray, deq: np.ndarray) -> np.ndarray:
    # q6_K: ql:u8[128] | qh:u8[64] | scales:i8[16] | d:f16; per 32: two 16-blocks -> one int8 scale
    rows, n = deq.shape
    d = _half(_blocks(raw, "q6_K", n)[..., 208:210])  # (R, nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.rint(deq.reshape(rows, -1, 256) / d[..., None])
    v = np.where(d[..., None] != 0, v, 0).reshape(rows, -1, 8, 32)
    mx = np.abs(v).max(-1).astype(F) / F(127)  # (R, nb, 8)
    s = f16(d[..., None] * mx)
    with np.errstate(divide="ignore"):
        inv = np.where(mx > F(1e-9), F(1) / mx, F(0)).astype(F)
    q8 = np.clip(np.rint(inv[..., None] * v.astype(F)), -128, 127)
    return (s[..., None] * q8).reshape(rows, n)


def _superblock_d(type_name: str, p: Path, raw: np.ndarray, n: int) -> np.ndarray:
    """D (rows, n/256) float32: the float factor of each 256-block's integer levels."""
    nb = n // 256
    if p.d_src == "row16":
        d = np.repeat(_half(raw[:, 0:2])[:, None], nb, axis=1)
    elif p.d_src == "row32":
        d = np.repeat(np.ascontiguousarray(raw[:, 0:4]).view(np.float32), nb, axis=1)
    elif p.d_src == "iq1_m":
        sc = _blocks(raw, type_name, n)[..., 48:56].astype(np.uint16)
        sc = sc[..., 0::2] | (sc[..., 1::2] << 8)  # u16[4]
        bits = (sc[..., 0] >> 12) | ((sc[..., 1] >> 8) & 0xF0) | ((sc[..., 2] >> 4) & 0xF00) \
            | (sc[..., 3] & 0xF000)
        d = bits.astype(np.uint16).view(np.float16).astype(F)
    else:
        off = int(p.d_src.split("@")[1])
        d = _half(_blocks(raw, type_name, n)[..., off:off + 2])
    return (d * F(p.d_mul)).astype(F)


def _q8_k(deq: np.ndarray, d: np.ndarray, d0: float) -> np.ndarray:
    # per 256: V = deq / D (integers); dnew = max|V|·d0 (or /127); q8 = V or rint(V / dnew)
    rows, n = deq.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.rint(deq.reshape(rows, -1, 256) / d[..., None])
    v = np.where(d[..., None] != 0, v, 0).astype(F)
    return _q8_k_levels(v, d, d0)


def _q8_k_levels(v: np.ndarray, d: np.ndarray, d0: float) -> np.ndarray:
    """v: integer levels (rows, nb, 256) float32; d: their factor (rows, nb)."""
    rows = v.shape[0]
    mx = np.abs(v).max(-1)
    dnew = mx * F(d0) if d0 else mx / F(127)
    scaled = dnew >= F(1)
    dnew = np.where(scaled, dnew, F(1)).astype(F)
    inv = np.where(np.abs(dnew) > F(1e-9), F(1) / dnew, F(0)).astype(F)
    q8 = np.where(scaled[..., None], np.rint(inv[..., None] * v), v)
    q8 = np.clip(q8, -128, 127)
    return (f16(d * dnew)[..., None] * q8).reshape(rows, -1)
