"""Finds the kernel modules in quant/kernels/ and maps type names to their functions."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from iqk_studio.quant import kernels as _kernels_pkg


@cache
def _tables() -> tuple[dict, dict]:
    quant: dict = {}
    dequant: dict = {}
    for info in sorted(pkgutil.iter_modules(_kernels_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{_kernels_pkg.__name__}.{info.name}")
        for name, fn in getattr(mod, "QUANT", {}).items():
            if name in quant:
                raise RuntimeError(f"quantizer for {name} defined twice ({info.name})")
            quant[name] = fn
        for name, fn in getattr(mod, "DEQUANT", {}).items():
            if name in dequant:
                raise RuntimeError(f"dequantizer for {name} defined twice ({info.name})")
            dequant[name] = fn
    return quant, dequant


def quantizers() -> dict:
    return _tables()[0]


def dequantizers() -> dict:
    return _tables()[1]


def can_quantize(name: str) -> bool:
    return name in quantizers()


def can_dequantize(name: str) -> bool:
    return name in dequantizers()
