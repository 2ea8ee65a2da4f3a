"""Weight sources for the forward pass: a GGUF model's tensors dequantized to float32, optionally
with some tensors replaced in memory (a recipe's quantized-then-dequantized versions).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from iqk_studio.gguf.types import by_id, by_name
from iqk_studio.quant import registry
from iqk_studio.quant.api import dequantize, quantize_rows
from iqk_studio.quant.errors import QuantError

_ROWS_PER_BLOCK = 8192  # dequantize big tensors in row blocks to bound temporary memory


class WeightError(ValueError):
    """A tensor cannot be provided (missing, or its type cannot be dequantized)."""


def _gguf_fallback(type_id: int, name: str):
    """gguf-py's numpy dequantizer for a mainline type (same id and name), or None."""
    try:
        import gguf
        from gguf import quants
        qt = gguf.GGMLQuantizationType(type_id)
    except (ImportError, ValueError):
        return None
    if qt.name.lower() != name.lower():
        return None
    try:
        quants._type_traits[qt]  # noqa: B018 - raises KeyError when gguf-py lacks this type
    except (KeyError, AttributeError):
        return None
    return lambda raw, n: quants.dequantize(raw, qt).reshape(raw.shape[0], n)


def dequantizer(type_id: int):
    """fn(raw uint8 (rows, row_bytes), n) -> float32 (rows, n) for a ggml type id: our kernels
    (quant/registry.py, f32/f16/bf16 included), else gguf-py's."""
    t = by_id(type_id)
    fn = registry.dequantizers().get(t.name)
    if fn is not None:
        return fn
    fb = _gguf_fallback(type_id, t.name)
    if fb is None:
        raise WeightError(f"cannot dequantize tensors of type {t.name}")
    return fb


