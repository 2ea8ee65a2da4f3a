"""The GUI's jobs end to end: quantize with progress, perplexity with a live plot, export/import."""

import pytest

pytest.importorskip("PySide6")
from iqk_studio.gui import actions
from iqk_studio.gui.main_window import MainWindow

INPUTS = ("refs", "quant", "inputs.gguf")


@pytest.fixture
def win(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    return w


def test_quantize_writes_the_planned_file(shared, win, qtbot, tmp_path):
    from iqk_studio.gguf.reader import open_model
    win.open_model(str(shared(*INPUTS)))
    win.recipe_panel.editor.setPlainText("@base Q8_0\n")
    qtbot.waitUntil(lambda: win.plan is not None, timeout=3000)
    out = tmp_path / "out.gguf"
    qc = win.quantize_control
    with qtbot.waitSignal(qc.runner.done, timeout=120000) as blocker:
        assert qc.start(str(out))
    assert blocker.args == [False]
    with open_model(out) as m, open_model(shared("refs", "quant", "out", "q8_0.gguf")) as ref:
        for e in win.plan.entries:
            assert m.tensors[e.name].qtype.name == e.type
            assert (m.tensor_data(e.name) == ref.tensor_data(e.name)).all(), e.name


def test_quantize_cancel_leaves_no_file(shared, win, qtbot, tmp_path, monkeypatch):
    import time

    from iqk_studio.jobs import quantize as qjob
    real = qjob.quantize_model

    def slow(*a, **k):  # the test inputs quantize in milliseconds: give the cancel time to land
        for ev in real(*a, **k):
            time.sleep(0.05)
            yield ev

    monkeypatch.setattr(qjob, "quantize_model", slow)
    win.open_model(str(shared(*INPUTS)))
    win.recipe_panel.editor.setPlainText("@base Q8_0\n")
    qtbot.waitUntil(lambda: win.plan is not None, timeout=3000)
    out = tmp_path / "out.gguf"
    qc = win.quantize_control
    qc.runner.event.connect(lambda ev: qc.runner.cancel())
    with qtbot.waitSignal(qc.runner.done, timeout=120000) as blocker:
        qc.start(str(out))
    assert blocker.args == [True]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_perplexity_live_plot(shared, win, qtbot):
    model = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = shared("data", "wiki.test.raw")
    win.open_model(str(model))
    v = win.ppl_view
    v.text.setText(str(text))
    v.n_ctx.setValue(128)
    v.chunks.setValue(3)
    results = []
    v.finished.connect(results.append)
    with qtbot.waitSignal(v.runner.done, timeout=300000):
        assert v.start()
    assert v.buf.n == 3
    assert results and results[0].n_chunks == 3
    assert abs(v.buf.ppl[2] - results[0].ppl) < 1e-9
    assert "Final estimate" in v.status.text()


def test_perplexity_needs_a_text(shared, win):
    win.open_model(str(shared(*INPUTS)))
    assert not win.ppl_view.start()
    assert "text" in win.ppl_view.status.text()


def test_export_and_import_roundtrip(shared, win, qtbot, monkeypatch):
    win.open_model(str(shared(*INPUTS)))
    win.recipe_panel.editor.setPlainText("@base IQ4_KS\nffn_down=q6_K\nattn=iq4_nl\n")
    qtbot.waitUntil(lambda: win.plan is not None and win.recipe_panel.recipe().base == "IQ4_KS",
                    timeout=3000)
    monkeypatch.setattr(actions.TextDialog, "exec", lambda self: 1)
    text = actions.export_command(win, mainline=False)
    assert "--custom-q" in text and "ffn_down=q6_K,attn=iq4_nl" in text
    before = win.recipe_panel.recipe()

    class Paste(actions.TextDialog):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.edit.setPlainText(text)

    monkeypatch.setattr(actions, "TextDialog", Paste)
    win.recipe_panel.editor.setPlainText("@base Q8_0\n")
    assert actions.import_command(win)
    got = win.recipe_panel.recipe()
    assert got.rules == before.rules and got.base.upper() == "IQ4_KS"


def test_closing_the_window_cancels_a_running_job(shared, win, qtbot):
    win.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")))
    v = win.ppl_view
    v.text.setText(str(shared("data", "wiki.test.raw")))
    v.n_ctx.setValue(64)
    got = []
    v.runner.event.connect(got.append)
    assert v.start()
    qtbot.waitUntil(lambda: len(got) > 2, timeout=120000)
    win.close()
    assert v.runner.wait(1)
    assert win.model is None


def test_recipe_evaluation_lands_on_the_chart(shared, win, qtbot, tmp_path):
    win.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")))
    win.recipe_panel.editor.setPlainText("@base Q8_0\n@note all q8_0\n")
    qtbot.waitUntil(lambda: bool(win.plan is not None and win.recipe_panel.recipe().note),
                    timeout=3000)
    v = win.ppl_view
    v.text.setText(str(shared("data", "wiki.test.raw")))
    v.n_ctx.setValue(128)
    v.chunks.setValue(2)
    assert v.evaluate_recipe.isChecked()
    with qtbot.waitSignal(v.runner.done, timeout=300000):
        assert v.start()
    pts = win.compare_view.points
    assert len(pts) == 1 and pts[0].label == "all q8_0"
    assert pts[0].total_bytes == win.plan.total_bytes
    v.evaluate_recipe.setChecked(False)  # the file as it is: no chart point
    with qtbot.waitSignal(v.runner.done, timeout=300000):
        assert v.start()
    assert len(win.compare_view.points) == 1
    out = tmp_path / "p.csv"
    win.compare_view.save_csv(out)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("label,total_bytes") and lines[1].startswith("all q8_0,")


def test_sensitivity_tab(shared, win, qtbot):
    win.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")))
    s = win.sensitivity_view
    assert not s.start()  # no evaluation text yet: a message
    win.ppl_view.text.setText(str(shared("data", "wiki.test.raw")))
    s.qtype.setCurrentText("q4_0")
    s.by.setCurrentText("role")
    s.only.setText("attn_v|ffn_down")
    s.n_ctx.setValue(128)
    s.chunks.setValue(1)
    with qtbot.waitSignal(s.runner.done, timeout=300000):
        assert s.start()
    labels = {s.table.topLevelItem(i).text(0) for i in range(s.table.topLevelItemCount())}
    assert labels == {"attn_v", "ffn_down"}
    s.only.setText("(")  # a bad regex is a message, not a crash
    assert not s.start() and "cannot start" in s.status.text()
