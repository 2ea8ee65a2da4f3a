"""CPU forward pass of llama / qwen2 / qwen3 / qwen3moe / gemma3 over one window of tokens (no KV
cache), one layer per call so a job can report progress and cancel between layers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator

import numpy as np

from iqk_studio.engine import layers as L
from iqk_studio.engine.attn_f16 import IQK_FA_HEAD_SIZES, attention_f16
from iqk_studio.engine.matmul import Matmuls
from iqk_studio.engine.model import ModelConfig, ModelError, config_from_metadata
from iqk_studio.engine.moe import moe_ffn
from iqk_studio.engine.threads import matmul_t, pmap
from iqk_studio.engine.weights import GGUFWeights

# observer(weight_name, activations (rows, n_in), expert_id or None): sees every matmul's input
Observer = Callable[..., None]


def _required(cfg: ModelConfig, il: int) -> list[str]:
    p = f"blk.{il}."
    names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm"]
    if cfg.qk_norm:
        names += ["attn_q_norm", "attn_k_norm"]
    if cfg.post_norms:
        names += ["post_attention_norm", "post_ffw_norm"]
    if cfg.n_expert:
        names += ["ffn_gate_inp", "ffn_down_exps"]
    else:
        names += ["ffn_gate", "ffn_up", "ffn_down"]
    out = [p + n + ".weight" for n in names]
    if cfg.arch == "qwen2":
        out += [p + n + ".bias" for n in ("attn_q", "attn_k", "attn_v")]
    return out


class Forward:
    """The model as a sequence of steps over a window: embed -> layer 0..n_layer-1 -> logits.
    act_quant "ik" multiplies as ik_llama.cpp's CPU backend does (engine/matmul.py), with
    ik_threads the llama-perplexity thread count it emulates; "none" in float32."""

    def __init__(self, cfg: ModelConfig, weights, observer: Observer | None = None,
                 kv_f16: bool = True, act_quant: str = "ik", ik_threads: int | None = None):
        self.cfg = cfg
        self.ws = weights
        self.mm = Matmuls(weights, act_quant, ik_threads)
        self.observer = observer
        self.kv_f16 = kv_f16  # round K and V to f16 as the reference's default KV cache does
        names = weights.names()
        missing = [n for il in range(cfg.n_layer) for n in _required(cfg, il) if n not in names]
        missing += [n for n in ("token_embd.weight", "output_norm.weight") if n not in names]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ModelError(f"{cfg.arch} model lacks tensor {missing[0]}{more}")
        self._output_name = "token_embd.weight" if cfg.tied_output else "output.weight"
        if "rope_freqs.weight" in names:
            ff = weights.get("rope_freqs.weight").reshape(-1)
            self._freq_factors = tuple(float(v) for v in ff)
        else:
            self._freq_factors = None

    @classmethod
    def from_model(cls, model, observer: Observer | None = None, weights=None,
                   kv_f16: bool = True, act_quant: str = "ik",
                   ik_threads: int | None = None) -> Forward:
        """From an open GGUFModel; weights default to its own tensors dequantized to float32."""
        emb = model.tensors.get("token_embd.weight")
        shape = tuple(emb.shape) if emb is not None else None
        cfg = config_from_metadata(model.metadata, model.tensors, shape)
        ws = weights if weights is not None else GGUFWeights(model)
        return cls(cfg, ws, observer, kv_f16, act_quant, ik_threads)

    # -- helpers ---------------------------------------------------------------------------
    def _w(self, name: str) -> np.ndarray | None:
        return self.ws.get(name) if name in self.ws.names() else None

    def _linear(self, name: str, x: np.ndarray, ny: int | None = None,
                dense: bool = True) -> np.ndarray:
        """x @ Wᵀ (+ b); ny: the batch rows ik's matmul has (when it computes more rows)."""
        if self.observer is not None:
            self.observer(name + ".weight", x, None)
        w = name + ".weight"
        y = matmul_t(self.mm.acts(w, x), self.mm.weight(w, ny or x.shape[0], dense))
        b = self._w(name + ".bias")
        if b is not None:
            y += b
        return y

    def _linears(self, p: str, roles: tuple[str, ...], x: np.ndarray,
                 dense: bool = True) -> list[np.ndarray]:
        """Several matmuls of one input (q/k/v, gate/up), in one GEMM when they can (+ biases)."""
        names = [p + r + ".weight" for r in roles]
        if self.observer is not None:
            for name in names:
                self.observer(name, x, None)
        ys = self.mm.linears(names, x, dense=dense)
        for r, y in zip(roles, ys):
            b = self._w(p + r + ".bias")
            if b is not None:
                y += b
        return ys

    def _fused_up_gate(self, p: str) -> bool:
        """llm_build_ffn fuses ffn_up/ffn_gate of one quantized type (iqk_moe_fused_up_gate)."""
        tg, tu = self.mm.type_of(p + "ffn_gate.weight"), self.mm.type_of(p + "ffn_up.weight")
        return (tg == tu and tg not in ("f32", "f16", "bf16")
                and self.ws.shape(p + "ffn_gate.weight") == self.ws.shape(p + "ffn_up.weight"))

    # -- steps -----------------------------------------------------------------------------
    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """Token rows (T, n_embd) float32, scaled by √n_embd for gemma3."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.cfg.n_vocab):
            raise ValueError(f"token id out of range 0..{self.cfg.n_vocab - 1}")
        x = self._embd_rows(tokens)
        if self.cfg.embd_scale != 1.0:
            x *= np.float32(self.cfg.embd_scale)
        return x

    def _embd_rows(self, tokens: np.ndarray) -> np.ndarray:
        """Rows of token_embd dequantized (get_rows); from the stored bytes when quantized, so
        that the whole float32 matrix is only built when the output layer needs it."""
        name = "token_embd.weight"
        q = self.ws.quantized(name) if hasattr(self.ws, "quantized") else None
        if q is None or q[0] in ("f32", "f16", "bf16"):
            return np.array(self.ws.get(name)[tokens], dtype=np.float32)
        from iqk_studio.quant.api import dequantize

        return dequantize(np.ascontiguousarray(q[1][tokens]), q[0], self.cfg.n_embd)

    def layer(self, x: np.ndarray, il: int, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Layer il over x (T, n_embd) at positions 0..T-1. With rows=(r0, r1) only those output
        rows are computed (all positions still serve as keys): returns (r1-r0, n_embd)."""
        c = self.cfg
        p = f"blk.{il}."
        t = x.shape[0]
        r0, r1 = rows if rows is not None else (0, t)
        n = L.rms_norm(x, self.ws.get(p + "attn_norm.weight"), c.eps)
        self.mm.forget_acts()
        q, k, v = self._linears(p, ("attn_q", "attn_k", "attn_v"), n)
        q = q[r0:r1].reshape(r1 - r0, c.n_head, c.head_dim)
        k = k.reshape(t, c.n_head_kv, c.head_dim)
        v = v.reshape(t, c.n_head_kv, c.head_dim_v)
        if c.qk_norm:
            q = L.rms_norm(q, self.ws.get(p + "attn_q_norm.weight"), c.eps)
            k = L.rms_norm(k, self.ws.get(p + "attn_k_norm.weight"), c.eps)
        base, scale = c.rope_for_layer(il)
        cos, sin = L.rope_table(t, c.n_rot, base, scale, c.rope_attn_factor, self._freq_factors)
        L.apply_rope(q, cos[r0:r1], sin[r0:r1], c.rope_neox)
        L.apply_rope(k, cos, sin, c.rope_neox)
        if self.kv_f16:
            k = k.astype(np.float16).astype(np.float32)
            v = v.astype(np.float16).astype(np.float32)
        n_swa = c.n_swa if c.is_swa(il) else 0
        if self.kv_f16 and self.mm.mode == "ik" and \
                (c.head_dim, c.head_dim_v) not in IQK_FA_HEAD_SIZES:
            a = attention_f16(q, k, v, c.kq_scale, r0, n_swa)  # ggml's generic f16 FA
        else:
            a = L.attention(q, k, v, c.kq_scale, r0, n_swa)
        a = self._linear(p + "attn_output", a, t)
        if c.post_norms:
            a = L.rms_norm(a, self.ws.get(p + "post_attention_norm.weight"), c.eps)
        h = x[r0:r1] + a
        f = self.ffn(L.rms_norm(h, self.ws.get(p + "ffn_norm.weight"), c.eps), il)
        if c.post_norms:
            f = L.rms_norm(f, self.ws.get(p + "post_ffw_norm.weight"), c.eps)
        h += f
        return h

    def ffn(self, n: np.ndarray, il: int) -> np.ndarray:
        c = self.cfg
        p = f"blk.{il}."
        if c.n_expert:
            return moe_ffn(n, self.mm, il, c.n_expert_used, c.n_ff_exp, c.act, self.observer)
        g, u = self._linears(p, ("ffn_gate", "ffn_up"), n, not self._fused_up_gate(p))
        g = L.gelu_tanh(g) if c.act == "gelu" else L.silu(g)
        g *= u
        return self._linear(p + "ffn_down", g)

    def output_norm(self, x: np.ndarray) -> np.ndarray:
        return L.rms_norm(x, self.ws.get("output_norm.weight"), self.cfg.eps)

    def iter_logits(self, h: np.ndarray, rows_per_block: int = 128) -> Iterator[tuple[int, np.ndarray]]:
        """(r0, logits (rows, n_vocab) float32) over blocks of normalised rows h, so the full
        (T, n_vocab) matrix never exists at once."""
        hq = self.mm.acts(self._output_name, h)
        w = self.mm.weight(self._output_name, h.shape[0])
        for r0 in range(0, h.shape[0], rows_per_block):
            yield r0, matmul_t(hq[r0:r0 + rows_per_block], w)

    def steps(self, tokens: np.ndarray, first: int = 0, last: int | None = None,
              all_rows: bool = False) -> Generator[int, None, np.ndarray]:
        """Generator over a window: yields after each layer (layers done so far) and returns the
        normalised final hidden rows first..last-1. The last layer computes only those rows
        unless all_rows (imatrix: the reference's last layer sees every row)."""
        x = self.embed(tokens)
        last = x.shape[0] if last is None else last
        for il in range(self.cfg.n_layer):
            only = il == self.cfg.n_layer - 1 and not all_rows
            x = self.layer(x, il, (first, last) if only else None)
            yield il + 1
        return self.output_norm(x[first:last] if all_rows else x)

    def map_logit_slices(self, h: np.ndarray, fn, n_cols: int = 16384) -> list:
        """[fn(v0, logits (rows, n_cols))] over vocabulary slices, slices spread over the engine's
        threads (each a single-threaded GEMM); fn must be thread-safe."""
        hq = self.mm.acts(self._output_name, h)
        w = self.mm.weight(self._output_name, h.shape[0])
        return pmap(lambda v0: fn(v0, np.matmul(hq, w[v0:v0 + n_cols].T)),
                    list(range(0, w.shape[0], n_cols)))

    def iter_logit_slices(self, h: np.ndarray, n_cols: int = 16384
                          ) -> Iterator[tuple[int, np.ndarray]]:
        """(v0, logits (rows, n_cols) float32) over vocabulary slices: every row at once, the
        output matrix streamed once (faster than row blocks for the big-vocabulary GEMM)."""
        hq = self.mm.acts(self._output_name, h)
        w = self.mm.weight(self._output_name, h.shape[0])
        for v0 in range(0, w.shape[0], n_cols):
            yield v0, matmul_t(hq, w[v0:v0 + n_cols])

    # -- convenience -----------------------------------------------------------------------
    def hidden(self, tokens: np.ndarray, first: int = 0, last: int | None = None) -> np.ndarray:
        """Normalised final hidden rows first..last-1 of a window (all layers at once)."""
        gen = self.steps(tokens, first, last)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def logits(self, tokens: np.ndarray, first: int = 0) -> np.ndarray:
        """Full logits (T - first, n_vocab) of a window; for tests and small vocabularies."""
        h = self.hidden(tokens, first)
        return np.concatenate([b for _, b in self.iter_logits(h)], axis=0)
