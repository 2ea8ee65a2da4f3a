"""The one wrapper factory around the rows kernels: checks shapes, allocates the output with the
row size of the type table (gguf/types.py) and calls the kernel; QUANT / DEQUANT entries of every
kernel module are made here."""

from __future__ import annotations

import numpy as np

from iqk_studio._parallel import KERNEL_LOCK, is_parallel
from iqk_studio.gguf.types import BY_NAME
from iqk_studio.quant.errors import QuantError
from iqk_studio.quant.kernels import MODE_IMATRIX

_NO_QW = np.zeros(0, dtype=np.float32)


def quantizer(name: str, rows, check=None):
    """QUANT[name](x, qw, mode) -> uint8 (rows, row_bytes) around rows(out, x, qw, mode).

    x is made C-contiguous float32 (rows, n) with n a multiple of the block and the row count a
    multiple of the interleave; qw (n,) float32 in MODE_IMATRIX, an empty array otherwise.
    check(out, x) runs after the kernel (a QuantError where llama-quantize aborts)."""
    t = BY_NAME[name]
    parallel = is_parallel(rows)

    def quant(x, qw, mode):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] == 0 or x.shape[1] % t.block:
            raise QuantError(f"{name} needs (rows, n) with n a multiple of {t.block}; got "
                             f"{x.shape}")
        if x.shape[0] % t.interleave:
            raise QuantError(f"{name} interleaves rows in groups of {t.interleave}; got "
                             f"{x.shape[0]} rows")
        if mode == MODE_IMATRIX:
            if qw is None:
                raise QuantError(f"{name}: imatrix mode without importance values")
            qw = np.ascontiguousarray(qw, dtype=np.float32).reshape(-1)
            if qw.shape[0] != x.shape[1]:
                raise QuantError(f"importance has {qw.shape[0]} values for rows of {x.shape[1]}")
        else:
            qw = _NO_QW
        out = np.empty((x.shape[0], t.row_bytes(x.shape[1])), dtype=np.uint8)
        if parallel:
            with KERNEL_LOCK:
                rows(out, x, qw, mode)
        else:
            rows(out, x, qw, mode)
        if check is not None:
            check(out, x)
        return out

    quant.__name__ = f"quantize_{name}"
    return quant


def dequantizer(name: str, rows):
    """DEQUANT[name](raw, n) -> float32 (rows, n) around rows(out, raw): raw uint8
    (rows, row_bytes) made C-contiguous, rows of n elements."""
    t = BY_NAME[name]
    parallel = is_parallel(rows)

    def dequant(raw, n):
        if n <= 0 or n % t.block:
            raise QuantError(f"{name} needs rows that are a multiple of {t.block}; got {n}")
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        rb = t.row_bytes(n)
        if raw.ndim != 2 or raw.shape[1] != rb:
            raise QuantError(f"{name}: rows of {n} values are {rb} bytes; got {raw.shape}")
        if raw.shape[0] % t.interleave:
            raise QuantError(f"{name} holds rows in groups of {t.interleave}; got "
                             f"{raw.shape[0]} rows")
        out = np.empty((raw.shape[0], n), dtype=np.float32)
        if parallel:
            with KERNEL_LOCK:
                rows(out, raw)
        else:
            rows(out, raw)
        return out

    dequant.__name__ = f"dequantize_{name}"
    return dequant
