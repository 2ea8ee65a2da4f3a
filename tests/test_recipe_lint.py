"""Every lint message, triggered on purpose; and ECMAScript -> Python regex translation."""

from __future__ import annotations

import re

import pytest

from iqk_studio.recipe import Recipe, Rule, plan
from iqk_studio.recipe.ecma import translate
from iqk_studio.recipe.model import stand_in


def moe(n_layer=4, n_embd=512, n_ff=640, w="bf16"):
    t = [("token_embd.weight", (n_embd, 1000), w)]
    for i in range(n_layer):
        b = f"blk.{i}."
        t += [(b + "attn_norm.weight", (n_embd,), "f32"),
              (b + "attn_q.weight", (n_embd, n_embd), w),
              (b + "attn_k.weight", (n_embd, 128), w), (b + "attn_v.weight", (n_embd, 128), w),
              (b + "attn_output.weight", (n_embd, n_embd), w),
              (b + "ffn_gate_inp.weight", (n_embd, 8), "f32"),
              (b + "ffn_gate_exps.weight", (n_embd, n_ff, 8), w),
              (b + "ffn_up_exps.weight", (n_embd, n_ff, 8), w),
              (b + "ffn_down_exps.weight", (n_ff, n_embd, 8), w)]
    t += [("output.weight", (n_embd, 1000), w)]
    md = {"general.architecture": "qwen3moe", "qwen3moe.block_count": n_layer,
          "qwen3moe.attention.head_count": 8, "qwen3moe.attention.head_count_kv": 2,
          "qwen3moe.expert_count": 8, "qwen3moe.vocab_size": 1000}
    return stand_in(t, md)


M = moe()


def lints(recipe, code=None, model=M):
    ws = plan(model, recipe).warnings
    return [w for w in ws if code is None or w.code == code]


def test_clean_recipe_has_no_lint():
    assert lints(Recipe("Q8_0", rules=(Rule("attn", "q6_K"),))) == []


def test_rule_matching_nothing():
    (w,) = lints(Recipe("Q8_0", rules=(Rule("ffn_down_shexp", "q8_0"),)), "rule-unused")
    assert "matches no tensor" in w.message and w.rule_index == 0


def test_rule_matching_only_non_candidates():
    (w,) = lints(Recipe("Q8_0", rules=(Rule("norm", "q8_0"),)), "rule-unused")
    assert "never quantizes" in w.message


def test_shadowed_rule():
    r = Recipe("Q8_0", rules=(Rule("exps", "q4_K"), Rule(r"blk\.1\.ffn_up", "q8_0")))
    (w,) = lints(r, "rule-shadowed")
    assert w.rule_index == 1 and "rule(s) 1" in w.message
    assert lints(r.with_(rules=r.rules[::-1]), "rule-shadowed") == []


@pytest.mark.parametrize("recipe", [Recipe("BF16", rules=(Rule("attn", "q8_0"),)),
                                    Recipe("F32", rules=(Rule("attn", "q8_0"),)),
                                    Recipe("Q4_K_M", rules=(Rule("attn", "q8_0"),), pure=True)])
def test_rules_ignored_for_float_base_or_pure(recipe):
    (w,) = lints(recipe, "rules-ignored")
    assert "ignored" in w.message


def test_block_size_fallback():
    m = moe(n_ff=640)  # ffn_down_exps rows of 640
    (w,) = lints(Recipe("Q8_0", rules=(Rule("ffn_down_exps", "iq4_ks"),)), "fallback", m)
    assert "iq4_ks" in w.message and "iq4_nl" in w.message and len(w.tensors) == 4


def test_gate_up_mismatch():
    r = Recipe("Q8_0", rules=(Rule(r"blk\.2\.ffn_up_exps", "iq4_ks"), Rule("exps", "iq3_k")))
    (w,) = lints(r, "gate-up-mismatch")
    assert "blk.2" in w.message and "-fmoe" in w.message


def test_invalid_regex_has_a_column():
    (w,) = lints(Recipe("Q8_0", rules=(Rule("attn", "q8_0"), Rule(r"blk\.(1|2\.ffn", "q4_K"))),
                 "bad-regex")
    assert w.rule_index == 1 and "column" in w.where


def test_unknown_and_miscased_type_in_a_rule():
    (w,) = lints(Recipe("Q8_0", rules=(Rule("attn", "q4_k"),)), "bad-type")
    assert w.severity == "error" and "'q4_K'" in w.message and "column 6" in w.where


