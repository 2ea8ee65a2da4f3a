"""Thread count of the engine's compute (OpenBLAS GEMMs and numba kernels), settable at run time
like llama-perplexity's `-t`; on a busy machine fewer threads can be faster."""

from __future__ import annotations

import ctypes
from functools import cache

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


@cache
def _openblas_setter():
    """The loaded OpenBLAS's set_num_threads function (found via /proc/self/maps), or None."""
    import numpy  # noqa: F401 - loads the BLAS library

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


def set_threads(n: int) -> bool:
    """Use n threads for BLAS and numba parallel kernels; False when BLAS could not be set."""
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    fn = _openblas_setter()
    if fn is None:
        return False
    fn(n)
    return True
