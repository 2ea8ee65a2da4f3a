"""Lazy, memory-mapped GGUF reader: header, metadata and tensor infos parsed at open, tensor bytes
only on request (zero-copy views). Knows every ggml type id of mainline and ik_llama.cpp.

File layout: "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv key/values |
n_tensors x (string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset) | pad to alignment |
data (offsets relative to the data start, each a multiple of `general.alignment`, default 32).
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from iqk_studio.gguf import split
from iqk_studio.gguf.errors import GGUFError
from iqk_studio.gguf.types import BY_ID, QuantType
from iqk_studio.gguf.values import (
    MAX_NAME_BYTES,
    Cursor,
    DecodeError,
    ValueType,
    read_value,
    short,
)

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, smallest payload
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset
MAX_KV = 1 << 20  # metadata pairs (real files: tens)
MAX_TENSORS = 1 << 20  # tensor infos (real files: up to a few thousand)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 (row length) first
    type_id: int
    offset: int  # absolute byte offset in its file
    nbytes: int  # ggml_nbytes, row meta included, padding excluded
    file_index: int = 0  # which split part (0-based)

    @property
    def qtype(self) -> QuantType:
        return BY_ID[self.type_id]

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.shape[0] if self.shape and self.shape[0] else 0


@dataclass(frozen=True)
class GGUFFile:
    """One parsed file (one split part): what the header says, before merging parts."""

    path: Path
    version: int
    metadata: dict
    metadata_types: dict  # key -> (ValueType, item ValueType | None)
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    file_size: int


def _err(path, offset: int | None, msg: str) -> GGUFError:
    where = f" at offset {offset}" if offset is not None else ""
    return GGUFError(f"{path}{where}: {msg}")


def parse_header(buf, path, file_size: int, file_index: int = 0) -> GGUFFile:
    """Parse magic, metadata and tensor infos from `buf` (bytes-like, len == file_size)."""
    try:
        return _parse(buf, path, file_size, file_index)
    except DecodeError as e:
        raise _err(path, e.offset, e.message) from None


def _parse(buf, path, size: int, file_index: int) -> GGUFFile:
    if size < 4 or bytes(buf[:4]) != GGUF_MAGIC:
        head = bytes(buf[:4])
        raise _err(path, 0, f"not a GGUF file (magic {head!r}, expected b'GGUF')")
    cur = Cursor(buf, 4, size)
    version = cur.u32("GGUF version")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = " (big-endian GGUF files are not supported)" if swapped in (2, 3) else ""
        raise _err(path, 4, f"unsupported GGUF version {version}{hint}; expected 2 or 3")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata key/value count")
    if n_kv > (size - cur.pos) // _MIN_KV_BYTES:
        raise _err(path, 16, f"metadata count {n_kv} cannot fit in a {size}-byte file")
    if n_tensors > (size - cur.pos - n_kv * _MIN_KV_BYTES) // _MIN_TENSOR_INFO_BYTES:
        raise _err(path, 8, f"tensor count {n_tensors} cannot fit in a {size}-byte file")
    if n_kv > MAX_KV:
        raise _err(path, 16, f"metadata count {n_kv:,} is over the limit of {MAX_KV:,}")
    if n_tensors > MAX_TENSORS:
        raise _err(path, 8, f"tensor count {n_tensors:,} is over the limit of {MAX_TENSORS:,}")
    metadata, types = {}, {}
    for i in range(n_kv):
        at = cur.pos
        key = cur.string(f"key of metadata entry {i}", MAX_NAME_BYTES)
        vtype = cur.u32(f"value type of {short(key)}")
        value, item = read_value(cur, vtype, short(key))
        if key in metadata:
            raise _err(path, at, f"duplicate metadata key {short(key)}")
        metadata[key] = value
        types[key] = (ValueType(vtype), item)
    alignment = _alignment(metadata, types, path)
    raw = [_tensor_info(cur, path) for _ in range(n_tensors)]
    data_offset = -(-cur.pos // alignment) * alignment
    if data_offset > size and n_tensors:
        raise _err(path, cur.pos, f"file ends before the data section (needs {data_offset} "
                   f"bytes, file has {size})")
    tensors = _check_tensors(raw, path, data_offset, alignment, size, file_index)
    return GGUFFile(Path(path), version, metadata, types, tensors, alignment, data_offset, size)


def _alignment(metadata: dict, types: dict, path) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    a = metadata["general.alignment"]
    if types["general.alignment"][0] is not ValueType.UINT32 or a <= 0 or a & (a - 1):
        raise _err(path, None, f"general.alignment must be a u32 power of two, got {short(a)}")
    return a


def _tensor_info(cur: Cursor, path):
    at = cur.pos
    name = cur.string("tensor name", MAX_NAME_BYTES)
    what = f"tensor {short(name)}"
    n_dims = cur.u32(f"n_dims of {what}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise _err(path, cur.pos - 4, f"{what} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
    shape = tuple(cur.u64(f"ne[{d}] of {what}") for d in range(n_dims))
    type_id = cur.u32(f"type of {what}")
    offset = cur.u64(f"offset of {what}")
    return at, name, shape, type_id, offset


def _check_tensors(raw, path, data_offset, alignment, size, file_index):
    out, seen = [], set()
    for at, name, shape, type_id, rel in raw:
        what = f"tensor {short(name)}"
        if name in seen:
            raise _err(path, at, f"duplicate tensor name {short(name)}")
        seen.add(name)
        qt = BY_ID.get(type_id)
        if qt is None:
            raise _err(path, at, f"{what} has unknown ggml type id {type_id}")
        if 0 in shape:  # ggml asserts every ne > 0 (gguf_tensor_info_sanitize)
            raise _err(path, at, f"{what} has a zero dimension: shape {list(shape)}")
        if math.prod(shape) >= 2**62:
            raise _err(path, at, f"{what} shape {list(shape)} is absurdly large")
        if shape and shape[0] % qt.block:
            raise _err(path, at, f"{what} of type {qt.name}: ne0 = {shape[0]} is not a multiple "
                       f"of the block size {qt.block}")
        nbytes = qt.nbytes(shape)
        if rel % alignment:
            raise _err(path, at, f"{what} data offset {rel} is not a multiple of the alignment "
                       f"{alignment}")
        if data_offset + rel + nbytes > size:
            raise _err(path, at, f"{what} data [{data_offset + rel}, {data_offset + rel + nbytes})"
                       f" lies beyond the file end ({size} bytes)")
        out.append(TensorInfo(name, shape, type_id, data_offset + rel, nbytes, file_index))
    by_offset = sorted(out, key=lambda t: t.offset)
    for a, b in pairwise(by_offset):
        if a.offset + a.nbytes > b.offset:
            raise _err(path, None, f"tensors {short(a.name)} and {short(b.name)} overlap in the "
                       "data section")
    return tuple(out)


class GGUFModel:
    """One model, possibly split over several files, opened lazily over memory maps."""

    def __init__(self, files: list[GGUFFile], maps: list):
        self.files = tuple(files)
        self._maps = maps
        first = files[0]
        self.path = first.path
        self.version = first.version
        self.metadata: dict = first.metadata
        self.metadata_types: dict = first.metadata_types
        self.alignment = first.alignment
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            for t in f.tensors:
                if t.name in self.tensors:
                    raise GGUFError(f"{f.path}: tensor {short(t.name)} also appears in "
                                    f"{files[self.tensors[t.name].file_index].path}")
                self.tensors[t.name] = t

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def n_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    def tensor_data(self, name: str) -> np.ndarray:
        """Zero-copy read-only uint8 view of a tensor's bytes, shape (n_rows, row_bytes)."""
        t = self.tensors[name]
        mm = self._maps[t.file_index]
        if mm is None:
            raise GGUFError(f"{self.files[t.file_index].path}: model is closed")
        qt = t.qtype
        rows = t.n_rows
        if rows and qt.block > 1 and qt.row_bytes(t.shape[0]) * rows == t.nbytes:
            shape = (rows, qt.row_bytes(t.shape[0]))
        elif rows and qt.block == 1 and t.nbytes == qt.type_size * t.n_elements:
            shape = (rows, qt.type_size * t.shape[0])
        else:
            shape = (1, t.nbytes)
        arr = np.frombuffer(mm, np.uint8, t.nbytes, t.offset)
        return arr.reshape(shape)

    def close(self) -> None:
        for i, mm in enumerate(self._maps):
            if mm is not None:
                try:
                    mm.close()
                except BufferError:
                    pass  # views are still alive: the map closes when the last one dies
            self._maps[i] = None

    def __enter__(self) -> GGUFModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFModel({str(self.path)!r}, arch={self.arch!r}, "
                f"{len(self.tensors)} tensors, {len(self.files)} file(s))")


