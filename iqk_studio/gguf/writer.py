"""Streaming GGUF v3 writer: header and tensor infos first, then tensor data as it is produced,
into a temp file that is renamed into place only when every tensor has been written.

File layout (little-endian): "GGUF" | u32 version=3 | u64 n_tensors | u64 n_kv | kv pairs |
tensor infos (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset) |
zero padding to `alignment` | data (each tensor starts at a multiple of `alignment`).
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqk_studio.gguf.types import QuantType, by_id
from iqk_studio.gguf.values import ValueType, encode_kv, encode_string

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class KV:
    """One metadata pair; vtype/item_type None means inferred from the value."""

    key: str
    value: object
    vtype: ValueType | None = None
    item_type: ValueType | None = None


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: shape in ggml order (ne0 first) and ggml type id."""

    name: str
    shape: tuple[int, ...]
    type_id: int

    @property
    def qtype(self) -> QuantType:
        return by_id(self.type_id)

    @property
    def nbytes(self) -> int:
        return self.qtype.nbytes(tuple(self.shape))


def set_kv(kvs: Sequence[KV], updates: Iterable[KV] = (), remove: Iterable[str] = ()) -> list[KV]:
    """gguf_set_val / gguf_remove_key semantics: an existing key keeps its position, a new key is
    appended, removed keys disappear."""
    gone = set(remove)
    out = [kv for kv in kvs if kv.key not in gone]
    pos = {kv.key: i for i, kv in enumerate(out)}
    for kv in updates:
        if kv.key in pos:
            out[pos[kv.key]] = kv
        else:
            pos[kv.key] = len(out)
            out.append(kv)
    return out


def _pad(n: int, alignment: int) -> int:
    return (alignment - n % alignment) % alignment


# ------------------------------------------------------------------------------- temp files