def dequantize_tensor(raw: np.ndarray, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 numpy array of a tensor with ggml shape (ne0, ne1, ...): numpy shape reversed."""
    n = int(shape[0])
    rows = math.prod(int(d) for d in shape[1:])
    raw = np.asarray(raw).view(np.uint8).reshape(rows, -1)
    if by_id(type_id).name == "f32":
        out = raw.view(np.float32)  # zero-copy view of the (read-only) mapped file
    else:
        fn = dequantizer(type_id)
        out = np.empty((rows, n), dtype=np.float32)
        for r0 in range(0, rows, _ROWS_PER_BLOCK):
            r1 = min(rows, r0 + _ROWS_PER_BLOCK)
            out[r0:r1] = fn(raw[r0:r1], n)
    return out.reshape(tuple(int(d) for d in reversed(shape)))


class GGUFWeights:
    """Tensors of an open GGUF model (iqk_studio.gguf.reader.GGUFModel or anything with
    `.tensors` name -> info having `.shape`/`.type_id`, and `.tensor_data(name)`), dequantized to
    float32 on first use and kept (a 270M model is ~1 GB of float32)."""

    def __init__(self, model, keep: bool = True):
        self.model = model
        self.keep = keep
        self._cache: dict[str, np.ndarray] = {}
        self._names = frozenset(model.tensors)

    def names(self) -> frozenset[str]:
        return self._names

    def shape(self, name: str) -> tuple[int, ...]:
        """numpy shape (reversed ggml shape)."""
        return tuple(int(d) for d in reversed(self._info(name).shape))

    def _info(self, name: str):
        info = self.model.tensors.get(name)
        if info is None:
            raise WeightError(f"tensor {name} is missing from the model")
        return info

    def get(self, name: str) -> np.ndarray:
        w = self._cache.get(name)
        if w is None:
            info = self._info(name)
            w = dequantize_tensor(self.model.tensor_data(name), info.type_id, tuple(info.shape))
            if self.keep:
                self._cache[name] = w
        return w

    def quantized(self, name: str) -> tuple[str, np.ndarray]:
        """(type name, the stored bytes as (rows, row_bytes) uint8), float types included."""
        info = self._info(name)
        raw = np.asarray(self.model.tensor_data(name)).view(np.uint8)
        rows = int(np.prod(info.shape[1:], dtype=np.int64)) if len(info.shape) > 1 else 1
        return by_id(info.type_id).name, raw.reshape(rows, -1)


class OverrideWeights:
    """A base source with some tensors replaced by given float32 arrays (numpy shape)."""

    def __init__(self, base, overrides: Mapping[str, np.ndarray]):
        self.base = base
        self.overrides = dict(overrides)
        for name, arr in self.overrides.items():
            if name in base.names() and tuple(arr.shape) != base.shape(name):
                raise WeightError(f"{name}: replacement shape {arr.shape} != {base.shape(name)}")
        self._names = frozenset(base.names() | set(self.overrides))

    def names(self) -> frozenset[str]:
        return self._names

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.overrides:
            return tuple(self.overrides[name].shape)
        return self.base.shape(name)

    def get(self, name: str) -> np.ndarray:
        w = self.overrides.get(name)
        if w is not None:
            return np.ascontiguousarray(w, dtype=np.float32)
        return self.base.get(name)

    def quantized(self, name: str):
        """As the base's, or None for a replaced tensor (float32 values)."""
        return None if name in self.overrides else self.base.quantized(name)


class QuantizedWeights:
    """A recipe evaluated without writing a file: tensors named in `types` are quantized to that
    ggml type (llama-quantize spelling) from the base source's float32 values, in row blocks
    (quant.api.quantize_rows), exactly as the quantize job writes them; `quantized(name)` gives
    those bytes (the engine's activation-quantized matmuls read them) and `get(name)` their
    dequantized float32 values. `importance` maps names to imatrix vectors (n_in, or
    n_in * n_expert for 3-D expert tensors, already divided by ncall); uniform=True quantizes
    with w = 1 instead (importance ignored).

    A job calls prepare() and reports its steps, so a cancel lands within one row block; a tensor
    not prepared is quantized at once on first use (kept when keep is true)."""

    def __init__(self, base, types: Mapping[str, str], importance: Mapping | None = None,
                 keep: bool = True, threads: int = 1, uniform: bool = False):
        self.base = base
        self.uniform = uniform
        self.types = {n: t for n, t in types.items() if t.lower() != "f32"}
        self.importance = dict(importance or {})
        self.keep = keep
        self.threads = threads
        self._cache: dict[str, np.ndarray] = {}  # dequantized float32 per tensor
        self._raw: dict[str, np.ndarray] = {}  # quantized bytes (rows, row_bytes) per tensor
        missing = sorted(set(types) - set(base.names()))
        if missing:
            raise WeightError(f"the recipe names tensor {missing[0]}, which the model lacks")

    def names(self) -> frozenset[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def get(self, name: str) -> np.ndarray:
        qtype = self.types.get(name)
        if qtype is None:
            return self.base.get(name)
        w = self._cache.get(name)
        if w is None:
            _, raw = self.quantized(name)
            shape = self.base.shape(name)
            try:
                w = dequantize(raw, qtype, shape[-1]).reshape(shape)
            except QuantError as e:
                raise WeightError(f"{name}: {e}") from None
            w.setflags(write=False)
            if self.keep:
                self._cache[name] = w
        return w

    def quantized(self, name: str) -> tuple[str, np.ndarray]:
        """(type name, the quantized bytes (rows, row_bytes)) as the recipe stores the tensor."""
        qtype = self.types.get(name)
        if qtype is None:
            return self.base.quantized(name)
        raw = self._raw.get(name)
        if raw is None:
            for _ in self._quantize(name):
                pass
            raw = self._raw[name] if self.keep else self._raw.pop(name)
        return qtype, raw

    def prepare(self) -> Iterator[tuple[int, int, str]]:
        """Quantize every replaced tensor not yet done, one row block per step: yields (rows
        done, rows total, tensor name) over all of them; the bytes are kept."""
        todo = [n for n in self.types if n not in self._raw]
        total = sum(_rows(self.base.shape(n)) for n in todo)
        done = 0
        for name in todo:
            for rows in self._quantize(name):
                yield done + rows, total, name
            done += _rows(self.base.shape(name))

    def _quantize(self, name: str) -> Iterator[int]:
        """Fills self._raw[name] block by block (quant.api.quantize_rows), yielding the rows
        done; nothing is kept when the iteration stops early."""
        x = self.base.get(name)
        qtype, ne0 = self.types[name], x.shape[-1]
        try:
            out = np.empty((x.size // ne0, by_name(qtype).row_bytes(ne0)), np.uint8)
            for r0, r1, q in quantize_rows(x, qtype, self.importance.get(name), self.uniform,
                                           self.threads):
                out[r0:r1] = q
                yield r1
        except (QuantError, KeyError) as e:
            raise WeightError(f"{name}: {e.args[0] if e.args else e}") from None
        self._raw[name] = out


def _rows(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1])
