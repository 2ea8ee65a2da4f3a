"""Write GGUF files: header (key/values + tensor infos), then each tensor's bytes or, for a
skeleton, nothing (the file is extended sparsely to its full size). Fork type ids included.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqk_studio.gguf.reader import DEFAULT_ALIGNMENT, MAX_DIMS
from iqk_studio.gguf.values import ValueType, encode_kv, encode_string
from iqk_studio.quant.types import BY_ID, QuantType, by_name


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to write: ggml shape (ne0 first), type, and optionally its bytes."""

    name: str
    shape: tuple[int, ...]
    qtype: QuantType
    data: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return self.qtype.nbytes(self.shape)


def as_qtype(t) -> QuantType:
    if isinstance(t, QuantType):
        return t
    if isinstance(t, (int, np.integer)):
        return BY_ID[int(t)]
    return by_name(str(t))


def tensor_spec(name: str, shape, qtype, data=None) -> TensorSpec:
    qt = as_qtype(qtype)
    shape = tuple(int(d) for d in shape)
    if not 1 <= len(shape) <= MAX_DIMS or any(d < 0 for d in shape):
        raise ValueError(f"{name}: bad shape {shape}")
    if shape[0] % qt.block:
        raise ValueError(f"{name}: ne0 = {shape[0]} is not a multiple of {qt.name}'s "
                         f"block size {qt.block}")
    spec = TensorSpec(name, shape, qt, data)
    if data is not None and np.asarray(data).nbytes != spec.nbytes:
        raise ValueError(f"{name}: {np.asarray(data).nbytes} data bytes, expected {spec.nbytes}")
    return spec


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def encode_header(metadata: dict, tensors: list[TensorSpec], types: dict | None = None,
                  version: int = 3) -> tuple[bytes, list[int], int]:
    """Header bytes (padded to the alignment), each tensor's offset relative to the data start,
    and the data section's size. `types` maps key -> (ValueType, item ValueType | None) to force
    a value's type (e.g. from GGUFModel.metadata_types); others are inferred."""
    types = types or {}
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    if "general.alignment" in metadata and "general.alignment" not in types:
        types = {**types, "general.alignment": (ValueType.UINT32, None)}
    parts = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(metadata))]
    for key, value in metadata.items():
        vt, it = types.get(key, (None, None))
        parts.append(encode_kv(key, value, vt, it))
    offsets, pos = [], 0
    for t in tensors:
        offsets.append(pos)
        parts += [encode_string(t.name), struct.pack("<I", len(t.shape)),
                  struct.pack(f"<{len(t.shape)}Q", *t.shape),
                  struct.pack("<IQ", t.qtype.id, pos)]
        pos = _pad(pos + t.nbytes, alignment)
    head = b"".join(parts)
    head += b"\0" * (_pad(len(head), alignment) - len(head))
    data_size = pos  # the last tensor is padded too, as ggml's writer does
    return head, offsets, data_size


def write_gguf(path, metadata: dict, tensors: list[TensorSpec], types: dict | None = None) -> Path:
    """Write a GGUF file; tensors without data leave a sparse hole (a header-only skeleton).
    Written to PATH.tmp and renamed, so a failure never leaves a half-written file."""
    path = Path(path)
    head, offsets, data_size = encode_header(metadata, tensors, types)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for t, off in zip(tensors, offsets, strict=True):
                if t.data is not None:
                    f.seek(len(head) + off)
                    f.write(np.ascontiguousarray(t.data).reshape(-1).view(np.uint8))
            f.truncate(len(head) + data_size)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
