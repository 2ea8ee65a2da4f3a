"""The app's evaluation job against the jobs it composes (perplexity_job, kld_job), the on-disk
token cache against the tokenizer, and per-type kernel warm-up."""

import numpy as np
import pytest

from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs import token_cache, warmup
from iqk_studio.jobs.evaluate import EvalSpec, RunResult, evaluate, type_mix
from iqk_studio.jobs.events import Finished, Progress
from iqk_studio.jobs.kld import kld_job
from iqk_studio.jobs.perplexity import perplexity_job, tokenize_file
from iqk_studio.recipe import plan
from iqk_studio.recipe.records import Recipe, Rule

TINY = ("refs", "ppl", "tiny", "tiny-qwen2.gguf")
TEXT = ("data", "wiki.test.raw")


def _final(events):
    fin = [e for e in events if isinstance(e, Finished)]
    assert fin, [e for e in events if not hasattr(e, "done")][-3:]
    return fin[-1].result


@pytest.fixture(scope="module")
def tiny(request):
    from tests.conftest import shared_path

    model, text = shared_path(*TINY), shared_path(*TEXT)
    with open_model(model) as m:
        p = plan(m, Recipe(base="Q8_0", rules=(Rule("ffn_down", "q4_0"),)))
    return str(model), str(text), p


def test_file_run_equals_perplexity_job(tiny):
    model, text, _ = tiny
    got = _final(list(evaluate(EvalSpec(model, text, 128, 2))))
    ref = _final(list(perplexity_job(model, text, 128, 2)))
    assert isinstance(got, RunResult) and got.kind == "ppl" and got.is_file
    assert got.ppl == ref.ppl and got.ppl_err == ref.ppl_err
    assert got.curve == ref.chunk_ppl and len(got.curve_err) == 2
    with open_model(model) as m:
        assert got.total_bytes == sum(t.nbytes for t in m.tensors.values())
    assert got.default_name() == "tiny-qwen2.gguf (file)"


def test_recipe_run_and_weighting_modes(tiny):
    model, text, p = tiny
    events = list(evaluate(EvalSpec(model, text, 128, 2, p, "default", recipe_text="x",
                                    recipe_name="mix")))
    got = _final(events)
    assert got.total_bytes == p.total_bytes and got.types == type_mix(p.entries)
    assert got.default_name() == f"mix: {got.types}, no imatrix"
    # the weights are quantized before chunk 1, with progress, so chunk times measure evaluation
    pre = {e.message.split()[1] for e in events
           if isinstance(e, Progress) and e.message.startswith("quantizing ")}
    assert pre == {e.name for e in p.entries if e.type != e.source_type}
    uni = _final(list(evaluate(EvalSpec(model, text, 128, 2, p, "uniform", recipe_text="x"))))
    with open_model(model) as m:  # oracle: the same weights through the plain perplexity job
        ws = QuantizedWeights(GGUFWeights(m), {e.name: e.type for e in p.entries
                                               if e.type != e.source_type}, uniform=True)
        ref = _final(list(perplexity_job(model, text, 128, 2, weights=ws)))
    assert uni.ppl == ref.ppl and uni.importance == "uniform"
    assert uni.ppl != got.ppl  # w = 1 is not the default weighting


def test_kld_run_equals_kld_job(tiny):
    model, text, p = tiny
    got = _final(list(evaluate(EvalSpec(model, text, 128, 2, p, "default", base_path=model,
                                         recipe_text="x"))))
    with open_model(model) as m:
        ws = QuantizedWeights(GGUFWeights(m), {e.name: e.type for e in p.entries
                                               if e.type != e.source_type})
        ref = _final(list(kld_job(model, model, text, 128, 2, weights=ws))).stats
    assert got.kind == "kld" and got.kld == ref.kld and got.kld_err == ref.kld_err
    assert got.ppl_ratio == ref.ppl_ratio and got.ppl_base == ref.ppl_base
    assert got.kld > 0 and got.base_bytes > got.total_bytes


def test_token_cache(tiny, tmp_path):
    model, text, _ = tiny
    with open_model(model) as m:
        ref = tokenize_file(m, text)
        ids, add_bos, bos, hit = token_cache.cached_tokens(m, text, tmp_path)
        assert not hit and list(tmp_path.iterdir())
        ids2, add_bos2, bos2, hit2 = token_cache.cached_tokens(m, text, tmp_path)
        key = token_cache.tokenizer_key(m.metadata)
        other = dict(m.metadata)
        other["tokenizer.ggml.bos_token_id"] = 7
        assert token_cache.tokenizer_key(other) != key
    assert hit2 and np.array_equal(ids, ref[0]) and np.array_equal(ids2, ref[0])
    assert (add_bos, bos) == (add_bos2, bos2) == (ref[1], ref[2])
    short = tmp_path / "t.txt"
    short.write_text("hello world\n")
    assert token_cache.file_sha256(short) != token_cache.file_sha256(text)
    bad = token_cache.cache_path("0" * 20, key, tmp_path)
    bad.write_bytes(b"not an npz")
    assert token_cache.lookup(bad) is None  # a damaged cache file is a miss, not an error


def test_warm_types_announces_each_type_once(monkeypatch):
    monkeypatch.setattr(warmup, "_READY", set())
    got = list(warmup.warm_types(["q8_0", "Q8_0", "no_such_type"]))
    assert [e.qtype for e in got] == ["q8_0"] and "Q8_0" in got[0].message
    assert warmup.is_ready("q8_0")
    assert list(warmup.warm_types(["q8_0"])) == []
