"""Recipe files, the bundled library, and llama-quantize command lines (ik and mainline)."""

from __future__ import annotations

import shlex

import pytest

from iqk_studio.gguf.skeleton import deepseek_v3, qwen3_30b_a3b
from iqk_studio.recipe import Placement, Recipe, Rule, library, plan
from iqk_studio.recipe.cmdline import (
    comment_pipeline,
    export_ik,
    export_mainline,
    import_text,
    parse_argv,
    split_custom_q,
)
from iqk_studio.recipe.model import stand_in
from iqk_studio.recipe.textfile import RecipeSyntaxError, dumps, load, loads, save

QWEN = stand_in(*qwen3_30b_a3b()[:2])

FULL = Recipe(
    "IQ4_KS", rules=(Rule(r"blk\.[0-2]\.ffn_down_exps", "iq4_ks"), Rule("exps", "iq2_ks")),
    attn_v_type="q8_0", output_tensor_type="q6_K", token_embedding_type="q4_K",
    ffn_gate_inp_type="q8_0", imatrix="/models/imatrix file.dat", ignore_imatrix_rules=True,
    placement=(Placement("exps", "CPU"),), extra_args=("--override-kv", "a=str:b c"),
    note="line one\nline two")


def test_file_round_trip_gives_the_same_plan(tmp_path):
    path = save(FULL, tmp_path / "r.recipe")
    again = load(path)
    assert again == FULL
    a, b = plan(QWEN, FULL), plan(QWEN, again)
    assert a.entries == b.entries and a.total_bytes == b.total_bytes
    assert loads(dumps(again)) == again


def test_file_format_comments_and_headers():
    text = """# a comment
    @base q4_k_m
    @pure
    @placement exps=CPU

    # rules, with a trailing comment after the type
    blk\\.0\\.attn_q=q8_0   # keep this one
    ffn=iq4_ks
    """
    r = loads(text)
    assert r.base == "q4_k_m" and r.pure and r.placement == (Placement("exps", "CPU"),)
    assert r.rules == (Rule(r"blk\.0\.attn_q", "q8_0"), Rule("ffn", "iq4_ks"))


@pytest.mark.parametrize("text, line", [("@base Q8_0\nattn q8_0\n", 2), ("@bogus 1\n", 1),
                                        ("@base Q8_0\n\nattn=q8_0 extra\n", 3), ("@base\n", 1)])
def test_file_syntax_errors_have_line_numbers(text, line):
    with pytest.raises(RecipeSyntaxError) as e:
        loads(text)
    assert e.value.line == line


def test_library_recipes_load_and_plan():
    names = library.names()
    assert {"iq4_ks-pure", "moe-iq2_ks-experts", "moe-iq3_k-iq4_k"} <= set(names)
    ds = stand_in(*deepseek_v3()[:2])
    for name in names:
        r = library.load_named(name)
        assert loads(dumps(r)) == r
        for m in (QWEN, ds):
            p = plan(m, r)
            assert not p.errors, (name, p.errors)
    p = plan(QWEN, library.load_named("moe-iq2_ks-experts"))
    assert p.cpu_bytes == sum(e.bytes for e in p.entries if "_exps" in e.name)
    assert p.entry("blk.1.ffn_down_exps.weight").type == "iq4_ks"
    assert p.entry("blk.3.ffn_down_exps.weight").type == "iq2_ks"
    with pytest.raises(KeyError):
        library.load_named("no-such-recipe")


# --------------------------------------------------------------------------- command lines

def test_split_custom_q_like_llama_quantize():
    assert split_custom_q("a=q8_0,b=c=iq4_ks") == [Rule("a", "q8_0"), Rule("b", "c=iq4_ks")]
    with pytest.raises(RecipeSyntaxError):
        split_custom_q("a=q8_0,")  # the empty item after a trailing comma has no '='


@pytest.mark.parametrize("one", [False, True])
def test_export_ik_then_import_is_identity(one):
    text = export_ik(FULL, "in.gguf", "out.gguf", one_option_per_rule=one, nthreads=8)
    assert text.count("--custom-q") == (2 if one else 1)
    argv = shlex.split(text.replace("\\\n", " "))
    assert argv[0] == "llama-quantize" and argv[-4:] == ["in.gguf", "out.gguf", "IQ4_KS", "8"]
    r, lints = parse_argv(argv[1:])
    assert lints == []
    assert r == FULL.with_(placement=(), note="")
    again, _ = import_text(text)
    assert again == r


