"""Evaluating a recipe in memory gives exactly the perplexity of the file the quantize job writes."""

from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.evaluate import RecipePoint, evaluate_plan
from iqk_studio.jobs.events import Finished
from iqk_studio.jobs.perplexity import perplexity_job
from iqk_studio.jobs.quantize import plan_targets, quantize_model
from iqk_studio.recipe import plan
from iqk_studio.recipe.records import Recipe, Rule


def _final(events):
    fin = [e for e in events if isinstance(e, Finished)]
    assert fin, [e for e in events if not hasattr(e, "done")][-3:]
    return fin[-1].result


def test_in_memory_equals_written_file(shared, tmp_path):
    model = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = shared("data", "wiki.test.raw")
    recipe = Recipe(base="Q8_0", rules=(Rule("ffn_down", "q4_0"),))
    with open_model(model) as m:
        p = plan(m, recipe)
    assert any(e.type == "q4_0" for e in p.entries)
    point = _final(list(evaluate_plan(model, p, text, n_ctx=128, chunks=2, label="mix")))
    assert isinstance(point, RecipePoint) and point.label == "mix"
    assert point.total_bytes == p.total_bytes and point.n_chunks == 2

    out = tmp_path / "q.gguf"
    list(quantize_model(str(model), plan_targets(p), str(out)))
    ref = _final(list(perplexity_job(out, text, n_ctx=128, chunks=2)))
    assert point.ppl == ref.ppl and point.ppl_err == ref.ppl_err

    base = _final(list(perplexity_job(model, text, n_ctx=128, chunks=2)))
    assert base.ppl != point.ppl  # the recipe really changed the weights


def test_tensor_importance_uses_fallbacks_and_expert_slices():
    import numpy as np

    from iqk_studio.jobs.recipe_eval import tensor_importance

    class Info:
        def __init__(self, shape):
            self.shape = shape

    class M:
        tensors = {"blk.0.ffn_gate.weight": Info((4, 8)), "blk.0.ffn_up_exps.weight":
                   Info((4, 8, 2)), "blk.0.attn_q.weight": Info((4, 4))}

    values = {"blk.0.ffn_up.weight": np.arange(4.0), "blk.0.ffn_up_exps.weight": np.arange(8.0)}
    got = tensor_importance(M, list(M.tensors), values)
    assert set(got) == {"blk.0.ffn_gate.weight", "blk.0.ffn_up_exps.weight"}  # attn_q: none
    assert got["blk.0.ffn_gate.weight"].tolist() == [0, 1, 2, 3]  # ffn_gate -> ffn_up fallback
    assert got["blk.0.ffn_up_exps.weight"].size == 8  # n_in * n_expert
    assert tensor_importance(M, list(M.tensors), None) == {}
