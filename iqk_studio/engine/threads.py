"""Thread count of the engine's compute, settable at run time like llama-perplexity's `-t`.

The engine splits its GEMMs (and the output layer's vocabulary slices, attention's query blocks)
over a pool of Python threads, each calling single-threaded OpenBLAS (numpy releases the GIL).
OpenBLAS's own threads spin-wait between calls: on a machine shared with other work that cost
2x the CPU time and 2.5x the wall time of the same GEMMs split by hand.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
MIN_SPLIT_FLOPS = 2e7  # smaller GEMMs run on the calling thread

_state: dict = {"n": 0, "pool": None}


@cache
def _openblas_setter():
    """The loaded OpenBLAS's set_num_threads function (found via /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                return fn
    return None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def set_threads(n: int) -> bool:
    """Use n threads for the engine's GEMMs and numba parallel kernels; False when OpenBLAS could
    not be switched to one thread per call (it then runs its own threads inside each part)."""
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if _state["n"] != n:
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
        _state["pool"] = ThreadPoolExecutor(n, thread_name_prefix="iqk-engine") if n > 1 else None
        _state["n"] = n
    fn = _openblas_setter()
    if fn is None:
        return False
    fn(1)
    return True


def n_threads() -> int:
    if not _state["n"]:
        set_threads(default_threads())
    return _state["n"]


def pmap(fn, items: list) -> list:
    """[fn(item) for item in items] on the engine's threads (fn must release the GIL to gain)."""
    n = n_threads()
    if n == 1 or len(items) < 2:
        return [fn(it) for it in items]
    return list(_state["pool"].map(fn, items))


def matmul_t(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (T, k) @ w (n, k)ᵀ -> (T, n) float32, split over w's rows across the engine's threads."""
    n_out = w.shape[0]
    n = n_threads()
    if n == 1 or 2.0 * x.shape[0] * x.shape[1] * n_out < MIN_SPLIT_FLOPS or n_out < 2 * n:
        return np.matmul(x, w.T)
    out = np.empty((x.shape[0], n_out), np.result_type(x, w))
    step = -(-n_out // n)
    step = -(-step // 16) * 16  # keep parts 16-aligned (BLAS kernels work in panels)

    def part(lo: int) -> None:
        np.matmul(x, w[lo:lo + step].T, out=out[:, lo:lo + step])

    pmap(part, list(range(0, n_out, step)))
    return out
