"""f32, f16 and bf16 rows: the one place these encodings are decoded (quantize = round to the type,
as ggml's fp32_to_fp16 / fp32_to_bf16 do; dequantize = exact widening)."""

from __future__ import annotations

import numpy as np

from iqk_studio.quant.kernels.wrap import dequantizer, quantizer


def f16_to_f32(raw: np.ndarray) -> np.ndarray:
    """float32 of little-endian fp16 bytes (any shape whose last axis is a whole number of them)."""
    return raw.view(np.float16).astype(np.float32)


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """float32 of little-endian bf16 bytes (the top 16 bits of a float32)."""
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _f32_rows(out, x, qw, mode):
    out.view(np.float32)[:] = x


def _f16_rows(out, x, qw, mode):
    out.view(np.float16)[:] = x  # IEEE round to nearest even, as ggml's fp32_to_fp16


def _bf16_rows(out, x, qw, mode):
    # ggml_compute_fp32_to_bf16: round to nearest even on the dropped 16 bits (no NaN input here)
    u = x.view(np.uint32).astype(np.uint64)
    out.view(np.uint16)[:] = (u + (0x7FFF + ((u >> 16) & 1))) >> 16


def _f32_dequant(out, raw):
    out[:] = raw.view(np.float32)


def _f16_dequant(out, raw):
    out[:] = raw.view(np.float16)


def _bf16_dequant(out, raw):
    out[:] = bf16_to_f32(raw)


QUANT = {"f32": quantizer("f32", _f32_rows), "f16": quantizer("f16", _f16_rows),
         "bf16": quantizer("bf16", _bf16_rows)}
DEQUANT = {"f32": dequantizer("f32", _f32_dequant), "f16": dequantizer("f16", _f16_dequant),
           "bf16": dequantizer("bf16", _bf16_dequant)}
