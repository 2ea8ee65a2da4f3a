"""Kernels are compiled per type on first use: a job that is about to quantize to some types first
runs each type's kernels once on a tiny input, announcing it (`Compiling`), so the user sees
"compiling IQ4_KS kernels..." instead of a silent pause. numba caches the result on disk."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from iqk_studio.quant import registry
from iqk_studio.quant.types import by_name

_READY: set[str] = set()  # types whose kernels this process has already run
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Compiling:
    """A job is compiling (or loading from numba's cache) the kernels of one type."""

    qtype: str
    message: str


def is_ready(qtype: str) -> bool:
    return by_name(qtype).name in _READY


def warm_type(qtype: str) -> None:
    """Quantize and dequantize a few rows of one type (compiles its kernels on first call)."""
    from iqk_studio.quant.api import dequantize, quantize

    t = by_name(qtype)
    n = t.block * -(-256 // t.block)  # one row of at least 256 values, a whole number of blocks
    rows = max(int(t.interleave), 1)
    x = np.sin(np.arange(rows * n, dtype=np.float32)).reshape(rows, n)
    raw = quantize(x, t.name)
    if registry.can_dequantize(t.name):
        dequantize(raw, t.name, n)
    with _LOCK:
        _READY.add(t.name)


def warm_types(types: Iterable[str]) -> Iterator[Compiling]:
    """Before a job quantizes: one Compiling event per type not yet used in this process, each
    followed by its compilation. Types without a quantizer are skipped (the job reports them)."""
    names = []
    for q in types:
        try:
            t = by_name(q)
        except KeyError:
            continue
        if t.name not in names and t.name not in _READY and registry.can_quantize(t.name):
            names.append(t.name)
    for name in sorted(names):
        yield Compiling(name, f"compiling {name.upper()} kernels... (first use; cached on disk "
                              "afterwards)")
        warm_type(name)
