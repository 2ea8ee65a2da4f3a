"""Mixture-of-experts FFN (qwen3moe, Mixtral-style llama): softmax router, top-k, renormalised
weights, SwiGLU experts (shared/docs/perplexity-imatrix-tokenizer.md §5.2)."""

from __future__ import annotations

import numpy as np

from iqk_studio.engine.layers import gelu_tanh, silu


def route(logits: np.ndarray, k: int, norm: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Router logits (T, n_expert) -> (expert ids (T, k) int64, weights (T, k) float32).

    Softmax over all experts, top-k by probability (ties: lower expert id first), the selected
    probabilities renormalised to sum 1 when norm.
    """
    p = logits - logits.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True, dtype=np.float32)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, ids, axis=1)
    if norm:
        w = w / w.sum(axis=1, keepdims=True, dtype=np.float32)
    return ids, w.astype(np.float32)


def _expert_names(mm, il: int, n_ff_exp: int):
    """(name, row slice) of the gate and up matrices; a merged gate_up is split gate-first."""
    p = f"blk.{il}."
    if p + "ffn_gate_exps.weight" in mm.ws.names():
        return (p + "ffn_gate_exps.weight", None), (p + "ffn_up_exps.weight", None)
    gu = p + "ffn_gate_up_exps.weight"
    return (gu, slice(0, n_ff_exp)), (gu, slice(n_ff_exp, 2 * n_ff_exp))


def moe_ffn(x: np.ndarray, mm, il: int, n_expert_used: int, n_ff_exp: int, act: str,
            observer=None) -> np.ndarray:
    """x (T, n_embd) -> Σ_slots w·down_e(act(gate_e·x) ⊙ up_e·x), (T, n_embd); mm: the
    weights as engine.matmul.Matmuls (each expert's batch is its routed rows)."""
    p = f"blk.{il}."
    if observer is not None:
        observer(p + "ffn_gate_inp.weight", x)
    ids, w = route(mm.linear(p + "ffn_gate_inp.weight", x), n_expert_used)
    gate, up = _expert_names(mm, il, n_ff_exp)
    down = p + "ffn_down_exps.weight"
    out = np.zeros((x.shape[0], mm.ws.shape(down)[1]), dtype=np.float32)
    for e in np.unique(ids):
        rows, slots = np.nonzero(ids == e)
        xe = x[rows]
        h = mm.expert(gate[0], int(e), xe, gate[1])
        h = gelu_tanh(h) if act == "gelu" else silu(h)
        h *= mm.expert(up[0], int(e), xe, up[1])
        if observer is not None:
            observer(p + "ffn_gate_exps.weight", xe, int(e))
            observer(p + "ffn_up_exps.weight", xe, int(e))
            observer(p + "ffn_down_exps.weight", h, int(e))
        y = mm.expert(down, int(e), h)
        y *= w[rows, slots][:, None]
        out[rows] += y  # top-k experts are distinct, so each row appears once
    return out
