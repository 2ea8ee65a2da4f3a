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
import time
from pathlib import Path

_PKG = Path(__file__).resolve().parent
_SOURCES = ("quant", "engine")  # packages whose modules define or are inlined into kernels
KEEP = 4  # cache folders of other source versions kept (other checkouts, venvs, branches)
MIN_AGE_S = 24 * 3600  # a folder used within the last day is never deleted (it may be in use)


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
    try:
        os.utime(target)  # "last used", for the pruning of other processes
        prune(base, keep=target)
    except OSError:
        pass


def prune(base: Path, keep: Path, now: float | None = None) -> None:
    """Delete the cache folders of old source versions: all but the KEEP most recently used
    besides `keep`, and never one used within MIN_AGE_S (another checkout may be using it)."""
    now = time.time() if now is None else now
    others = []
    for d in base.iterdir():
        if d != keep and d.is_dir():
            try:
                others.append((d.stat().st_mtime, d))
            except OSError:
                continue
    others.sort(reverse=True)
    for mtime, d in others[KEEP:]:
        if now - mtime > MIN_AGE_S:
            shutil.rmtree(d, ignore_errors=True)
