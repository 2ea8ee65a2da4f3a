"""Repacked types with their own layout (no exact base row form), dequantized directly:
iq1_s_r4, iq1_m_r4, q8_k_r8, q8_k_r16, q8_KV_r8, bf16_r16."""

from __future__ import annotations

import numpy as np

from iqk_studio.gguf.types import BY_NAME
from iqk_studio.quant.kernels.floats import bf16_to_f32
from iqk_studio.quant.kernels.iqgrid.tables import grid_tables
from iqk_studio.quant.kernels.wrap import dequantizer

# ------------------------------------------------------------------ types dequantized directly


def _groups(raw: np.ndarray, name: str) -> np.ndarray:
    R = BY_NAME[name].interleave
    if raw.shape[0] % R:
        raise ValueError(f"{name} holds rows in groups of {R}; got {raw.shape[0]} rows")
    return np.ascontiguousarray(raw).reshape(raw.shape[0] // R, -1)


def _rows_out(y: np.ndarray, n: int) -> np.ndarray:
    """(G, R, n) -> (G·R, n) float32."""
    return np.ascontiguousarray(y, dtype=np.float32).reshape(-1, n)


def dequant_iq1_s_r4(raw: np.ndarray, n: int) -> np.ndarray:
    # group: d:f16[4] | blocks of 32 { qs:u8[16] | qh:u16[4] }; row k of block: qs[4i+k] with
    # 3 high index bits at qh[k] >> 3i, scale 2·((qh[k] >> 12) & 7) + 1, delta sign qh[k] bit 15
    g = _groups(raw, "iq1_s_r4")
    G, nb = g.shape[0], n // 32
    d = g[:, :8].copy().view(np.float16).astype(np.float32)  # (G, 4)
    blk = g[:, 8:].reshape(G, nb, 24)
    qs = blk[..., :16].reshape(G, nb, 4, 4).astype(np.int64)  # [i, k]
    qh = blk[..., 16:].copy().view("<u2").astype(np.int64)  # (G, nb, 4) [k]
    idx = qs.transpose(0, 1, 3, 2) | (((qh[..., None] >> (3 * np.arange(4))) & 7) << 8)  # [k, i]
    dl = d[:, None, :] * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)  # (G, nb, 4)
    delta = np.where(qh & 0x8000, np.float32(-0.125), np.float32(0.125))
    vals = dl[..., None, None] * (grid_tables()["iq1s"][idx] + delta[..., None, None])  # (G, nb, k, i, 8)
    return _rows_out(vals.transpose(0, 2, 1, 3, 4), n)


def dequant_iq1_m_r4(raw: np.ndarray, n: int) -> np.ndarray:
    # group: d:f16[4] | blocks of 32 { qs:u8[16] | qh:u8[8] | scales:u8[4] }; row k, half i:
    # scale nibble i of scales[k], indices qs[8i+k] (+ qh[4i+k] bits 0-2), qs[8i+k+4] (bits 4-6),
    # delta signs qh bits 3 and 7
    g = _groups(raw, "iq1_m_r4")
    G, nb = g.shape[0], n // 32
    d = g[:, :8].copy().view(np.float16).astype(np.float32)
    blk = g[:, 8:].reshape(G, nb, 28).astype(np.int64)
    qs = blk[..., :16].reshape(G, nb, 2, 2, 4)  # [i, half, k]
    qh = blk[..., 16:24].reshape(G, nb, 2, 4)  # [i, k]
    sc = blk[..., 24:]
    hi = np.stack([(qh & 0x07) << 8, (qh & 0x70) << 4], axis=3)  # (G, nb, i, half, k)
    idx = qs | hi
    neg = np.stack([qh & 0x08, qh & 0x80], axis=3) != 0
    delta = np.where(neg, np.float32(-0.125), np.float32(0.125))
    nib = np.stack([sc & 0xF, sc >> 4], axis=2).astype(np.float32)  # (G, nb, i, k)
    dl = d[:, None, None, :] * nib
    vals = dl[:, :, :, None, :, None] * (grid_tables()["iq1s"][idx] + delta[..., None])  # (G,nb,i,h,k,8)
    return _rows_out(vals.transpose(0, 4, 1, 2, 3, 5), n)


def _q8_k_rN(raw: np.ndarray, n: int, name: str, R: int) -> np.ndarray:
    # super-block: d:f16[R] | qs[R·256]: row k value 4j+i at qs[4R·j + 4k + i]
    g = _groups(raw, name)
    G, nb = g.shape[0], n // 256
    blk = g.reshape(G, nb, 2 * R + 256 * R)
    d = blk[..., :2 * R].copy().view(np.float16).astype(np.float32)  # (G, nb, R)
    q = blk[..., 2 * R:].reshape(G, nb, 64, R, 4)
    if R == 16:  # stored as unsigned (q + 128), dequantize_row_q8_k_r16
        qf = q.astype(np.float32) - np.float32(128)
    else:
        qf = q.view(np.int8).astype(np.float32)
    vals = d[:, :, None, :, None] * qf  # (G, nb, 64, R, 4)
    return _rows_out(vals.transpose(0, 3, 1, 2, 4), n)


def dequant_q8_k_r8(raw, n):
    return _q8_k_rN(raw, n, "q8_k_r8", 8)


def dequant_q8_k_r16(raw, n):
    return _q8_k_rN(raw, n, "q8_k_r16", 16)


def dequant_q8_kv_r8(raw: np.ndarray, n: int) -> np.ndarray:
    # group: d:f32[8] | qs:i8[8n]: row k value 16b + 4l + i at qs[128b + 32l + 4k + i]
    g = _groups(raw, "q8_KV_r8")
    G = g.shape[0]
    d = g[:, :32].copy().view(np.float32)  # (G, 8)
    q = g[:, 32:].reshape(G, n // 16, 4, 8, 4).view(np.int8).astype(np.float32)
    vals = d[:, None, None, :, None] * q
    return _rows_out(vals.transpose(0, 3, 1, 2, 4), n)


def dequant_bf16_r16(raw: np.ndarray, n: int) -> np.ndarray:
    # 16 rows: value pair b of row k at pair 16b + k
    g = _groups(raw, "bf16_r16")
    u = g.reshape(g.shape[0], n // 2, 16, 2, 2).transpose(0, 2, 1, 3, 4)
    return _rows_out(bf16_to_f32(np.ascontiguousarray(u)), n)


def _into(fn):
    def rows(out, raw):
        out[:] = fn(raw, out.shape[1])
    return rows


DEQUANT = {name: dequantizer(name, _into(fn)) for name, fn in (
    ("iq1_s_r4", dequant_iq1_s_r4), ("iq1_m_r4", dequant_iq1_m_r4), ("q8_k_r8", dequant_q8_k_r8),
    ("q8_k_r16", dequant_q8_k_r16), ("q8_KV_r8", dequant_q8_kv_r8), ("bf16_r16", dequant_bf16_r16))}
