"""llama-quantize options from a recipe, per flavour: they parse back (recipe.cmdline.parse_argv,
llama-quantize's own option rules) into the same recipe; long mainline lists go to a type file."""

from __future__ import annotations

import pytest

from iqk_studio.external.args import TYPE_FILE_RULES, quantize_args
from iqk_studio.recipe.cmdline import parse_argv
from iqk_studio.recipe.records import Recipe, Rule

RECIPE = Recipe("IQ4_KS", rules=(Rule(r"blk\.[0-5]\.ffn_down", "iq5_ks"), Rule("attn_v", "q8_0"),
                                 Rule("ffn_.*_exps", "iq2_ks")),
                imatrix="imatrix.dat", attn_output_type="q6_K", allow_requantize=True)


def test_ik_options_parse_back():
    opts, type_file = quantize_args(RECIPE, "ik_llama.cpp")
    assert type_file is None and opts.count("--custom-q") == 1
    back, lints = parse_argv(opts + ["in.gguf", "out.gguf", "IQ4_KS"])
    assert lints == [] and back == RECIPE
    assert quantize_args(RECIPE, None)[0] == opts  # unknown flavour: the ik dialect


def test_mainline_options_and_type_file(tmp_path):
    r = Recipe("Q4_K_M", rules=(Rule("ffn_down", "q6_K"), Rule("attn_v", "q8_0")))
    opts, type_file = quantize_args(r, "llama.cpp")
    assert opts == ["--tensor-type", "ffn_down=q6_K", "--tensor-type", "attn_v=q8_0"]
    assert type_file is None
    many = Recipe("Q4_K_M", imatrix="im.dat", rules=tuple(
        Rule(rf"blk\.{i}\.ffn_down", "q6_K") for i in range(TYPE_FILE_RULES + 1)))
    opts, type_file = quantize_args(many, "llama.cpp", tmp_path)
    try:
        assert opts == ["--imatrix", "im.dat", "--tensor-type-file", str(type_file)]
        assert type_file.parent == tmp_path
        assert type_file.read_text().splitlines() == [str(x) for x in many.rules]
    finally:
        type_file.unlink()


def test_mainline_refuses_ik_only_types():
    with pytest.raises(ValueError, match="iq2_ks does not exist in mainline"):
        quantize_args(Recipe("Q4_K_M", rules=(Rule("exps", "iq2_ks"),)), "llama.cpp")
    with pytest.raises(ValueError, match="base IQ4_KS does not exist in mainline"):
        quantize_args(Recipe("IQ4_KS"), "llama.cpp")
