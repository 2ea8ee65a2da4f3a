"""Branches of llama_tensor_get_type that the logs of real models (../shared/refs/plans) do not
reach, on synthetic models (tests/dry_run_cases.py) against ik_llama.cpp's own
`llama-quantize --dry-run` logs of them (tests/data/plans, made by make_logs.py there): every
tensor's type and size, the total, and where llama-quantize aborts."""

from __future__ import annotations

from pathlib import Path

import pytest
from dry_run_cases import CASES, MODELS, llama
from dry_run_logs import assert_plan_matches, parse_log, read_text

from iqk_studio.recipe import Recipe, Rule, plan
from iqk_studio.recipe.model import stand_in

LOGS = Path(__file__).resolve().parent / "data" / "plans"


def test_every_case_has_its_log():
    assert sorted(p.name[:-len(".log.gz")] for p in LOGS.glob("*.log.gz")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_matches_dry_run_log(name):
    case = CASES[name]
    log = LOGS / f"{name}.log.gz"
    command = read_text(log).splitlines()[0]
    assert command.startswith("# llama-quantize --dry-run " + " ".join(
        [*case.options, "model.gguf", "out.gguf", case.ftype]) + "  (exit "), command
    run = parse_log(log)
    assert run.logged, f"{log.name} lists no tensor"
    model = stand_in(*MODELS[case.model]())  # the whole model, also where the log stops early
    assert list(model.tensors)[:len(run.model.tensors)] == list(run.model.tensors)
    assert_plan_matches(plan(model, case.recipe), run)


def test_imatrix_coverage_with_name_fallbacks():
    from iqk_studio.recipe.plan import imatrix_entry

    names = {"blk.0.ffn_up_exps.weight", "blk.0.attn_kv_b.weight", "blk.0.ffn_up.weight"}
    assert imatrix_entry("blk.0.ffn_gate_exps.weight", names)  # -> ffn_up_exps
    assert imatrix_entry("blk.0.attn_v_b.weight", names)  # MLA: attn_v_b <-> attn_kv_b
    assert imatrix_entry("blk.0.ffn_gate.weight", names)  # dense gate -> ffn_up
    assert not imatrix_entry("blk.1.ffn_up_exps.weight", names)
    m = stand_in(*llama(n_layer=2, n_expert=4, n_ff=256))
    r = Recipe("Q8_0", rules=(Rule("exps", "iq2_xs"),), imatrix="i.dat")
    assert not plan(m, r).errors
    p = plan(m, r, imatrix_names={"blk.0.ffn_up_exps.weight", "blk.0.ffn_down_exps.weight"})
    (w,) = [w for w in p.warnings if w.code == "needs-imatrix"]
    assert set(w.tensors) == {"blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight",
                              "blk.1.ffn_down_exps.weight"}


def test_unexpected_attention_count_asserts():
    t, md = llama(n_layer=3)
    t = [x for x in t if x[0] != "blk.2.attn_v.weight"]
    p = plan(stand_in(t, md), Recipe("Q8_0"))
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


def test_interleaved_table_from_the_type_table():
    """INTERLEAVED (derived from gguf/types.py) against interleaved_properties as written in
    src/llama-quantize.cpp:83-117 (ik_llama.cpp 8337e4cd3), transcribed here as the oracle:
    q8_k_r8 falls back to q8_0 (not its base q8_K), q8_k_r16 has no entry."""
    from iqk_studio.gguf.types import INTERLEAVED

    want = {
        "q4_0_4x4": ("q4_0", 4), "q4_0_4x8": ("q4_0", 4), "q4_0_8x8": ("q4_0", 8),
        "q4_0_r8": ("q4_0", 8), "q5_0_r4": ("q5_0", 4), "q6_0_r4": ("q6_0", 4),
        "q8_0_r8": ("q8_0", 8), "q2_k_r4": ("q2_K", 4), "q3_k_r4": ("q3_K", 4),
        "q4_k_r4": ("q4_K", 4), "q5_k_r4": ("q5_K", 4), "q6_k_r4": ("q6_K", 4),
        "iq2_xxs_r4": ("iq2_xxs", 4), "iq2_xs_r4": ("iq2_xs", 4), "iq2_s_r4": ("iq2_s", 4),
        "iq3_xxs_r4": ("iq3_xxs", 4), "iq3_s_r4": ("iq3_s", 4), "iq4_xs_r8": ("iq4_xs", 8),
        "iq4_nl_r4": ("iq4_nl", 4), "iq1_s_r4": ("iq1_s", 4), "iq1_m_r4": ("iq1_m", 4),
        "iq2_bn_r4": ("iq2_bn", 4), "iq2_k_r4": ("iq2_k", 4), "iq3_k_r4": ("iq3_k", 4),
        "iq4_k_r4": ("iq4_k", 4), "iq4_ks_r4": ("iq4_ks", 4), "iq5_ks_r4": ("iq5_ks", 4),
        "iq5_k_r4": ("iq5_k", 4), "mxfp4_r8": ("mxfp4", 8), "q8_KV_r8": ("q8_KV", 8),
        "q8_k_r8": ("q8_0", 8), "bf16_r16": ("bf16", 16),
    }
    assert INTERLEAVED == want
