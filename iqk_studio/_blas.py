"""OpenBLAS kernel choice: numpy's OpenBLAS (a DYNAMIC_ARCH build) runs its Haswell (AVX2) kernels
on AMD CPUs with AVX512 it does not recognise (Zen 5 here); their AVX512 (SkylakeX) sgemm is
1.5-1.8x faster. Must run before numpy is imported; a user's OPENBLAS_CORETYPE is kept."""

from __future__ import annotations

import os
import sys

_AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def cpu_flags() -> tuple[str, set[str]]:
    """(vendor id, flags) of the first CPU in /proc/cpuinfo; ("", set()) elsewhere."""
    vendor, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = val.strip()
                elif key == "flags":
                    flags = set(val.split())
                    break
    except OSError:
        pass
    return vendor, flags


def configure() -> None:
    if "OPENBLAS_CORETYPE" in os.environ or "numpy" in sys.modules:
        return
    vendor, flags = cpu_flags()
    if vendor == "AuthenticAMD" and _AVX512 <= flags:
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
