"""Breakdown classes of tensors (attention, dense FFN, routed experts, ...) and placement:
`--override-tensor` rules (regex=buffer, std::regex search, first match wins, default GPU)."""

from __future__ import annotations

from iqk_studio.recipe.records import CLASSES, Placement

__all__ = ["CLASSES", "tensor_class", "devices"]


def tensor_class(name: str) -> str:
    """One of CLASSES for a tensor name (GGUF naming, e.g. blk.3.ffn_down_exps.weight)."""
    if "_norm" in name or name.endswith("norm.weight"):
        return "norms_other"
    if "ffn_gate_inp" in name or "exp_probs_b" in name:
        return "router"
    if "_exps" in name:
        for part, cls in (("ffn_gate_up_exps", "experts_gate_up"),
                          ("ffn_gate_exps", "experts_gate"), ("ffn_up_exps", "experts_up"),
                          ("ffn_down_exps", "experts_down")):
            if part in name:
                return cls
        return "norms_other"
    if "_shexp" in name:
        return "shared_experts"
    if name.startswith("output.") or name.startswith("output_extra."):
        return "output"
    if "token_embd" in name or name.startswith(("position_embd", "token_types")):
        return "embeddings"
    if ".attn_" in name or ".attn." in name:
        return "attention"
    if ".ffn_" in name:
        return "ffn"
    return "norms_other"


def devices(names: tuple[str, ...], placement: tuple[Placement, ...], matches) -> list[str]:
    """Device of each tensor: the first placement rule whose regex finds the name, else GPU.
    `matches(pattern)` returns the set of indices the pattern finds (cached per model)."""
    out = ["GPU"] * len(names)
    if not placement:
        return out
    decided = [False] * len(names)
    for p in placement:
        dev = "CPU" if p.device.upper() == "CPU" else p.device
        for i in matches(p.pattern):
            if not decided[i]:
                decided[i] = True
                out[i] = dev
    return out
