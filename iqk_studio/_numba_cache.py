"""Where numba caches compiled kernels: a user cache folder keyed by a hash of the kernel sources.

numba's own cache checks only the timestamp of the file that defines a kernel, so a change in an
imported helper (quant/common.py) would leave stale machine code — wrong bytes, silently. Keying
the folder on every source that kernels inline makes a stale cache impossible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parent
_SOURCES = ("quant", "engine")  # packages whose modules define or are inlined into kernels


def source_hash() -> str:
    h = hashlib.sha256()
    for sub in _SOURCES:
        for p in sorted((_PKG / sub).rglob("*.py")):
            h.update(str(p.relative_to(_PKG)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def configure() -> None:
    """Set NUMBA_CACHE_DIR unless the user chose one; numba reads it at import, so when numba
    is already imported its config is set too (kernels look it up when first compiled)."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iqk-studio" / "numba"
    try:
        target = base / source_hash()
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba falls back to __pycache__ next to the sources
    os.environ["NUMBA_CACHE_DIR"] = str(target)
    if "numba" in sys.modules:
        from numba.core import config
        config.CACHE_DIR = str(target)
    for old in base.iterdir():  # caches of other source versions are dead weight
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
