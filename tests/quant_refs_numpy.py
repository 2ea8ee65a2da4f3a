"""Slow, obvious numpy dequantizers for ggml types that gguf-py does not implement (ik_llama.cpp
additions). One function per ggml type name: `def ref_dequant_<name>(raw, n) -> float32 (rows, n)`,
raw being uint8 (rows, row_bytes). Append yours; tests/test_quant_refs.py finds them by name.
"""

from __future__ import annotations

import numpy as np

F = np.float32


def _blocks(raw: np.ndarray, n: int, block: int, bpb: int, meta: int = 0) -> np.ndarray:
    """(rows, n // block, bpb) view of the block bytes, after `meta` row-header bytes."""
    raw = np.asarray(raw, np.uint8).reshape(raw.shape[0], -1)
    return raw[:, meta:].reshape(raw.shape[0], n // block, bpb)


def _f16(b: np.ndarray) -> np.ndarray:
    """(..., 2) little-endian half bytes -> float32 (...)."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def ref_dequant_q6_0(raw: np.ndarray, n: int) -> np.ndarray:
    """Q6_0: d f16 | qh u8[8] | qs u8[16]; q = low4 | 2 high bits, y = d * (q - 32).
    Element j (< 16): low nibble of qs[j], bits 0-1 of (qh[j % 8] >> 4*(j // 8)); element j + 16:
    high nibble of qs[j], bits 2-3 of the same qh nibble."""
    b = _blocks(raw, n, 32, 26)
    d = _f16(b[..., 0:2])
    qh = b[..., 2:10].astype(np.int32)
    qs = b[..., 10:26].astype(np.int32)
    out = np.empty(b.shape[:2] + (32,), np.float32)
    for j in range(16):
        h = qh[..., j % 8] >> (4 * (j // 8))
        lo = (qs[..., j] & 0xF) | ((h & 3) << 4)
        hi = (qs[..., j] >> 4) | (((h >> 2) & 3) << 4)
        out[..., j] = d * (lo - 32).astype(np.float32)
        out[..., j + 16] = d * (hi - 32).astype(np.float32)
    return out.reshape(raw.shape[0], n)


def get(name: str):
    """The numpy dequantizer `ref_dequant_<name>` for a ggml type name, or None."""
    return globals().get(f"ref_dequant_{name}")


# ---------------------------------------------------------------------------------------------
# Slow references for the trellis and small odd types (helper D): written from the byte layouts
# in ik_llama.cpp's iqk_quantize.cpp dequantize_row_iq*_kt, vectorized over blocks, no numba.

_IQ4K = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                  1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def ref_trellis_values(codes, offset, group, is_abs=False):
    """codes (...,) -> (..., group) int values of the integer trellis (0xCBAC1FED hash)."""
    x = np.asarray(codes, dtype=np.uint64) + np.uint64(0) + np.asarray(offset, dtype=np.uint64)
    out = []
    for _ in range(group):
        x = (x * np.uint64(0xCBAC1FED)) & np.uint64(0xFFFFFFFF)
        s = x & np.uint64(0x3F3F3F3F)
        v = sum(((s >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.int64) for i in range(4)) - 126
        out.append(np.abs(v) if is_abs else v)
    return np.stack(out, axis=-1)


def _row_d(raw):
    return raw[:, :4].copy().view(np.float32)[:, 0]


def ref_dequant_iq2_kt(raw, n, is_abs=False):
    """IQ2_KT (and IQ3_KT's magnitudes when is_abs): code j of a super-block covers values 8j..8j+7;
    its 4-bit scale is nibble j//16 of scales[(j%16)//4]."""
    rows, nb = raw.shape[0], n // 256
    bs = 100 if is_abs else 68
    blk = raw[:, 4:].reshape(rows, nb, bs)
    codes = blk[..., 4:68].copy().view("<u2")  # (rows, nb, 32)
    j = np.arange(32)
    nib = (blk[..., (j % 16) // 4] >> (4 * (j // 16))) & 15  # (rows, nb, 32)
    d = _row_d(raw)[:, None, None]
    scale = d * (nib.astype(np.float32) if is_abs else _IQ4K[nib])
    v = ref_trellis_values(codes, 4096, 8, is_abs).astype(np.float32)
    y = (scale[..., None] * v)
    if is_abs:
        qh = blk[..., 68:100].reshape(rows, nb, 4, 8)  # [ig, k]
        for jj in range(32):
            bit = (jj % 16) // 4 + 4 * (jj // 16)
            ig = jj % 4
            neg = ((qh[:, :, ig, :] >> bit) & 1).astype(bool)
            y[:, :, jj, :] = np.where(neg, -y[:, :, jj, :], y[:, :, jj, :])
    return y.reshape(rows, n)


def ref_dequant_iq3_kt(raw, n):
    return ref_dequant_iq2_kt(raw, n, is_abs=True)


def ref_dequant_iq1_kt(raw, n):
    """IQ1_KT: 13-bit codes; low 8 bits ql[g], bits 8-11 a nibble of qh[g % 16] (low nibble for
    g < 16), bit 12 = bit 4 + g%4 of sh[g // 4]; scale iq4k_values[sh & 15]."""
    rows, nb = raw.shape[0], n // 256
    blk = raw[:, 4:].reshape(rows, nb, 56).astype(np.int64)
    sh, ql, qh = blk[..., :8], blk[..., 8:40], blk[..., 40:56]
    g = np.arange(32)
    code = ql | (((qh[..., g % 16] >> (4 * (g // 16))) & 15) << 8)
    code |= ((sh[..., g // 4] >> (4 + g % 4)) & 1) << 12
    scale = _row_d(raw)[:, None, None] * _IQ4K[sh[..., g // 4] & 15]
    v = ref_trellis_values(code, 4096, 8).astype(np.float32)
    return (scale[..., None] * v).reshape(rows, n)


def ref_dequant_iq4_kt(raw, n):
    """IQ4_KT: 32 u32 per super-block; word ib < 8: bit 0 offset shift (+32768), bits 1-7 scale+64,
    bits 8+3g.. code bits 12-14 of group g; codes of 4 values: ql byte | qh nibble << 8."""
    rows, nb = raw.shape[0], n // 256
    blk = raw[:, 4:].reshape(rows, nb, 128)
    shb = blk[..., :32].copy().view("<u4").astype(np.int64)  # (rows, nb, 8)
    ql = blk[..., 32:96].astype(np.int64)
    qh = blk[..., 96:128].astype(np.int64)
    jj = np.arange(64)
    ib, ig = jj // 8, jj % 8
    code = ql | (((qh[..., jj % 32] >> (4 * (jj // 32))) & 15) << 8)
    code |= ((shb[..., ib] >> (8 + 3 * ig)) & 7) << 12
    offset = 4096 + 32768 * (shb[..., ib] & 1)
    ls = ((shb[..., ib] & 0xFF) >> 1) - 64
    scale = _row_d(raw)[:, None, None] * ls.astype(np.float32)
    v = ref_trellis_values(code, offset, 4).astype(np.float32)
    return (scale[..., None] * v).reshape(rows, n)
