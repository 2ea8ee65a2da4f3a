"""`iqk-studio --self-test` (what packaging/build.py runs in the frozen app) passes on this install,
and fails when a step does not give what its oracle says."""

import pytest

from iqk_studio.gui import selftest
from iqk_studio.gui.main_window import MainWindow


def test_self_test_passes(qapp, tmp_path, capsys):
    from iqk_studio.gui import app

    assert app.main(["--self-test", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "self-test passed" in out and "FAILED" not in out
    assert (tmp_path / "tiny-q8_0-one.gguf").is_file()


def test_self_test_fails_on_a_wrong_perplexity(qapp, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(selftest, "REF_PPL", selftest.REF_PPL * 1.02)
    win = MainWindow()
    qtbot.addWidget(win)
    with pytest.raises(selftest.SelfTestError, match="perplexity"):
        selftest.run(qapp, win, tmp_path, say=lambda m: None)
    win.shutdown()


def test_tiny_model_is_deterministic(tmp_path):
    from iqk_studio.gguf.tiny import write_tiny_model

    a = write_tiny_model(tmp_path / "a.gguf").read_bytes()
    b = write_tiny_model(tmp_path / "b.gguf").read_bytes()
    assert a == b
