"""Branches of llama_tensor_get_type that the dry-run logs do not reach, on synthetic models whose
expected types follow from src/llama-quantize.cpp (line refs in the recipe modules)."""

from __future__ import annotations

import pytest

from iqk_studio.gguf.skeleton import deepseek_v3
from iqk_studio.recipe import Recipe, Rule, plan
from iqk_studio.recipe.mixes import use_more_bits
from iqk_studio.recipe.model import stand_in


def llama(n_layer=32, n_head=32, n_head_kv=8, n_vocab=128256, n_embd=4096, n_ff=14336,
          tied=False, arch="llama", w="f16", n_expert=0):
    t = [("token_embd.weight", (n_embd, n_vocab), w)]
    hd = n_embd // n_head
    for i in range(n_layer):
        b = f"blk.{i}."
        t += [(b + "attn_norm.weight", (n_embd,), "f32"),
              (b + "attn_q.weight", (n_embd, n_embd), w),
              (b + "attn_k.weight", (n_embd, n_head_kv * hd), w),
              (b + "attn_v.weight", (n_embd, n_head_kv * hd), w),
              (b + "attn_output.weight", (n_embd, n_embd), w),
              (b + "ffn_norm.weight", (n_embd,), "f32")]
        if n_expert:
            t += [(b + "ffn_gate_inp.weight", (n_embd, n_expert), "f32"),
                  (b + "ffn_gate_exps.weight", (n_embd, n_ff, n_expert), w),
                  (b + "ffn_up_exps.weight", (n_embd, n_ff, n_expert), w),
                  (b + "ffn_down_exps.weight", (n_ff, n_embd, n_expert), w)]
        else:
            t += [(b + "ffn_gate.weight", (n_embd, n_ff), w),
                  (b + "ffn_up.weight", (n_embd, n_ff), w),
                  (b + "ffn_down.weight", (n_ff, n_embd), w)]
    t += [("output_norm.weight", (n_embd,), "f32")]
    if not tied:
        t += [("output.weight", (n_embd, n_vocab), w)]
    md = {"general.architecture": arch, f"{arch}.block_count": n_layer,
          f"{arch}.attention.head_count": n_head, f"{arch}.attention.head_count_kv": n_head_kv,
          f"{arch}.embedding_length": n_embd, f"{arch}.vocab_size": n_vocab}
    if n_expert:
        md[f"{arch}.expert_count"] = n_expert
    return stand_in(t, md)


def types(p, suffix):
    return [e.type for e in p.entries if e.name.endswith(suffix)]