def open_file(path, file_index: int = 0) -> tuple[GGUFFile, mmap.mmap | None]:
    """Map one file read-only and parse its header."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise GGUFError(f"{path}: not a regular file")
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _err(path, None, "empty file, not a GGUF")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{path}: is a directory, not a GGUF file") from None
    except PermissionError:
        raise GGUFError(f"{path}: permission denied") from None
    try:
        return parse_header(mm, path, size, file_index), mm
    except BaseException:
        try:
            mm.close()
        except BufferError:  # a view still alive in a traceback: it closes when that dies
            pass
        raise


def open_model(path) -> GGUFModel:
    """Open a GGUF model; a split model (`NAME-00001-of-0000N.gguf`) opens as one model, from
    any of its parts, each part's split keys checked (gguf/split.py)."""
    path = Path(path)
    files, maps = [], []
    try:
        first, mm = open_file(path)
        files.append(first)
        maps.append(mm)
        paths = split.part_paths(path, first.metadata)
        if len(paths) == 1:
            return GGUFModel(files, maps)
        count = len(paths)
        for i, p in enumerate(paths):
            if i > 0 or p != path:
                if i == 0:  # opened from a later part: start again from part 1
                    files.clear()
                    maps.pop().close()
                f, m = open_file(p, file_index=i)
                files.append(f)
                maps.append(m)
            split.check_part(p, files[i].metadata, i, count)
        model = GGUFModel(files, maps)
        split.check_tensor_count(path, files[0].metadata, count, len(model.tensors))
        return model
    except BaseException:
        for m in maps:
            try:
                m.close()
            except BufferError:
                pass
        raise
