"""`iqk-studio-cli plan` and `recipe` on a small skeleton GGUF written to tmp_path."""

from __future__ import annotations

import io
import json

import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.skeleton import build_skeleton
from iqk_studio.recipe import Recipe, Rule, plan
from iqk_studio.recipe.model import stand_in
from iqk_studio.recipe.textfile import load

N_EMBD, N_FF, N_EXP, N_LAYER = 256, 512, 4, 3


def tensors():
    t = [("token_embd.weight", (N_EMBD, 300), "f16")]
    for i in range(N_LAYER):
        b = f"blk.{i}."
        t += [(b + "attn_norm.weight", (N_EMBD,), "f32"),
              (b + "attn_q.weight", (N_EMBD, N_EMBD), "f16"),
              (b + "attn_k.weight", (N_EMBD, 64), "f16"),
              (b + "attn_v.weight", (N_EMBD, 64), "f16"),
              (b + "attn_output.weight", (N_EMBD, N_EMBD), "f16"),
              (b + "ffn_gate_inp.weight", (N_EMBD, N_EXP), "f32"),
              (b + "ffn_gate_exps.weight", (N_EMBD, N_FF, N_EXP), "f16"),
              (b + "ffn_up_exps.weight", (N_EMBD, N_FF, N_EXP), "f16"),
              (b + "ffn_down_exps.weight", (N_FF, N_EMBD, N_EXP), "f16")]
    return t + [("output_norm.weight", (N_EMBD,), "f32"), ("output.weight", (N_EMBD, 300), "f16")]


META = {"general.architecture": "qwen3moe", "qwen3moe.block_count": N_LAYER,
        "qwen3moe.attention.head_count": 4, "qwen3moe.attention.head_count_kv": 1,
        "qwen3moe.embedding_length": N_EMBD, "qwen3moe.expert_count": N_EXP,
        "qwen3moe.expert_used_count": 2, "qwen3moe.vocab_size": 300}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_skeleton(tmp_path_factory.mktemp("m") / "tiny.gguf", tensors(), META))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_json(model, capsys):
    code, out, _ = run(capsys, "plan", model, "IQ4_KS", "--custom-q", "exps=iq2_ks",
                       "--placement", "exps=CPU", "--json")
    assert code == 0
    d = json.loads(out)
    want = plan(stand_in(tensors(), META), Recipe("IQ4_KS", rules=(Rule("exps", "iq2_ks"),)))
    assert d["total_bytes"] == want.total_bytes
    assert d["gib"] == pytest.approx(want.total_bytes / 2**30)
    assert {"total_bytes", "gib", "bpw", "tensors", "warnings"} <= set(d)
    t = {x["name"]: x for x in d["tensors"]}
    assert t["blk.0.ffn_up_exps.weight"]["type"] == "iq2_ks"
    k = t["blk.0.attn_k.weight"]
    assert k["type"] == "q8_0" and "n_expert" in k["reason"]
    assert d["cpu_bytes"] == sum(x["bytes"] for x in d["tensors"] if "exps" in x["name"])
    assert all({"name", "type", "bytes", "reason"} <= set(x) for x in d["tensors"])


def test_plan_table_and_lint(model, capsys):
    code, out, err = run(capsys, "plan", model, "Q8_0", "--custom-q", "shexp=q4_K",
                         "--output-tensor-type", "q6_k")
    assert code == 0, err
    assert "blk.2.ffn_down_exps.weight" in out and "total:" in out and "by class:" in out
    assert "matches no tensor" in out and "silently ignored" in out


def test_plan_strict_and_errors(model, capsys):
    code, _, _ = run(capsys, "plan", model, "Q8_0", "--custom-q", "exps=iq1_s", "--strict")
    assert code == 1
    code, _, err = run(capsys, "plan", model)
    assert code == 1 and "BASE_TYPE" in err
    code, _, err = run(capsys, "plan", model + ".missing", "Q8_0")
    assert code == 1 and "error" in err


def test_plan_with_library_recipe(model, capsys):
    code, out, _ = run(capsys, "plan", model, "--recipe", "moe-iq2_ks-experts", "--json")
    assert code == 0 and json.loads(out)["base"] == "IQ4_KS"


def test_recipe_export_and_import(model, capsys, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "recipe", "export", "--format", "ik", "--imatrix", "im.dat",
                       r"blk\.0\.=q8_0", "exps=iq3_k", "in.gguf", "out.gguf", "--base", "IQ4_K")
    assert code == 0 and "--custom-q" in out and out.rstrip().endswith("IQ4_K")
    monkeypatch.setattr("sys.stdin", io.StringIO(out))
    dest = tmp_path / "r.recipe"
    code, _, _ = run(capsys, "recipe", "import", "-o", str(dest))
    assert code == 0
    r = load(dest)
    assert r.base == "IQ4_K" and r.imatrix == "im.dat" and [str(x) for x in r.rules] == [
        r"blk\.0\.=q8_0", "exps=iq3_k"]
    code, out, err = run(capsys, "recipe", "export", "--format", "mainline", "--recipe", str(dest),
                         "in.gguf", "out.gguf")
    assert code == 0 and "--tensor-type" in out and "iq3_k does not exist in mainline" in err


def test_recipe_list(capsys):
    code, out, _ = run(capsys, "recipe", "list")
    assert code == 0 and "moe-iq2_ks-experts" in out


def test_plan_mainline_tensor_type(model, capsys):
    code, out, _ = run(capsys, "plan", model, "Q8_0", "--tensor-type", "FFN_UP_EXPS=Q5_K", "--json")
    t = {x["name"]: x for x in json.loads(out)["tensors"]}
    assert code == 0 and t["blk.1.ffn_up_exps.weight"]["type"] == "q5_K"
