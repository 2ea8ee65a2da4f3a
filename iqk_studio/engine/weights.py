"""Weight sources for the forward pass: a GGUF model's tensors dequantized to float32, optionally
with some tensors replaced in memory (a recipe's quantized-then-dequantized versions).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from iqk_studio.quant import registry
from iqk_studio.quant.types import by_id

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
    """fn(raw uint8 (rows, row_bytes), n) -> float32 (rows, n) for a ggml type id."""
    t = by_id(type_id)
    if t.name == "f32":
        return lambda raw, n: raw.view(np.float32).reshape(raw.shape[0], n)
    if t.name == "f16":
        return lambda raw, n: raw.view(np.float16).reshape(raw.shape[0], n).astype(np.float32)
    if t.name == "bf16":
        return lambda raw, n: (raw.view(np.uint16).astype(np.uint32) << 16).view(
            np.float32).reshape(raw.shape[0], n)
    fn = registry.dequantizers().get(t.name)
    if fn is not None:
        return lambda raw, n: fn(np.ascontiguousarray(raw), n)
    fb = _gguf_fallback(type_id, t.name)
    if fb is None:
        raise WeightError(f"cannot dequantize tensors of type {t.name}")
    return fb


def dequantize_tensor(raw: np.ndarray, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """float32 numpy array of a tensor with ggml shape (ne0, ne1, ...): numpy shape reversed."""
    n = int(shape[0])
    rows = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    raw = np.asarray(raw).view(np.uint8).reshape(rows, -1)
    fn = dequantizer(type_id)
    if by_id(type_id).name == "f32":
        out = fn(raw, n)  # zero-copy view of the (read-only) mapped file
    else:
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
    ggml type (llama-quantize spelling) from the base source's float32 values and dequantized
    back, lazily on first use; `importance` maps names to imatrix vectors (n_in, or
    n_in * n_expert for 3-D expert tensors, already divided by ncall)."""

    def __init__(self, base, types: Mapping[str, str], importance: Mapping | None = None,
                 keep: bool = True):
        self.base = base
        self.types = dict(types)
        self.importance = dict(importance or {})
        self.keep = keep
        self._cache: dict[str, np.ndarray] = {}
        self._raw: dict[str, np.ndarray] = {}  # quantized bytes (rows, row_bytes) per tensor
        missing = sorted(set(self.types) - set(base.names()))
        if missing:
            raise WeightError(f"the recipe names tensor {missing[0]}, which the model lacks")

    def names(self) -> frozenset[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def get(self, name: str) -> np.ndarray:
        qtype = self.types.get(name)
        if qtype is None or qtype.lower() == "f32":
            return self.base.get(name)
        w = self._cache.get(name)
        if w is None:
            w = self._round_trip(name, qtype)
            if self.keep:
                self._cache[name] = w
        return w

    def quantized(self, name: str) -> tuple[str, np.ndarray]:
        """(type name, the quantized bytes (rows, row_bytes)) as the recipe stores the tensor."""
        qtype = self.types.get(name)
        if qtype is None or qtype.lower() == "f32":
            return self.base.quantized(name)
        raw = self._raw.get(name)
        if raw is None:
            raw = self._quantize(name, qtype)
            if self.keep:
                self._raw[name] = raw
        return qtype, raw

    def _quantize(self, name: str, qtype: str) -> np.ndarray:
        from iqk_studio.quant.api import quantize

        x = self.base.get(name)
        n = x.shape[-1]
        mats = x.reshape(-1, *x.shape[-2:]) if x.ndim >= 2 else x.reshape(1, 1, n)
        imp = self.importance.get(name)
        if imp is not None:
            imp = np.asarray(imp, np.float32).reshape(-1, n)
            if imp.shape[0] not in (1, mats.shape[0]):
                raise WeightError(f"{name}: importance has {imp.size} values for rows of {n}")
        parts = []
        for e in range(mats.shape[0]):
            qw = None if imp is None else imp[min(e, imp.shape[0] - 1)]
            parts.append(quantize(mats[e], qtype, qw))
        return np.concatenate(parts, axis=0)

    def _round_trip(self, name: str, qtype: str) -> np.ndarray:
        from iqk_studio.quant.api import dequantize

        x_shape = self.base.shape(name)
        _, raw = self.quantized(name)
        return dequantize(raw, qtype, x_shape[-1]).reshape(x_shape)
