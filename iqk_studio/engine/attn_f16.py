"""ggml's generic CPU flash attention (ggml_compute_forward_flash_attn_ext_f16), which ik_llama.cpp
takes for head sizes its own kernels lack (iqk_flash_attn_impl has 64, 96, 128, 192, 256 and a few
asymmetric pairs): Q rounded to f16, K·Q summed in double, online softmax with the V accumulator
kept in f16 (rounded after every key), as with the default f16 KV cache."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from iqk_studio._parallel import KERNEL_LOCK

IQK_FA_HEAD_SIZES = frozenset({(64, 64), (96, 96), (128, 128), (192, 128), (192, 192),
                               (256, 256), (320, 256), (512, 512), (576, 512)})


@njit(nogil=True, cache=True, inline="always")
def f16r(x):
    """float32 -> the nearest float16 value (ties to even; overflow -> inf), as float32."""
    x = np.float32(x)
    a = abs(x)
    if a < np.float32(6.103515625e-05):  # f16 subnormals: a fixed step of 2**-24
        return np.float32(np.rint(x * np.float32(16777216.0)) * np.float32(5.9604645e-08))
    u = np.int64(x.view(np.int32))
    u = (u + 0x0FFF + ((u >> 13) & 1)) & -8192
    r = np.int32(u).view(np.float32)
    if abs(r) > np.float32(65504.0) and a == a:
        r = np.float32(np.inf) if x > 0 else np.float32(-np.inf)
    return r


@njit(nogil=True, cache=True, parallel=True)
def _fa_f16(out, q, k, v, scale, q0, n_swa, group):
    # q: f32 (Tq, n_head, Dk) | k: f32 (T, n_kv, Dk), v: f32 (T, n_kv, Dv), both f16-valued
    # out: f32 (Tq, n_head, Dv); query i sits at position q0 + i; head h reads KV head h // group
    tq, n_head, dk = q.shape
    dv = v.shape[2]
    for idx in prange(tq * n_head):
        i = idx // n_head
        h = idx % n_head
        kv = h // group
        pos = q0 + i
        qh = np.empty(dk, np.float32)
        for d in range(dk):
            qh[d] = f16r(q[i, h, d])
        acc = np.zeros(dv, np.float32)
        mx = np.float32(-np.inf)
        ssum = np.float32(0.0)
        for j in range(pos + 1):
            if n_swa > 0 and pos - j >= n_swa:
                continue
            dot = 0.0
            for d in range(dk):
                dot += np.float64(qh[d] * k[j, kv, d])  # f16 x f16 is exact in float32
            s = np.float32(np.float32(dot) * scale)
            ms = np.float32(1.0)
            vs = np.float32(1.0)
            if s > mx:
                ms = np.float32(np.exp(np.float32(mx - s)))
                mx = s
                for d in range(dv):
                    acc[d] = f16r(acc[d] * ms)
            else:
                vs = np.float32(np.exp(np.float32(s - mx)))
            for d in range(dv):  # fma in float32, then stored as f16
                acc[d] = f16r(np.float32(np.float64(acc[d]) + np.float64(v[j, kv, d]) * vs))
            ssum = np.float32(ssum * ms) + vs
        inv = np.float32(1.0) / ssum if ssum != 0 else np.float32(0.0)
        for d in range(dv):
            out[i, h, d] = acc[d] * inv


def attention_f16(q: np.ndarray, k: np.ndarray, v: np.ndarray, kq_scale: float, q0: int,
                  n_swa: int) -> np.ndarray:
    """As layers.attention (same shapes), computed as ggml's generic f16 flash attention; k and v
    must hold f16 values (the KV cache)."""
    tq, n_head, _ = q.shape
    g = n_head // k.shape[1]
    out = np.empty((tq, n_head, v.shape[2]), np.float32)
    with KERNEL_LOCK:
        _fa_f16(out, np.ascontiguousarray(q, np.float32), np.ascontiguousarray(k, np.float32),
                np.ascontiguousarray(v, np.float32), np.float32(kq_scale), q0, n_swa, g)
    return out.reshape(tq, n_head * v.shape[2])
