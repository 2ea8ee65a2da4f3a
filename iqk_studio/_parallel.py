"""One lock around every launch of a numba parallel kernel. numba's workqueue threading layer (a
machine without OpenMP or TBB, e.g. macOS without libomp) aborts the whole process when two
threads launch parallel kernels at once, as two jobs of the app can (a quantize and an
evaluation). Each launch is short (one row block, one layer), so concurrent jobs interleave."""

from __future__ import annotations

import threading

KERNEL_LOCK = threading.RLock()  # reentrant: a locked wrapper may call another


def is_parallel(kernel) -> bool:
    """False only for a numba dispatcher known to be serial; a parallel one, or a plain function
    (which may launch one), needs the lock."""
    options = getattr(kernel, "targetoptions", None)
    return options is None or bool(options.get("parallel"))
