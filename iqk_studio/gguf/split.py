"""Split GGUF models (gguf-split / llama.cpp naming `PREFIX-00001-of-00003.gguf`): part paths and
the checks of each part's split keys. A leaf: `reader.open_model` runs the open loop.

Keys: `split.no` (u16, 0-based), `split.count` (u16), `split.tensors.count` (i32, all parts).
"""

from __future__ import annotations

import re
from pathlib import Path

from iqk_studio.gguf.errors import GGUFError
from iqk_studio.gguf.values import short

KEY_NO, KEY_COUNT, KEY_TENSORS = "split.no", "split.count", "split.tensors.count"
_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_path(prefix: str | Path, split_no: int, split_count: int) -> Path:
    """llama_split_path: PREFIX-%05d-of-%05d.gguf with a 1-based part number."""
    return Path(f"{prefix}-{split_no + 1:05d}-of-{split_count:05d}.gguf")


def split_prefix(path: Path) -> str | None:
    m = _SPLIT_RE.match(str(path))
    return m.group("prefix") if m else None


def int_key(path, metadata: dict, key: str) -> int | None:
    """A split key's value: None when absent, else a non-negative integer or a GGUFError."""
    v = metadata.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise GGUFError(f"{path}: {key} must be a non-negative integer, got {short(v)}")
    return v


def part_paths(path: Path, metadata: dict) -> list[Path]:
    """Every part of the model `path` belongs to, part 1 first ([path] when it is not split)."""
    count = int_key(path, metadata, KEY_COUNT) or 0
    if count <= 1:
        return [path]
    prefix = split_prefix(path)
    if prefix is None:
        raise GGUFError(f"{path}: split.count = {count} but the file name does not follow "
                        "PREFIX-NNNNN-of-NNNNN.gguf, cannot find the other parts")
    no = int_key(path, metadata, KEY_NO) or 0
    if no >= count:
        raise GGUFError(f"{path}: split.no = {no} is not below split.count = {count}")
    paths = [split_path(prefix, i, count) for i in range(count)]
    for i, p in enumerate(paths):
        if not p.exists():
            raise GGUFError(f"{path}: split part {i + 1} of {count} is missing: {p}")
    return paths


def check_part(path: Path, metadata: dict, i: int, count: int) -> None:
    """Part i (0-based) of count must say so in its own split keys."""
    if int_key(path, metadata, KEY_NO) != i or int_key(path, metadata, KEY_COUNT) != count:
        raise GGUFError(f"{path}: expected split.no = {i} and split.count = {count}, found "
                        f"{short(metadata.get(KEY_NO))} and {short(metadata.get(KEY_COUNT))}")


def check_tensor_count(path: Path, metadata: dict, count: int, n_tensors: int) -> None:
    """split.tensors.count of part 1, when present, must equal the tensors of all parts."""
    total = int_key(path, metadata, KEY_TENSORS)
    if total is not None and total != n_tensors:
        raise GGUFError(f"{path}: split.tensors.count = {total} but the {count} parts hold "
                        f"{n_tensors} tensors")
