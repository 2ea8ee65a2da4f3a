"""Every matmul of the forward pass as ik_llama.cpp's CPU backend computes it: the activations
quantized to the weight type's vec_dot_type, the weights repacked at large batches (ik_paths.py),
then one float32 BLAS GEMM of the two dequantized operands. act_quant "none" multiplies the float
activations by the weights' own values (the engine's behaviour before activation quantization)."""

from __future__ import annotations

import mmap
import os

import numpy as np

from iqk_studio.engine.actquant import quantize_acts
from iqk_studio.engine.ik_paths import path_of, repacks
from iqk_studio.engine.repack import kernel_values, repacked
from iqk_studio.engine.threads import matmul_t

ACT_QUANT_MODES = ("ik", "none")


def default_ik_threads() -> int:
    """The thread count llama-perplexity would use here (it decides some repacks)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def release_pages(raw: np.ndarray) -> None:
    """Drop the resident pages of the read-only file mapping behind `raw` (a GGUF tensor's bytes
    already converted to float32): they stay in the page cache and fault back in when read
    again, and stop counting in this process's memory. No-op for arrays not backed by a file."""
    base = raw
    while isinstance(base, np.ndarray | memoryview):
        base = base.obj if isinstance(base, memoryview) else base.base
    if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED") or base.closed:
        return
    start = np.frombuffer(base, np.uint8, 1).__array_interface__["data"][0]
    off = raw.__array_interface__["data"][0] - start
    page = mmap.PAGESIZE
    lo, hi = -(-off // page) * page, (off + raw.nbytes) // page * page
    if hi > lo:
        try:
            base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            pass


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
        self._cache: dict[tuple, np.ndarray] = {}  # (name or names, choice(s)) -> float32
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

    def _choice(self, name: str, ny: int, dense: bool) -> str:
        """"float" (the source's float32 values), "native" (the stored type's values as ik's
        kernels see them) or "repacked" (ik_paths.py)."""
        p = self._path(name)
        if p is None:
            return "float"
        shape = self.ws.shape(name)
        if p.repack in ("same", "native") or not repacks(p, ny, shape[-2], self.ik_threads,
                                                        dense):
            return "native"
        return "repacked"

    def _make(self, name: str, choice: str) -> np.ndarray:
        if choice == "float":
            return self.ws.get(name)
        t, raw = self.ws.quantized(name)
        shape = self.ws.shape(name)
        if choice == "native":
            w = kernel_values(t, raw, shape[-1])
        else:
            w = repacked(t, self._path(name), raw, shape[-1])
        release_pages(raw)
        return w.reshape(shape)

    def weight(self, name: str, ny: int, dense: bool = True) -> np.ndarray:
        """float32 weights (numpy shape) a batch of ny activation rows is multiplied by; built
        from the stored bytes and kept here (the source's float32 cache stays empty)."""
        choice = self._choice(name, ny, dense)
        if choice == "float":
            return self.ws.get(name)
        w = self._cache.get((name, choice))
        if w is None:
            w = self._cache[(name, choice)] = self._make(name, choice)
        return w

    def linears(self, names: list[str], x: np.ndarray, ny: int | None = None,
                dense: bool = True) -> list[np.ndarray]:
        """x @ Wᵀ for several 2-D weights sharing the input: one GEMM over their concatenated
        rows when they are all quantized with one activation type (fewer, larger BLAS calls)."""
        ny = ny or x.shape[0]
        paths = [self._path(n) for n in names]
        if any(p is None for p in paths) or len({p.act for p in paths}) > 1:
            return [matmul_t(self.acts(n, x), self.weight(n, ny, dense)) for n in names]
        choices = tuple(self._choice(n, ny, dense) for n in names)
        key = (tuple(names), choices)
        w = self._cache.get(key)
        if w is None:
            w = self._cache[key] = np.concatenate(
                [self._cache.get((n, c), None) if (n, c) in self._cache else self._make(n, c)
                 for n, c in zip(names, choices)])
        y = matmul_t(self.acts(names[0], x), w)
        cuts = np.cumsum([self.ws.shape(n)[-2] for n in names])[:-1]
        return np.split(y, cuts, axis=1)

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
        y = matmul_t(self.acts(name, x), self.weight(name, x.shape[0], dense))
        if b is not None:
            y += b
        return y

    def expert(self, name: str, e: int, x: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """x (T, n_in) @ W[e][rows]ᵀ for expert e of a 3-D stack (T rows routed to it)."""
        w = self.weight(name, x.shape[0], dense=False)[e]
        if rows is not None:
            w = w[rows]
        return matmul_t(self.acts(name, x), w)

    def forget_acts(self) -> None:
        """Drop the memo of quantized activations (call between layers)."""
        self._memo = []
