"""Evaluating a recipe in memory gives exactly the perplexity of the file the quantize job writes."""

from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Finished
from iqk_studio.jobs.perplexity import perplexity_job
from iqk_studio.jobs.quantize import quantize_model
from iqk_studio.jobs.recipe_eval import RecipePoint, evaluate_plan
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
    list(quantize_model(str(model), p, str(out)))
    ref = _final(list(perplexity_job(out, text, n_ctx=128, chunks=2)))
    assert point.ppl == ref.ppl and point.ppl_err == ref.ppl_err

    base = _final(list(perplexity_job(model, text, n_ctx=128, chunks=2)))
    assert base.ppl != point.ppl  # the recipe really changed the weights
