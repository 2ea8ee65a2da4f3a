"""Evaluate a recipe without writing a file: quantize -> dequantize each planned tensor in memory
and run perplexity over a text (the designer's fast loop). Events as jobs.perplexity."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.jobs.events import Finished, Progress
from iqk_studio.jobs.perplexity import run_perplexity, tokenize_file
from iqk_studio.quant.importance import imatrix_values, importance_for


@dataclass(frozen=True)
class RecipePoint:
    """One point of the size-vs-quality chart."""

    label: str
    total_bytes: int
    bpw: float
    ppl: float
    ppl_err: float
    n_chunks: int
    n_ctx: int
    text: str


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


def evaluate_plan(model_path, plan, text_path, n_ctx: int = 512, chunks: int = -1,
                  imatrix=None, label: str = "", act_quant: str = "ik",
                  ik_threads: int | None = None) -> Iterator[object]:
    """Perplexity of the model as the plan would quantize it; Finished.result is a RecipePoint."""
    from iqk_studio.gguf.reader import open_model

    with open_model(model_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        tokens, add_bos, bos_id = tokenize_file(model, text_path)
        ws = QuantizedWeights(GGUFWeights(model), plan_types(plan),
                              plan_importance(model, plan, imatrix))
        for done, total, name in ws.prepare():
            yield Progress(done, total, f"quantizing {name}")
        fw = Forward.from_model(model, weights=ws, act_quant=act_quant, ik_threads=ik_threads)
        for ev in run_perplexity(fw, tokens, n_ctx, chunks, add_bos, bos_id):
            if isinstance(ev, Finished) and ev.result is not None:
                r = ev.result
                point = RecipePoint(label, plan.total_bytes, plan.bpw, r.ppl, r.ppl_err,
                                    r.n_chunks, r.n_ctx, str(text_path))
                yield Finished(ev.message, point)
            else:
                yield ev
