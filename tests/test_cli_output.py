"""inspect / plan output that any consumer can read: strict JSON (no NaN tokens), invalid UTF-8 in
names shown as \\xNN (never "'utf-8' codec can't encode ... surrogates"), bounded widths."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from iqk_studio.cli import main
from iqk_studio.commands._output import dump_json, json_safe, printable
from iqk_studio.gguf.skeleton import build_skeleton
from iqk_studio.gguf.values import ValueType

TENSORS = [("token_embd.weight", (256, 32), "f16"), ("blk.0.attn_v.weight", (256, 256), "f16"),
           ("out\udcffput.weight", (256, 32), "f16")]
META = {"general.architecture": "llama", "llama.block_count": 1,
        "llama.attention.head_count": 8, "llama.embedding_length": 256,
        "general.name": "bad \udcfe name", "general.k\udcffey": 1,
        "general.nan": float("nan"), "general.inf": float("-inf"),
        "general.arr": np.array([np.nan, np.inf, 1.0], np.float32),
        "general.long." + "k" * 300: 1}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    p = tmp_path_factory.mktemp("out") / "hostile.gguf"
    return build_skeleton(p, TENSORS, META, {"general.nan": (ValueType.FLOAT32, None)})


def strict_json(text: str):
    def bad(c):
        raise AssertionError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=bad)


@pytest.mark.parametrize("argv", [["inspect", "--json"], ["plan", "--json"]])
def test_json_is_strict(hostile, capsys, argv):
    extra = ["Q4_K_M"] if argv[0] == "plan" else []
    assert main([argv[0], str(hostile), *extra, argv[1]]) == 0
    s = strict_json(capsys.readouterr().out)
    text = json.dumps(s)
    assert "\\udc" not in text  # no lone surrogates, which strict UTF-8 consumers reject
    assert "out\\\\xffput.weight" in text
    if argv[0] == "inspect":
        md = s["metadata"]
        assert md["general.nan"]["value"] == "nan" and md["general.inf"]["value"] == "-inf"
        assert md["general.arr"]["value"] == ["nan", "inf", 1.0]
        assert "general.k\\xffey" in md and md["general.name"]["value"] == "bad \\xfe name"


def test_text_output_with_a_strict_utf8_stdout(hostile):
    """A UTF-8 terminal that is not in surrogateescape mode (PYTHONIOENCODING=utf-8)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for argv in (["inspect", str(hostile)], ["plan", str(hostile), "Q4_K_M"]):
        r = subprocess.run([sys.executable, "-m", "iqk_studio.cli", *argv], env=env,
                           capture_output=True, text=True, encoding="utf-8", errors="strict")
        assert r.returncode == 0, r.stderr
        assert "out\\xffput.weight" in r.stdout and "Traceback" not in r.stderr
        widest = max(len(line.split(" = ")[0]) for line in r.stdout.splitlines())
        assert widest < 400  # a 300-character key does not widen every line


def test_helpers():
    assert printable("ok é") == "ok é" and printable("a\udcffb") == "a\\xffb"
    assert json_safe({"x\udcff": [float("nan"), 1.5, (2, "y")]}) == {"x\\xff": ["nan", 1.5,
                                                                             [2, "y"]]}

    class Out:
        text = ""

        def write(self, s):
            self.text += s
    o = Out()
    dump_json({"a": float("inf")}, o)
    assert strict_json(o.text) == {"a": "inf"}