def test_miscased_option_is_silently_ignored():
    r = Recipe("Q8_0", output_tensor_type="q6_k")
    (w,) = lints(r, "option-ignored")
    assert "silently ignored" in w.message and "'q6_K'" in w.message
    assert plan(M, r).entry("output.weight").type == "q8_0"  # exactly as llama-quantize


def test_comma_in_regex():
    (w,) = lints(Recipe("Q8_0", rules=(Rule(r"blk\.[0-9]{1,2}\.attn", "q8_0"),)), "comma")
    assert w.severity == "error" and "column 13" in w.where


def test_type_needing_imatrix():
    r = Recipe("Q8_0", rules=(Rule("exps", "iq2_xxs"),))
    (w,) = lints(r, "needs-imatrix")
    assert w.severity == "error" and "Missing importance matrix" in w.message
    assert lints(r.with_(imatrix="imatrix.dat"), "needs-imatrix") == []
    assert lints(r.with_(ignore_imatrix_rules=True), "needs-imatrix") == []
    (w2,) = lints(Recipe("IQ1_M"), "needs-imatrix")[:1]
    assert "refuses to start" in w2.message


def test_requantize_needs_the_flag():
    m = moe(w="q8_0")
    (w,) = lints(Recipe("Q4_K_M"), "requantize", m)
    assert "--allow-requantize" in w.message
    assert lints(Recipe("Q4_K_M", allow_requantize=True), "requantize", m) == []


def test_option_ignored_for_special_branch_and_qkv():
    assert lints(Recipe("IQ2_KS", ffn_down_type="q4_K"), "option-ignored")
    (w,) = lints(Recipe("Q8_0", attn_qkv_type="q4_K"), "option-ignored")
    assert "never applies" in w.message


def test_regex_that_reads_differently():
    (w,) = lints(Recipe("Q8_0", rules=(Rule(r"\Aattn", "q8_0"),)), "regex-differs")
    assert "plain 'A'" in w.message
    (e,) = lints(Recipe("Q8_0", rules=(Rule(r"(?<=blk\.)1", "q8_0"),)), "bad-regex")
    assert "lookbehind" in e.message


def test_whitespace_in_pattern():
    assert lints(Recipe("Q8_0", rules=(Rule(" attn", "q8_0"),)), "whitespace")


# ------------------------------------------------------------------------ regex translation

@pytest.mark.parametrize("pattern, name, hit", [
    (r"blk\.[0-5]\.ffn_down", "blk.3.ffn_down_exps.weight", True),
    (r"blk\.[0-5]\.ffn_down", "blk.13.ffn_down_exps.weight", False),
    (r"ffn_(up|gate)_exps", "blk.1.ffn_gate_exps.weight", True),
    (r"blk\.[[:digit:]]+\.attn", "blk.12.attn_q.weight", True),
    (r"blk\.[[:digit:]]+\.attn", "blk.x.attn_q.weight", False),
    (r"^output\.weight$", "output.weight", True),
    (r"\Aoutput", "output.weight", False),  # std::regex: \A is a literal 'A'
    (r"\Aoutput", "Aoutput.weight", True),
    (r"[]x]", "x", False),  # ECMAScript: [] never matches, then a literal ']'
    (r"blk\.\d{2}\.", "blk.42.ffn_up.weight", True),
    (r"\_exps", "blk.0.ffn_up_exps.weight", True),
])
def test_ecmascript_semantics(pattern, name, hit):
    rx = translate(pattern)
    assert rx.error is None
    assert rx.search(name) is hit


@pytest.mark.parametrize("pattern", [r"(?i)attn", r"(?P<x>a)", r"a*+", r"blk{x", r"[[:foo:]]",
                                     r"(?<!x)a", r"(a", "a\\"])
def test_std_regex_rejects(pattern):
    assert translate(pattern).error is not None


def test_translation_is_cached_and_compiles():
    assert translate("attn") is translate("attn")
    assert isinstance(translate("attn").regex, re.Pattern)


def test_error_column_maps_back_to_the_pattern():
    rx = translate(r"[[:digit:]]+(x")  # translated text is shorter than the pattern
    assert rx.error is not None and rx.error.column == 12
    assert translate(r"ab)").error.column == 2


def test_unknown_base_is_a_clean_error():
    with pytest.raises(ValueError, match="unknown llama-quantize type"):
        plan(M, Recipe("Q9_X"))
