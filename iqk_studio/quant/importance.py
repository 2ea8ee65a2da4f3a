"""The importance vector a tensor is quantized with: its imatrix entry, found through
llama-quantize's name fallbacks (gguf/imatrix.py: candidate_names), with its size check
(src/llama-quantize.cpp:1626-1680; quant-formats.md §3.5)."""

from __future__ import annotations

import numpy as np

from iqk_studio.gguf.imatrix import candidate_names

__all__ = ["candidate_names", "imatrix_values", "importance_for"]


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
