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
