"""Weight sources for the forward pass: a GGUF model's tensors dequantized to float32, optionally
with some tensors replaced in memory (a recipe's quantized-then-dequantized versions).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

from iqk_studio.gguf.types import by_id
from iqk_studio.quant import registry
from iqk_studio.quant.api import round_trip
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


class QuantizedWeights:
    """A recipe evaluated without writing a file: tensors named in `types` are quantized to that
    ggml type (llama-quantize spelling) from the base source's float32 values and dequantized
    back (quant.api.round_trip, in row blocks); `importance` maps names to imatrix vectors (n_in,
    or n_in * n_expert for 3-D expert tensors, already divided by ncall); uniform=True quantizes
    with w = 1 instead (importance ignored).

    A job calls prepare() and reports its steps, so a cancel lands within one row block; get()
    of a tensor not prepared does the same work at once (cached when keep is true)."""

    def __init__(self, base, types: Mapping[str, str], importance: Mapping | None = None,
                 keep: bool = True, threads: int = 1, uniform: bool = False):
        self.base = base
        self.uniform = uniform
        self.types = {n: t for n, t in types.items() if t.lower() != "f32"}
        self.importance = dict(importance or {})
        self.keep = keep
        self.threads = threads
        self._cache: dict[str, np.ndarray] = {}
        missing = sorted(set(types) - set(base.names()))
        if missing:
            raise WeightError(f"the recipe names tensor {missing[0]}, which the model lacks")

    def names(self) -> frozenset[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def get(self, name: str) -> np.ndarray:
        if name not in self.types:
            return self.base.get(name)
        w = self._cache.get(name)
        if w is None:
            for _ in self._round_trip(name):
                pass
            w = self._cache.pop(name)
            if self.keep:
                self._cache[name] = w
        return w

    def prepare(self) -> Iterator[tuple[int, int, str]]:
        """Quantize -> dequantize every replaced tensor not yet done, one row block per step:
        yields (rows done, rows total, tensor name) over all of them; results are kept."""
        todo = [n for n in self.types if n not in self._cache]
        total = sum(_rows(self.base.shape(n)) for n in todo)
        done = 0
        for name in todo:
            for rows in self._round_trip(name):
                yield done + rows, total, name
            done += _rows(self.base.shape(name))

    def _round_trip(self, name: str) -> Iterator[int]:
        """Fills self._cache[name] block by block, yielding the rows done; nothing is cached
        when the iteration stops early."""
        x = self.base.get(name)
        out = np.empty(x.shape, np.float32)
        rows = out.reshape(-1, x.shape[-1])
        try:
            for r0, r1, y in round_trip(x, self.types[name], self.importance.get(name),
                                        self.uniform, threads=self.threads):
                rows[r0:r1] = y
                yield r1
        except QuantError as e:
            raise WeightError(f"{name}: {e}") from None
        out.setflags(write=False)
        self._cache[name] = out


def _rows(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1])
