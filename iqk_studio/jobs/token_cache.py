"""Token ids of an evaluation text, cached on disk per (text, tokenizer): tokenizing wiki.test.raw
takes seconds to tens of seconds, and every run on the same model and text needs the same ids.

The key hashes the text's bytes, the model's `tokenizer.*` metadata and our tokenizer's sources
(a changed tokenizer can never serve stale ids). Files: <user cache>/iqk-studio/tokens/*.npz.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

_ENGINE = Path(__file__).resolve().parent.parent / "engine"
_TOKENIZER_SOURCES = ("tokenizer.py", "tok_bpe.py", "tok_spm.py", "tok_text.py")


def cache_dir() -> Path:
    """$IQK_STUDIO_CACHE/tokens, else $XDG_CACHE_HOME (or ~/.cache)/iqk-studio/tokens."""
    env = os.environ.get("IQK_STUDIO_CACHE")
    if env:
        return Path(env) / "tokens"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iqk-studio" / "tokens"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_key(metadata) -> str:
    """Identity of a model's tokenizer: its tokenizer.* metadata and our tokenizer's code."""
    h = hashlib.sha256()
    for name in _TOKENIZER_SOURCES:
        p = _ENGINE / name
        if p.exists():
            h.update(p.read_bytes())
    for k in sorted(k for k in metadata if k.startswith("tokenizer.")):
        v = metadata[k]
        h.update(k.encode())
        if isinstance(v, np.ndarray):
            h.update(str(v.dtype).encode())
            h.update(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, (list, tuple)):
            h.update(f"list{len(v)}".encode())
            h.update("\0".join(map(str, v)).encode("utf-8", "surrogatepass"))
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def cache_path(text_sha: str, tok_key: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / f"{text_sha[:20]}-{tok_key[:20]}.npz"


def lookup(path: Path) -> tuple[np.ndarray, bool, int] | None:
    """(ids, add_bos, bos_id) from a cache file, or None when absent or unreadable."""
    try:
        with np.load(path) as z:
            return z["ids"].astype(np.int64), bool(z["add_bos"]), int(z["bos_id"])
    except (OSError, KeyError, ValueError):
        return None


def store(path: Path, ids: np.ndarray, add_bos: bool, bos_id: int) -> None:
    """Write atomically; a cache that cannot be written is simply not written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # one per writer
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, ids=np.asarray(ids, dtype=np.int32), add_bos=np.bool_(add_bos),
                 bos_id=np.int64(bos_id))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def cached_tokens(model, text_path, folder: Path | None = None
                  ) -> tuple[np.ndarray, bool, int, bool]:
    """(ids, add_bos, bos_id, hit) as jobs.perplexity.tokenize_file gives them, from the cache
    when this text was tokenized with this tokenizer before."""
    from iqk_studio.jobs.perplexity import tokenize_file

    path = cache_path(file_sha256(text_path), tokenizer_key(model.metadata), folder)
    got = lookup(path)
    if got is not None:
        return (*got, True)
    ids, add_bos, bos_id = tokenize_file(model, text_path)
    store(path, ids, add_bos, bos_id)
    return ids, add_bos, bos_id, False