def temp_path(path) -> Path:
    """Where `path` is written before its rename: `.NAME.PID.tmp` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.tmp"


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: never guess, keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


def remove_stale_temps(path) -> list[Path]:
    """Delete the temp files of `path` left by processes that no longer run (a kill -9, a
    crash, a power cut); a live process's temp file is never touched. Returns what was removed."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        found = list(path.parent.glob(glob.escape(prefix) + "*.tmp"))
    except OSError:
        return removed
    for p in found:
        pid = p.name[len(prefix):-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


class GGUFWriter:
    """Write one GGUF file. Use as a context manager: leaving the block without finish() (an
    exception, a cancelled generator) removes the temp file and leaves `path` untouched."""

    def __init__(self, path, kvs: Sequence[KV], tensors: Sequence[TensorSpec],
                 alignment: int | None = None):
        self.path = Path(path)
        self.kvs = list(kvs)
        if alignment is None:  # general.alignment when the metadata has it, as gguf.c does
            meta = {kv.key: kv.value for kv in self.kvs}
            alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
        self.alignment = int(alignment)
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.tensors = list(tensors)
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names")
        keys = [kv.key for kv in self.kvs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate metadata keys")
        self._index = 0  # tensor being written
        self._written = 0  # bytes of that tensor written so far
        self._fh = None
        self._tmp: Path | None = None
        self.finished = False

    # -- opening: header, metadata, tensor infos

    def _header(self) -> bytes:
        parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kvs))]
        for kv in self.kvs:
            try:
                parts.append(encode_kv(kv.key, kv.value, kv.vtype, kv.item_type))
            except (ValueError, TypeError, OverflowError) as e:
                raise ValueError(f"metadata {kv.key}: {e}") from None
        offset = 0
        for t in self.tensors:
            if not t.shape or len(t.shape) > 4:
                raise ValueError(f"{t.name}: GGUF tensors have 1 to 4 dimensions, got {t.shape}")
            parts += [encode_string(t.name), struct.pack("<I", len(t.shape)),
                      struct.pack(f"<{len(t.shape)}Q", *t.shape), struct.pack("<IQ", t.type_id,
                                                                               offset)]
            offset += t.nbytes + _pad(t.nbytes, self.alignment)
        head = b"".join(parts)
        return head + b"\0" * _pad(len(head), self.alignment)

    def open(self) -> GGUFWriter:
        if self._fh is not None:
            return self
        head = self._header()  # encode before touching the disk: bad metadata never makes a file
        folder = self.path.parent
        if not folder.is_dir():
            raise OSError(f"output directory {str(folder)!r} does not exist")
        if self.path.is_dir():
            raise OSError(f"output path {str(self.path)!r} is a directory")
        remove_stale_temps(self.path)
        tmp = temp_path(self.path)
        self._fh = open(tmp, "wb")
        self._tmp = tmp  # only once it exists: a failed open leaves nothing to clean up
        try:
            self._fh.write(head)
        except BaseException:
            self.abort()
            raise
        return self

    # -- data

    @property
    def current(self) -> TensorSpec | None:
        """The tensor whose bytes come next (None when all are written)."""
        return self.tensors[self._index] if self._index < len(self.tensors) else None

    def write(self, name: str, data) -> None:
        """Append bytes of tensor `name` (the current one); a tensor may come in several parts
        (row blocks). Padding is added when its last byte arrives."""
        if self._fh is None:
            raise RuntimeError("writer is not open")
        t = self.current
        if t is None or t.name != name:
            expected = t.name if t else "nothing"
            raise ValueError(f"tensor {name!r} written out of order (expected {expected})")
        buf = memoryview(np.ascontiguousarray(data)).cast("B")
        if self._written + buf.nbytes > t.nbytes:
            raise ValueError(f"{name}: {self._written + buf.nbytes} bytes for a tensor of "
                             f"{t.nbytes} bytes ({t.qtype.name} {tuple(t.shape)})")
        self._fh.write(buf)
        self._written += buf.nbytes
        if self._written == t.nbytes:
            self._fh.write(b"\0" * _pad(t.nbytes, self.alignment))
            self._index += 1
            self._written = 0

    def write_tensor(self, name: str, data) -> None:
        """Write a whole tensor at once (its byte count must match exactly)."""
        t = self.current
        n = np.asarray(data).nbytes
        if t is not None and t.name == name and n != t.nbytes:
            raise ValueError(f"{name}: got {n} bytes, a {t.qtype.name} tensor of shape "
                             f"{tuple(t.shape)} has {t.nbytes}")
        self.write(name, data)

    # -- closing

    def finish(self) -> Path:
        """Flush, check that every tensor was written, and rename the temp file into place."""
        if self._fh is None:
            raise RuntimeError("writer is not open")
        if self.current is not None:
            missing = len(self.tensors) - self._index
            self.abort()
            nxt = self.tensors[-missing].name
            raise ValueError(f"{missing} tensors were not written (next: {nxt})")
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.finished = True
        return self.path

    def abort(self) -> None:
        """Close and delete the temp file; the destination is never touched."""
        if self._fh is not None:
            try:
                self._fh.close()
            finally:
                self._fh = None
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except OSError:  # already gone, or the folder turned read-only: nothing to do
                pass
            self._tmp = None

    def __enter__(self) -> GGUFWriter:
        return self.open()

    def __exit__(self, *exc) -> None:
        if not self.finished:
            self.abort()

    def __del__(self):
        if getattr(self, "_tmp", None) is not None and not self.finished:
            try:
                self.abort()
            except Exception:  # never a traceback from a destructor
                pass


def write_gguf(path, kvs: Sequence[KV], specs: Sequence[TensorSpec], data: Iterable,
               alignment: int | None = None) -> Path:
    """Write a whole file; `data` yields each tensor's bytes in the order of `specs` (it may be a
    generator, so only one tensor needs to be in memory at a time)."""
    with GGUFWriter(path, kvs, specs, alignment) as w:
        for spec, buf in zip(specs, data, strict=True):
            w.write_tensor(spec.name, buf)
        return w.finish()


def model_kvs(model) -> list[KV]:
    """Metadata of an open GGUFModel as typed KV records, in file order."""
    types = getattr(model, "metadata_types", {})
    out = []
    for key, value in model.metadata.items():
        vt, it = types.get(key, (None, None))
        out.append(KV(key, value, vt, it))
    return out
