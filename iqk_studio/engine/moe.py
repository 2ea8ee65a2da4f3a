"""Mixture-of-experts FFN (qwen3moe, Mixtral-style llama): softmax router, top-k, renormalised
weights, SwiGLU experts (shared/docs/perplexity-imatrix-tokenizer.md §5.2)."""

from __future__ import annotations

import numpy as np

from iqk_studio.engine.layers import gelu_tanh, linear, silu


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


def _expert_mats(ws, il: int, n_ff_exp: int):
    """(gate, up, down) stacks (n_expert, out, in); a merged gate_up is split gate-first."""
    p = f"blk.{il}."
    down = ws.get(p + "ffn_down_exps.weight")
    if p + "ffn_gate_exps.weight" in ws.names():
        return ws.get(p + "ffn_gate_exps.weight"), ws.get(p + "ffn_up_exps.weight"), down
    gu = ws.get(p + "ffn_gate_up_exps.weight")
    return gu[:, :n_ff_exp, :], gu[:, n_ff_exp:, :], down


def moe_ffn(x: np.ndarray, ws, il: int, n_expert_used: int, n_ff_exp: int, act: str,
            observer=None) -> np.ndarray:
    """x (T, n_embd) -> Σ_slots w·down_e(act(gate_e·x) ⊙ up_e·x), (T, n_embd)."""
    p = f"blk.{il}."
    router = ws.get(p + "ffn_gate_inp.weight")  # (n_expert, n_embd)
    if observer is not None:
        observer(p + "ffn_gate_inp.weight", x)
    ids, w = route(linear(x, router), n_expert_used)
    gate, up, down = _expert_mats(ws, il, n_ff_exp)
    out = np.zeros((x.shape[0], down.shape[1]), dtype=np.float32)
    for e in np.unique(ids):
        rows, slots = np.nonzero(ids == e)
        xe = x[rows]
        h = linear(xe, gate[e])
        h = gelu_tanh(h) if act == "gelu" else silu(h)
        h *= linear(xe, up[e])
        if observer is not None:
            observer(p + "ffn_gate_exps.weight", xe, int(e))
            observer(p + "ffn_up_exps.weight", xe, int(e))
            observer(p + "ffn_down_exps.weight", h, int(e))
        y = linear(h, down[e])
        y *= w[rows, slots][:, None]
        out[rows] += y  # top-k experts are distinct, so each row appears once
    return out
