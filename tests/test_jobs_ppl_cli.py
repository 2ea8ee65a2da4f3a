"""iqk-studio-cli perplexity / kld / imatrix on the tiny reference models: output parseable as
llama-perplexity's, clean one-line errors."""

from __future__ import annotations

import re

import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.imatrix import load_imatrix


@pytest.fixture
def tiny(shared):
    return str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")), str(shared("data", "wiki.test.raw"))


def test_perplexity_cli_prints_like_reference(tiny, capsys):
    model, text = tiny
    assert main(["perplexity", model, "-f", text, "--chunks", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\[1\]1698\d{3}\.\d{4},\[2\]18\d{5}\.\d{4},", out[0])
    assert re.fullmatch(r"Final estimate: PPL over 2 chunks for n_ctx=512 = \d+\.\d{4} "
                        r"\+/- \d+\.\d{5}", out[1])


def test_perplexity_cli_errors(tiny, tmp_path, capsys):
    model, _ = tiny
    short = tmp_path / "s.txt"
    short.write_text("a b c\n")
    assert main(["perplexity", model, "-f", str(short)]) == 1
    assert "you need at least 1024 tokens" in capsys.readouterr().err
    assert main(["perplexity", str(tmp_path / "none.gguf"), "-f", str(short)]) == 1
    assert "no such model file" in capsys.readouterr().err


def test_kld_and_imatrix_cli(tiny, tmp_path, capsys):
    model, text = tiny
    base = tmp_path / "b.kld"
    assert main(["kld", model, "--save-base", str(base), "-f", text, "--chunks", "1"]) == 0
    capsys.readouterr()
    assert main(["kld", str(base), model]) == 0
    out = capsys.readouterr().out
    assert "KL Divergence" in out and re.search(r"^   1 ", out, re.M)
    dat = tmp_path / "im.dat"
    assert main(["imatrix", model, "-f", text, "-o", str(dat), "--chunks", "2"]) == 0
    assert "Final estimate: PPL = " in capsys.readouterr().out
    assert load_imatrix(dat).chunks == 2


def test_perplexity_of_a_recipe_equals_the_quantized_file(tiny, tmp_path, capsys):
    model, text = tiny
    out = tmp_path / "q.gguf"
    assert main(["quantize", model, str(out), "Q8_0", "--custom-q", "ffn_down=q4_0"]) == 0
    capsys.readouterr()
    assert main(["perplexity", str(out), "-f", text, "-c", "128", "--chunks", "2"]) == 0
    want = capsys.readouterr().out
    assert main(["perplexity", model, "-f", text, "-c", "128", "--chunks", "2", "--base", "Q8_0",
                 "--custom-q", "ffn_down=q4_0"]) == 0
    got = capsys.readouterr()
    assert got.out == want and "in memory" in got.err
    assert main(["perplexity", model, "-f", text, "--base", "Q8_0", "--custom-q", "x=Q4_0"]) == 1
