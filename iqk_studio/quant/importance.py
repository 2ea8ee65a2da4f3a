"""Which imatrix entry a tensor uses (llama-quantize's name fallbacks and size check,
src/llama-quantize.cpp:1626-1680; quant-formats.md §3.5)."""

from __future__ import annotations

import numpy as np


def candidate_names(name: str) -> list[str]:
    """The exact name, then the fallbacks llama-quantize tries, in its order."""
    out = [name]
    for part in ("ffn_up_exps.weight", "ffn_gate_exps.weight"):
        if part in name:
            head = name[:name.find(part)]
            return out + [head + "ffn_gate_up_exps.weight", head + "ffn_up_exps.weight"]
    if "ffn_gate_up_exps.weight" in name:
        return out + [name[:name.find("ffn_gate_up_exps.weight")] + "ffn_up_exps.weight"]
    if "ffn_gate.weight" in name:
        return out + [name[:name.find("ffn_gate.weight")] + "ffn_up.weight"]
    for a, b in ((".attn_v_b.weight", ".attn_kv_b.weight"), (".attn_kv_b.weight",
                                                            ".attn_v_b.weight")):
        if a in name:
            return out + [name[:name.find(a)] + b]
    return out


def imatrix_values(imatrix) -> dict:
    """name -> values of an Imatrix record, or the dict itself when given one."""
    return imatrix if isinstance(imatrix, dict) else imatrix.values


def importance_for(values: dict, name: str, ne0: int, ne2: int = 1) -> np.ndarray | None:
    """float32 (ne0·ne2,) importance for a tensor, or None when the imatrix has no entry.
    A size mismatch is an error (as in llama-quantize), except for token_embd.weight."""
    for cand in candidate_names(name):
        if cand in values:
            v = np.ascontiguousarray(values[cand], dtype=np.float32).reshape(-1)
            if v.size == ne0 * ne2:
                if not np.isfinite(v).all():
                    raise ValueError(f"imatrix entry {cand} has NaN or Inf values")
                return v
            if name == "token_embd.weight":
                return None
            raise ValueError(f"imatrix size {v.size} is different from tensor size "
                             f"{ne0 * ne2} for {name}")
    return None
