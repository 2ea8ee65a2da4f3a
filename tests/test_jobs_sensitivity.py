"""Sensitivity: a group set to its own precision costs nothing; fewer bits cost more KLD."""

import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Failed
from iqk_studio.jobs.sensitivity import Candidate, Sensitivity, candidates, role, sensitivity_job


@pytest.fixture
def tiny(shared):
    return (shared("refs", "ppl", "tiny", "tiny-qwen2.gguf"), shared("data", "wiki.test.raw"))


def test_roles_and_groups(tiny):
    assert role("blk.12.ffn_down_exps.weight") == "ffn_down_exps"
    assert role("output.weight") == "output"
    with open_model(tiny[0]) as m:
        groups = {c.label: c for c in candidates(m, "q4_0", "role")}
        assert "attn_v" in groups and "ffn_down" in groups
        assert len(groups["attn_v"].types) == 4  # one per layer
        assert all(t == "q4_0" for c in groups.values() for t in c.types.values())
        layers = candidates(m, "q4_0", "layer")
        assert {c.label for c in layers} >= {"layer 0", "layer 3"}
        assert candidates(m, "q4_0", "tensor", r"blk\.0\.attn_v")[0].label == \
            "blk.0.attn_v.weight"


def test_kld_zero_for_f32_and_more_for_fewer_bits(tiny):
    model, text = tiny
    with open_model(model) as m:
        v = [n for n in m.tensors if n.endswith("ffn_down.weight")]
    cands = [Candidate("f32", {n: "f32" for n in v}), Candidate("q8_0", {n: "q8_0" for n in v}),
             Candidate("q4_0", {n: "q4_0" for n in v})]
    res = {e.label: e for e in sensitivity_job(model, text, cands, n_ctx=128, chunks=2)
           if isinstance(e, Sensitivity)}
    assert abs(res["f32"].kld) < 1e-5 and res["f32"].same_top == 1  # 16-bit base log-probs
    assert 0 < res["q8_0"].kld < res["q4_0"].kld
    assert res["q4_0"].bytes_after < res["q8_0"].bytes_after < res["q8_0"].bytes_before


def test_nothing_to_test_is_a_clear_failure(tiny):
    evs = list(sensitivity_job(tiny[0], tiny[1], [], n_ctx=128, chunks=1))
    assert isinstance(evs[-1], Failed) and "nothing" in evs[-1].message


def test_cli(tiny, capsys):
    model, text = tiny
    rc = main(["sensitivity", str(model), "-f", str(text), "--type", "q4_0", "--only",
               r"blk\.0\.", "--by", "tensor", "-c", "128", "--chunks", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "blk.0.attn_v.weight" in out and "cheapest savings" in out
    assert main(["sensitivity", str(model), "-f", str(text), "--type", "Q4_0"]) == 1
    assert "case-sensitive" in capsys.readouterr().err


@pytest.mark.parametrize("pattern", [r"blk\.2\.ffn_down", r"token_embd", r"^output\.weight"])
def test_prefix_cache_equals_a_full_kld_run(tiny, pattern):
    """Starting from the base's stored hidden rows gives the KLD of a whole forward pass."""
    from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
    from iqk_studio.jobs.events import Finished
    from iqk_studio.jobs.kld import kld_job

    model, text = tiny
    with open_model(model) as m:
        cand = candidates(m, "q4_0", "tensor", pattern)[0]
        got = [e for e in sensitivity_job(model, text, [cand], n_ctx=128, chunks=1)
               if isinstance(e, Sensitivity)][0]
        ws = QuantizedWeights(GGUFWeights(m), cand.types)
        fin = [e for e in kld_job(model, model, text, 128, 1, weights=ws)
               if isinstance(e, Finished)][0]
    assert got.kld > 0
    assert got.kld == pytest.approx(fin.result.stats.kld, rel=1e-6, abs=1e-9)
    # a difference of two nearly equal NLL means: logits blocked differently round apart
    assert got.ln_ratio == pytest.approx(fin.result.stats.ln_ratio, abs=1e-7)
