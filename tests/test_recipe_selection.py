"""Selection rules match exactly the selected tensors and win over every other rule."""

import re

import pytest

from iqk_studio.recipe.records import Recipe, Rule
from iqk_studio.recipe.selection import selection_pattern, with_selection_rule

NAMES = [f"blk.{i}.{r}.weight" for i in range(12) for r in ("attn_v", "attn_k", "ffn_down")] + [
    "token_embd.weight", "output.weight"]


@pytest.mark.parametrize("pick", [
    ["blk.3.attn_v.weight"],
    ["blk.1.attn_v.weight", "blk.10.attn_v.weight"],
    ["blk.1.attn_v.weight", "blk.1.attn_k.weight"],
    ["output.weight", "token_embd.weight", "blk.11.ffn_down.weight"],
])
def test_matches_exactly_the_selection(pick):
    pat = selection_pattern(pick)
    assert "," not in pat
    rx = re.compile(pat)
    assert {n for n in NAMES if rx.search(n)} == set(pick)


def test_layer_form_is_compact():
    assert selection_pattern(["blk.0.attn_v.weight", "blk.7.attn_v.weight"]) == \
        r"^blk\.(0|7)\.attn_v\.weight$"


def test_rule_goes_first_and_empty_is_an_error():
    r = with_selection_rule(Recipe("Q4_K_M", rules=(Rule("attn", "q4_0"),)),
                            ["blk.0.attn_v.weight"], "q8_0")
    assert r.rules[0] == Rule(r"^blk\.0\.attn_v\.weight$", "q8_0") and len(r.rules) == 2
    with pytest.raises(ValueError):
        selection_pattern([])