def test_use_more_bits_layers():
    assert [i for i in range(32) if use_more_bits(i, 32)] == \
        [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q4_k_m_dense_8b():
    p = plan(llama(), Recipe("Q4_K_M"))
    more = [use_more_bits(i, 32) for i in range(32)]
    assert types(p, "attn_v.weight") == ["q6_K" if m else "q5_K" for m in more]  # gqa 4 bump
    assert types(p, "ffn_down.weight") == ["q6_K" if m else "q4_K" for m in more]
    assert types(p, "attn_q.weight") == ["q4_K"] * 32
    assert p.entry("output.weight").type == "q6_K"
    assert p.entry("token_embd.weight").type == "q4_K"


def test_70b_attn_v_rule_preempts_the_mix():
    m = llama(n_layer=80, n_head=64, n_head_kv=8, n_embd=8192, n_ff=28672)
    assert set(types(plan(m, Recipe("Q4_K_M")), "attn_v.weight")) == {"q5_K"}
    assert set(types(plan(m, Recipe("IQ4_KS")), "attn_v.weight")) == {"iq4_ks"}  # no gqa bump
    assert set(types(plan(m, Recipe("IQ3_K")), "attn_v.weight")) == {"iq5_k"}
    dense65 = llama(n_layer=80, n_head=64, n_head_kv=64, n_embd=8192, n_ff=22016)
    assert set(types(plan(dense65, Recipe("IQ4_KS")), "attn_v.weight")) == {"iq4_ks"}  # gqa 1


def test_iq5_k_big_vocab_8b():
    p = plan(llama(), Recipe("IQ5_K"))
    assert set(types(p, "attn_v.weight")) == {"iq6_k"}
    assert set(types(p, "attn_q.weight")) == {"iq4_k"}
    small = plan(llama(n_vocab=32000), Recipe("IQ5_K"))  # 7B: no bump, and no gqa bump either
    assert set(types(small, "attn_v.weight")) == {"iq5_k"}


def test_qwen3_8b_model_type():
    m = llama(n_layer=36, arch="qwen3", n_vocab=151936, n_embd=4096)
    assert set(types(plan(m, Recipe("IQ5_KS")), "attn_q.weight")) == {"iq4_ks"}
    m4 = llama(n_layer=36, arch="qwen3", n_vocab=151936, n_embd=2560, n_head=32, n_ff=9728)
    assert set(types(plan(m4, Recipe("IQ5_KS")), "attn_q.weight")) == {"iq5_ks"}


def test_tied_embeddings_use_the_output_rule():
    m = llama(n_layer=4, tied=True)
    assert plan(m, Recipe("IQ4_KS")).entry("token_embd.weight").type == "iq5_k"
    assert plan(m, Recipe("IQ2_K")).entry("token_embd.weight").type == "iq4_k"
    r = Recipe("IQ4_KS", rules=(Rule("token_embd", "q8_0"),), output_tensor_type="q6_K")
    assert plan(m, r).entry("token_embd.weight").type == "q8_0"  # custom beats --output-tensor
    r2 = r.with_(token_embedding_type="q4_K")
    assert plan(m, r2).entry("token_embd.weight").type == "q4_K"  # the post-override wins


def test_iq2_ks_ffn_down_counter_counts_shexp_too():
    t, md, _ = deepseek_v3()
    p = plan(stand_in(t, md), Recipe("IQ2_KS"))
    downs = [e for e in p.entries if "ffn_down" in e.name]
    assert [e.type for e in downs[:7]] == ["q2_K"] * 7  # 61 // 8 = 7 tensors, by file order
    assert [e.layer for e in downs[:8]] == [0, 1, 2, 3, 3, 4, 4, 5]  # dense 0-2, then exps+shexp
    assert downs[7].type == "iq2_ks"  # layer 5 < 61/8, yet no bump: the counter decides


def test_iq2_ks_ignores_role_options_but_not_attn_output():
    m = llama(n_layer=8, n_expert=8, n_ff=512)
    p = plan(m, Recipe("IQ2_KS", attn_v_type="q8_0", attn_output_type="q6_K"))
    assert set(types(p, "attn_v.weight")) == {"iq4_k"}
    assert set(types(p, "attn_output.weight")) == {"q6_K"}
    assert any(w.code == "option-ignored" and "--attn-v-type" in w.message for w in p.warnings)


def test_generic_role_options_and_moe_defaults():
    m = llama(n_layer=8, n_expert=8, n_ff=512)
    p = plan(m, Recipe("IQ4_K"))
    assert set(types(p, "attn_k.weight")) == {"q8_0"} and set(types(p, "attn_v.weight")) == {"q8_0"}
    assert set(types(p, "attn_output.weight")) == {"q5_K"}
    p2 = plan(m, Recipe("IQ4_K", attn_k_type="iq6_k", ffn_up_type="iq3_k"))
    assert set(types(p2, "attn_k.weight")) == {"iq6_k"}
    assert set(types(p2, "ffn_up_exps.weight")) == {"iq3_k"}


def test_pure_and_float_bases_ignore_rules():
    m = llama(n_layer=2)
    r = Recipe("Q4_K_M", rules=(Rule("attn_q", "q8_0"),), pure=True, token_embedding_type="q8_0")
    p = plan(m, r)
    assert set(types(p, "attn_q.weight")) == {"q4_K"}
    assert p.entry("output.weight").type == "q4_K"  # no output rule under --pure
    assert p.entry("token_embd.weight").type == "q8_0"  # post-override still applies
    p16 = plan(m, Recipe("F16", rules=(Rule("attn_q", "q8_0"),)))
    assert set(e.type for e in p16.entries if e.source_type == "f16") == {"f16"}
    assert not any(e.quantized for e in p16.entries)  # same type: copied


def test_router_only_with_ffn_gate_inp_type():
    m = llama(n_layer=2, n_expert=4, n_ff=256)
    assert set(types(plan(m, Recipe("Q8_0")), "ffn_gate_inp.weight")) == {"f32"}
    assert set(types(plan(m, Recipe("Q8_0", ffn_gate_inp_type="q8_0")), "ffn_gate_inp.weight")) \
        == {"q8_0"}


def test_interleaved_row_fallback_and_embeddings():
    m = llama(n_layer=1, n_embd=512, n_head=4, n_head_kv=1, n_ff=1024, n_vocab=1001)
    p = plan(m, Recipe("Q8_0", rules=(Rule("token_embd", "iq4_k_r4"), Rule("output", "q4_k_r4"),
                                      Rule("attn_k", "q8_k_r8"), Rule("ffn_up", "q4_k_r4"))))
    assert p.entry("token_embd.weight").type == "iq4_k"  # never interleaved
    out = p.entry("output.weight")
    assert (out.type, out.fallback_from) == ("q4_K", "q4_k_r4")  # 1001 % 4 != 0
    assert p.entry("blk.0.attn_k.weight").type == "q8_k_r8"  # 128 rows: fine
    assert p.entry("blk.0.ffn_up.weight").type == "q4_k_r4"


def test_non_candidates_and_leave_output():
    t = [("a.bias", (64, 64), "f32"), ("ids.weight", (64, 64), "i32"), ("v.weight", (64,), "f32"),
         ("blk.0.ssm_conv1d.weight", (4, 64), "f32"), ("output.weight", (256, 10), "f32")]
    m = stand_in(t, {"general.architecture": "llama", "llama.block_count": 1})
    p = plan(m, Recipe("Q8_0", leave_output_tensor=True))
    assert all(not e.quantized for e in p.entries)
    assert "--leave-output-tensor" in p.entry("output.weight").reason
    assert p.total_bytes == p.source_bytes


def test_falcon_and_narrow_output():
    m = llama(n_layer=1, arch="falcon", n_embd=512, n_head=4, n_head_kv=1, n_ff=1024)
    assert plan(m, Recipe("Q4_K_M")).entry("output.weight").type == "q8_0"
    m2 = llama(n_layer=1, n_embd=640, n_head=4, n_head_kv=1, n_ff=1024)
    assert plan(m2, Recipe("Q4_K_M")).entry("output.weight").type == "q8_0"  # 640 % 256


@pytest.mark.parametrize("base, want", [("IQ4_KS", "q5_K"), ("IQ4_XS", "q5_K"), ("Q4_K_S", "q5_K")])
def test_first_eighth_ffn_down_bump(base, want):
    p = plan(llama(n_layer=16), Recipe(base))
    assert types(p, "ffn_down.weight")[:2] == [want, want]
    assert types(p, "ffn_down.weight")[2] != want
    if base.startswith("IQ4"):  # only without an imatrix
        pi = plan(llama(n_layer=16), Recipe(base, imatrix="x.dat"))
        assert types(pi, "ffn_down.weight")[0] != want


def test_aborts_are_reported():
    m = llama(n_layer=2, n_expert=4, n_ff=256)
    t = [(n, i.shape, i.qtype.name) for n, i in m.tensors.items()]
    t.append(("mtp.ffn_down_exps.weight", (256, 4096, 4), "f16"))
    p = plan(stand_in(t, m.metadata), Recipe("Q4_K_M"))
    assert any(w.code == "abort" and "Failed to determine layer" in w.message for w in p.warnings)
    p2 = plan(llama(n_layer=1, n_embd=96, n_head=3, n_head_kv=3, n_ff=128), Recipe("IQ2_BN"))
    assert any(w.code == "abort" and "Unsupported tensor size" in w.message for w in p2.warnings)


def test_imatrix_coverage_with_name_fallbacks():
    from iqk_studio.recipe.plan import imatrix_entry

    names = {"blk.0.ffn_up_exps.weight", "blk.0.attn_kv_b.weight", "blk.0.ffn_up.weight"}
    assert imatrix_entry("blk.0.ffn_gate_exps.weight", names)  # -> ffn_up_exps
    assert imatrix_entry("blk.0.attn_v_b.weight", names)  # MLA: attn_v_b <-> attn_kv_b
    assert imatrix_entry("blk.0.ffn_gate.weight", names)  # dense gate -> ffn_up
    assert not imatrix_entry("blk.1.ffn_up_exps.weight", names)
    m = llama(n_layer=2, n_expert=4, n_ff=256)
    r = Recipe("Q8_0", rules=(Rule("exps", "iq2_xs"),), imatrix="i.dat")
    assert not plan(m, r).errors
    p = plan(m, r, imatrix_names={"blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight"})
    (w,) = [w for w in p.warnings if w.code == "needs-imatrix"]
    assert set(w.tensors) == {"blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight",
                              "blk.1.ffn_down_exps.weight"}


def test_unexpected_attention_count_asserts():
    m = llama(n_layer=3)
    t = [(n, i.shape, i.qtype.name) for n, i in m.tensors.items() if n != "blk.2.attn_v.weight"]
    p = plan(stand_in(t, m.metadata), Recipe("Q8_0"))
    assert any("n_attention_wv" in w.message for w in p.errors)


def test_every_type_and_ftype_name_in_the_tables_exists():
    """A typo such as "q4_k" for "q4_K" would silently never match: check every literal."""
    import re
    from pathlib import Path

    import iqk_studio.recipe as pkg
    from iqk_studio.quant.types import BY_NAME, FTYPE_BY_NAME

    src = "".join(p.read_text() for p in Path(pkg.__file__).parent.glob("*.py"))
    types = set(re.findall(r'"((?:i?q\d_|bf16|f16|f32|mxfp4)\w*)"', src))
    ftypes = set(re.findall(r'"((?:I?Q\d|IQ\d|BF16|F16|F32|MXFP4)[A-Z0-9_]*)"', src))
    assert types and ftypes
    assert sorted(t for t in types if t not in BY_NAME) == []
    assert sorted(f for f in ftypes if f not in FTYPE_BY_NAME) == []