def test_export_refuses_commas():
    with pytest.raises(ValueError, match="comma"):
        export_ik(Recipe("Q8_0", rules=(Rule("a{1,2}", "q8_0"),)), "i", "o")


CARD = r"""#!/usr/bin/env bash

custom="
# Attention and shared tensors on GPU
blk\..*\.attn_.*=iq4_ks

# First three routed down experts a bit bigger
blk\.[0-2]\.ffn_down_exps\.weight=iq4_ks

# The rest of the routed experts
blk\..*\.ffn_(gate|up|down)_exps\.weight=iq2_ks

# Embeddings and output
token_embd\.weight=iq4_k
output\.weight=iq6_k
"

custom=$(
  echo "$custom" | grep -v '^#' | \
  sed -Ez 's:\n+:,:g;s:,$::;s:^,::'
)

numactl -N 0 -m 0 \
./build/bin/llama-quantize \
    --custom-q "$custom" \
    --imatrix /models/imatrix-Qwen3-30B-A3B.dat \
    /models/Qwen3-30B-A3B-BF16-00001-of-00002.gguf \
    /models/Qwen3-30B-A3B-mix-IQ2_KS.gguf \
    IQ4_KS \
    24
"""


def test_import_model_card_block():
    r, lints = import_text(CARD)
    assert lints == []
    assert r.base == "IQ4_KS" and r.imatrix == "/models/imatrix-Qwen3-30B-A3B.dat"
    assert [str(x) for x in r.rules] == [
        r"blk\..*\.attn_.*=iq4_ks", r"blk\.[0-2]\.ffn_down_exps\.weight=iq4_ks",
        r"blk\..*\.ffn_(gate|up|down)_exps\.weight=iq2_ks", r"token_embd\.weight=iq4_k",
        r"output\.weight=iq6_k"]
    p = plan(QWEN, r)
    assert p.entry("output.weight").type == "iq6_k" and not p.errors


def test_comment_pipeline_matches_the_shell_idiom():
    assert comment_pipeline("\n# c\na=q8_0\n\n\nb=q4_K\n") == "a=q8_0,b=q4_K"
    kept = "  # indented comment stays"
    assert comment_pipeline(kept + "\na=q8_0") == kept + ",a=q8_0"


def test_import_override_tensor_from_a_server_line():
    text = ("llama-quantize --pure in.gguf out.gguf Q4_K_M\n"
            "llama-server -m out.gguf -ngl 99 -ot 'exps=CPU,blk\\.1\\.=CUDA1'\n")
    r, _ = import_text(text)
    assert r.pure and r.placement == (Placement("exps", "CPU"), Placement(r"blk\.1\.", "CUDA1"))


def test_import_output_name_is_optional():
    r, _ = parse_argv(["--pure", "in.gguf", "q8_0"])
    assert r.base == "q8_0" and r.pure


def test_mainline_round_trip_and_warnings():
    r = Recipe("Q4_K_M", rules=(Rule("ffn_down", "q6_K"), Rule("attn_q", "iq4_ks")),
               attn_v_type="q8_0")
    text, lints = export_mainline(r, "in.gguf", "out.gguf")
    assert text.count("--tensor-type") == 3 and "--attn-v-type" not in text
    assert any(w.severity == "error" and "iq4_ks" in w.message for w in lints)
    back, _ = parse_argv(shlex.split(text.replace("\\\n", " "))[1:])
    assert back.rules[:2] == r.rules and back.rules[2] == Rule(r"attn_v\.weight", "q8_0")
    mixed, _ = parse_argv(["--tensor-type", "ATTN_V=Q8_0", "--output-tensor-type", "Q6_K",
                           "in.gguf", "out.gguf", "q4_k_m"])
    assert mixed.rules == (Rule("attn_v", "q8_0"),) and mixed.output_tensor_type == "q6_K"


def test_options_after_the_file_names_are_an_error():
    _, lints = parse_argv(["in.gguf", "out.gguf", "Q4_K_M", "--pure"])
    assert lints and lints[0].severity == "error" and "thread count" in lints[0].message
    with pytest.raises(ValueError, match="invalid ftype"):
        parse_argv(["in.gguf", "out.gguf", "Q9"])
