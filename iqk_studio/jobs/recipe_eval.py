"""What a plan changes when it is evaluated in memory (engine.weights.QuantizedWeights): the
tensors and their types, and each one's imatrix vector with llama-quantize's name fallbacks.
The evaluation itself is jobs.evaluate."""

from __future__ import annotations

from iqk_studio.quant.importance import imatrix_values, importance_for


def plan_types(plan) -> dict[str, str]:
    """Tensor name -> type for the tensors the plan changes (others keep the file's values)."""
    return {e.name: e.type for e in plan.entries if e.type != e.source_type}


def tensor_importance(model, names, imatrix) -> dict:
    """Each named tensor's imatrix vector (n_in, or n_in * n_expert), with llama-quantize's name
    fallbacks and size check; tensors the imatrix lacks are left out."""
    if imatrix is None:
        return {}
    values = imatrix_values(imatrix)
    out = {}
    for name in names:
        info = model.tensors[name]
        ne2 = info.shape[2] if len(info.shape) > 2 else 1
        v = importance_for(values, name, info.shape[0], ne2)
        if v is not None:
            out[name] = v
    return out


def plan_importance(model, plan, imatrix) -> dict:
    """The imatrix vectors of the tensors the plan changes."""
    return tensor_importance(model, plan_types(plan), imatrix)
