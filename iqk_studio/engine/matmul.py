"""Every matmul of the forward pass as ik_llama.cpp's CPU backend computes it: the activations
quantized to the weight type's vec_dot_type, the weights repacked at large batches (ik_paths.py),
then one float32 BLAS GEMM of the two dequantized operands. act_quant "none" multiplies the float
activations by the weights' own values (the engine's behaviour before activation quantization)."""

from __future__ import annotations

import os

import numpy as np

from iqk_studio.engine.actquant import quantize_acts
from iqk_studio.engine.ik_paths import path_of, repacks
from iqk_studio.engine.repack import kernel_values, repacked

ACT_QUANT_MODES = ("ik", "none")
KERNEL_VALUES_DIFFER = frozenset({"iq6_k"})  # kernels' values != dequantize_row (repack.py)


def default_ik_threads() -> int:
    """The thread count llama-perplexity would use here (it decides some repacks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Matmuls:
    """Weights of one source prepared for the forward pass: `linear` for 2-D weights, `expert`
    for one matrix of a 3-D expert stack. Float weights and act_quant "none" use the source's
    float32 values as they are."""

    def __init__(self, ws, act_quant: str = "ik", ik_threads: int | None = None):
        if act_quant not in ACT_QUANT_MODES:
            raise ValueError(f"act_quant must be one of {', '.join(ACT_QUANT_MODES)}, "
                             f"not {act_quant!r}")
        self.ws = ws
        self.mode = act_quant
        self.ik_threads = ik_threads or default_ik_threads()
        self._types: dict[str, str] = {}
        self._cache: dict[tuple[str, str], np.ndarray] = {}  # (name, "repacked"/"native")
        self._memo: list[tuple[np.ndarray, str, np.ndarray]] = []  # (x, act, d·q) last few

    # -- what a weight is ------------------------------------------------------------------
    def type_of(self, name: str) -> str:
        """ggml type name the tensor is evaluated as ("f32" for float overrides)."""
        t = self._types.get(name)
        if t is None:
            q = self.ws.quantized(name) if hasattr(self.ws, "quantized") else None
            t = self._types[name] = "f32" if q is None else q[0]
        return t

    def _path(self, name: str):
        return None if self.mode == "none" else path_of(self.type_of(name))

    def weight(self, name: str, ny: int, dense: bool = True) -> np.ndarray:
        """float32 weights (numpy shape) a batch of ny activation rows is multiplied by."""
        p = self._path(name)
        if p is None or p.repack == "same":
            return self.ws.get(name)
        if p.repack == "native" or not repacks(p, ny, self.ws.shape(name)[-2], self.ik_threads,
                                               dense):
            if self.type_of(name) not in KERNEL_VALUES_DIFFER:
                return self.ws.get(name)
            return self._prepared(name, "native", lambda t, raw, n: kernel_values(t, raw, n))
        return self._prepared(name, "repacked", lambda t, raw, n: repacked(t, p, raw, n))

    def _prepared(self, name: str, kind: str, make) -> np.ndarray:
        w = self._cache.get((name, kind))
        if w is None:
            t, raw = self.ws.quantized(name)
            shape = self.ws.shape(name)
            w = self._cache[(name, kind)] = make(t, raw, shape[-1]).reshape(shape)
        return w

    def acts(self, name: str, x: np.ndarray) -> np.ndarray:
        """The activations x (rows, n_in) as the matmul with `name` sees them."""
        p = self._path(name)
        if p is None:
            return x
        for xr, act, xq in self._memo:
            if xr is x and act == p.act:
                return xq
        xq = quantize_acts(x, p.act)
        self._memo = [(x, p.act, xq)] + self._memo[:3]
        return xq

    # -- products ----------------------------------------------------------------------------
    def linear(self, name: str, x: np.ndarray, b: np.ndarray | None = None,
               dense: bool = True) -> np.ndarray:
        """x (T, n_in) @ W(n_out, n_in)ᵀ (+ b) -> (T, n_out) float32."""
        y = np.matmul(self.acts(name, x), self.weight(name, x.shape[0], dense).T)
        if b is not None:
            y += b
        return y

    def expert(self, name: str, e: int, x: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """x (T, n_in) @ W[e][rows]ᵀ for expert e of a 3-D stack (T rows routed to it)."""
        w = self.weight(name, x.shape[0], dense=False)[e]
        if rows is not None:
            w = w[rows]
        return np.matmul(self.acts(name, x), w.T)

    def forget_acts(self) -> None:
        """Drop the memo of quantized activations (call between layers)."""
        self._memo = []
