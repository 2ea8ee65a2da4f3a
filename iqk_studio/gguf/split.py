"""Split GGUF models (gguf-split / llama.cpp naming `PREFIX-00001-of-00003.gguf`) opened as one.

Keys: `split.no` (u16, 0-based), `split.count` (u16), `split.tensors.count` (i32, all parts).
"""

from __future__ import annotations

import re
from pathlib import Path

from iqk_studio.gguf.reader import GGUFError, GGUFModel, open_file
from iqk_studio.gguf.values import short

KEY_NO, KEY_COUNT, KEY_TENSORS = "split.no", "split.count", "split.tensors.count"
_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_path(prefix: str | Path, split_no: int, split_count: int) -> Path:
    """llama_split_path: PREFIX-%05d-of-%05d.gguf with a 1-based part number."""
    return Path(f"{prefix}-{split_no + 1:05d}-of-{split_count:05d}.gguf")


def split_prefix(path: Path) -> str | None:
    m = _SPLIT_RE.match(str(path))
    return m.group("prefix") if m else None


def _int_key(f, key: str) -> int | None:
    v = f.metadata.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise GGUFError(f"{f.path}: {key} must be a non-negative integer, got {short(v)}")
    return v


def open_parts(path: Path) -> GGUFModel:
    files, maps = [], []
    try:
        first, mm = open_file(path)
        files.append(first)
        maps.append(mm)
        count = _int_key(first, KEY_COUNT) or 0
        if count <= 1:
            return GGUFModel(files, maps)
        prefix = split_prefix(path)
        if prefix is None:
            raise GGUFError(f"{path}: split.count = {count} but the file name does not "
                            "follow PREFIX-NNNNN-of-NNNNN.gguf, cannot find the other parts")
        no = _int_key(first, KEY_NO) or 0
        if no != 0:  # opened from a later part: start again from part 1
            files.clear()
            maps.clear()
            mm.close()
            first_path = split_path(prefix, 0, count)
            if not first_path.exists():
                raise GGUFError(f"{path}: split part 1 of {count} is missing: {first_path}")
            first, mm = open_file(first_path)
            files.append(first)
            maps.append(mm)
        for i in range(1, count):
            p = split_path(prefix, i, count)
            if not p.exists():
                raise GGUFError(f"{path}: split part {i + 1} of {count} is missing: {p}")
            f, m = open_file(p, file_index=i)
            files.append(f)
            maps.append(m)
            if _int_key(f, KEY_NO) != i or _int_key(f, KEY_COUNT) != count:
                raise GGUFError(f"{p}: expected split.no = {i} and split.count = {count}, "
                                f"found {short(f.metadata.get(KEY_NO))} and "
                                f"{short(f.metadata.get(KEY_COUNT))}")
        model = GGUFModel(files, maps)
        total = _int_key(files[0], KEY_TENSORS)
        if total is not None and total != len(model.tensors):
            raise GGUFError(f"{path}: split.tensors.count = {total} but the {count} parts hold "
                            f"{len(model.tensors)} tensors")
        return model
    except BaseException:
        for m in maps:
            try:
                m.close()
            except BufferError:
                pass
        raise
