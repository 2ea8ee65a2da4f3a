"""plan() against ik_llama.cpp's own `llama-quantize --dry-run` logs (shared/refs/plans): every
tensor's type and size and the final `quant size` must match."""

from __future__ import annotations

import pytest
from dry_run_logs import assert_plan_matches, parse_log

from iqk_studio.recipe import Recipe, Rule, plan

CASES = {
    "qwen3moe-skeleton_Q4_K_M.log": Recipe("Q4_K_M"),
    "qwen3moe-skeleton_IQ4_KS.log": Recipe("IQ4_KS"),
    "qwen3moe-skeleton_IQ2_KS.log": Recipe("IQ2_KS"),
    "qwen3moe-skeleton_IQ3_K.log": Recipe("IQ3_K"),
    "qwen3moe-skeleton_Q8_0.log": Recipe("Q8_0"),
    "gemma3-270m_Q4_K_M.log": Recipe("Q4_K_M"),
    "gemma3-270m_IQ4_KS.log": Recipe("IQ4_KS"),
    "gemma3-270m_IQ2_K.log": Recipe("IQ2_K"),
    "gemma3-270m_custom1.log": Recipe("iq2_k", rules=(
        Rule("attn", "iq4_ks"), Rule("token_embd.weight", "q4_K"), Rule("output.weight", "q6_K"),
        Rule(r"blk\.[0-5]\.ffn_down", "iq4_ks"), Rule("ffn_down", "iq3_k"), Rule("ffn", "iq2_k"))),
}


@pytest.mark.parametrize("log", sorted(CASES))
def test_plan_matches_dry_run_log(shared, log):
    run = parse_log(shared("refs", "plans", log))
    assert_plan_matches(plan(run.model, CASES[log]), run)


def test_log_stand_in_has_the_hparams(shared):
    model = parse_log(shared("refs", "plans", "qwen3moe-skeleton_IQ2_KS.log")).model
    from iqk_studio.recipe.plan import model_view

    f = model_view(model).facts
    assert (f.n_layer, f.n_head, f.n_head_kv, f.n_expert, f.n_vocab) == (48, 32, 4, 128, 151936)
    assert f.has_output and f.n_attention_wv == 48 and f.n_gqa == 8


def test_custom_log_counts_fallbacks(shared):
    model = parse_log(shared("refs", "plans", "gemma3-270m_custom1.log")).model
    p = plan(model, CASES["gemma3-270m_custom1.log"])
    # "WARNING: 91 of 91 tensor(s) required fallback quantization"
    assert sum(e.fallback_from is not None for e in p.entries) == 91
    assert p.entry("blk.0.attn_q.weight").rule_index == 0
    assert p.entry("blk.3.ffn_down.weight").rule_index == 3
    assert p.entry("blk.9.ffn_down.weight").rule_index == 4
