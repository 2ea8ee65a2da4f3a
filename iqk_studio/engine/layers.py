"""Building blocks of the forward pass (float32 numpy): RMSNorm, RoPE, causal attention, GLU acts.

Math as ggml computes it (shared/docs/perplexity-imatrix-tokenizer.md §5.1).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_SQRT_2_OVER_PI = np.float32(0.79788456080286535587989211986876)
_GELU_COEF_A = np.float32(0.044715)


def rms_norm(x: np.ndarray, w: np.ndarray | None, eps: float) -> np.ndarray:
    """x / sqrt(mean(x²) + eps) * w over the last axis; float32 out (a new array)."""
    ms = np.einsum("...i,...i->...", x, x, dtype=np.float64) / x.shape[-1]
    scale = (1.0 / np.sqrt(ms + eps)).astype(np.float32)
    y = x * scale[..., None]
    if w is not None:
        y *= w
    return y


@lru_cache(maxsize=16)
def rope_table(n_pos: int, n_rot: int, base: float, freq_scale: float, attn_factor: float,
               freq_factors: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (n_pos, n_rot/2) float32; θ_k = p·freq_scale·base^(-2k/n_rot)/ff_k, the power
    accumulated by repeated float32 multiplication as ggml's rope cache does."""
    theta_scale = np.float32(math.pow(base, -2.0 / n_rot))
    theta = np.arange(n_pos, dtype=np.float32)
    half = n_rot // 2
    cols = np.empty((n_pos, half), dtype=np.float32)
    for k in range(half):
        ff = np.float32(freq_factors[k]) if freq_factors is not None else np.float32(1.0)
        cols[:, k] = np.float32(freq_scale) * (theta / ff)
        theta = theta * theta_scale
    cos = (np.cos(cols) * np.float32(attn_factor)).astype(np.float32)
    sin = (np.sin(cols) * np.float32(attn_factor)).astype(np.float32)
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> None:
    """Rotate x (T, n_heads, head_dim) in place; cos/sin (T, n_rot/2)."""
    half = cos.shape[1]
    c = cos[:, None, :]
    s = sin[:, None, :]
    if neox:
        x0 = x[..., :half].copy()
        x1 = x[..., half:2 * half].copy()
        x[..., :half] = x0 * c - x1 * s
        x[..., half:2 * half] = x0 * s + x1 * c
    else:
        x0 = x[..., 0:2 * half:2].copy()
        x1 = x[..., 1:2 * half:2].copy()
        x[..., 0:2 * half:2] = x0 * c - x1 * s
        x[..., 1:2 * half:2] = x0 * s + x1 * c


@lru_cache(maxsize=8)
def attn_mask(n_q: int, q0: int, n_k: int, n_swa: int) -> np.ndarray:
    """Additive mask (n_q, n_k): query i sits at position q0+i; -inf where key k is in the future
    or, with a sliding window, where q - k >= n_swa."""
    q = np.arange(q0, q0 + n_q)[:, None]
    k = np.arange(n_k)[None, :]
    bad = k > q
    if n_swa > 0:
        bad |= (q - k) >= n_swa
    m = np.where(bad, np.float32(-np.inf), np.float32(0.0)).astype(np.float32)
    m.setflags(write=False)
    return m


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, kq_scale: float, q0: int,
              n_swa: int, block: int = 64) -> np.ndarray:
    """Causal multi-head attention with GQA.

    q (Tq, n_head, hd) for positions q0..q0+Tq-1; k (T, n_head_kv, hd); v (T, n_head_kv, hd_v).
    Returns (Tq, n_head * hd_v). Query head h uses KV head h // (n_head / n_head_kv). Blocks of
    `block` queries run on the engine's threads, each against the keys it can see.
    """
    from iqk_studio.engine.threads import pmap

    tq, n_head, hd = q.shape
    t, n_kv, hd_v = v.shape
    g = n_head // n_kv
    kh = np.ascontiguousarray(k.transpose(1, 0, 2))  # (n_kv, T, hd)
    vh = np.ascontiguousarray(v.transpose(1, 0, 2))  # (n_kv, T, hd_v)
    out = np.empty((tq, n_head * hd_v), np.float32)

    def part(i0: int) -> None:
        i1 = min(tq, i0 + block)
        nq = i1 - i0
        lo = max(0, q0 + i0 - n_swa + 1) if n_swa > 0 else 0
        hi = min(t, q0 + i1)  # keys lo..hi-1 (later ones are in the future of every query)
        qh = q[i0:i1].reshape(nq, n_kv, g, hd).transpose(1, 2, 0, 3).reshape(n_kv, g * nq, hd)
        s = np.matmul(qh, kh[:, lo:hi].transpose(0, 2, 1))  # (n_kv, g*nq, hi-lo)
        s *= np.float32(kq_scale)
        s = s.reshape(n_kv, g, nq, hi - lo)
        s += attn_mask(nq, q0 + i0 - lo, hi - lo, n_swa)
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True, dtype=np.float32)
        o = np.matmul(s.reshape(n_kv, g * nq, hi - lo), vh[:, lo:hi])  # (n_kv, g*nq, hd_v)
        out[i0:i1] = o.reshape(n_kv, g, nq, hd_v).transpose(2, 0, 1, 3).reshape(nq, -1)

    pmap(part, list(range(0, tq, block)))
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))), in place; returns x."""
    t = x * x
    t *= _GELU_COEF_A
    t += np.float32(1.0)
    t *= x
    t *= _SQRT_2_OVER_PI
    np.tanh(t, out=t)
    t += np.float32(1.0)
    x *= np.float32(0.5)
    x *= t
    return x


def silu(x: np.ndarray) -> np.ndarray:
    """x / (1 + exp(-x)), in place; returns x."""
    t = np.negative(x)
    np.exp(t, out=t)
    t += np.float32(1.0)
    x /= t
    return x


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x (T, n_in) @ w(n_out, n_in)ᵀ (+ b): (T, n_out) float32 via BLAS."""
    y = np.matmul(x, w.T)
    if b is not None:
        y += b
    return y
