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
    v = win.eval_view
    v.settings.text.setText(str(text))
    v.settings.target.setCurrentIndex(0)  # the file as it is
    v.settings.n_ctx.setValue(128)
    v.settings.chunks.setValue(2)
    results, chunks = [], []
    v.finished.connect(results.append)
    v.panel.event.connect(lambda ev: chunks.append(ev) if type(ev).__name__ == "Chunk" else 0)
    with qtbot.waitSignal(v.panel.runner.done, timeout=300000):
        assert v.start()
    assert [c.index for c in chunks] == [1, 2]
    assert results and results[0].n_chunks == 2
    assert results[0].curve == tuple(c.ppl for c in chunks)
    assert abs(chunks[-1].ppl - results[0].ppl) < 1e-9
    assert f"PPL = {results[0].ppl:.4f}" in v.panel.status.text()
    # the finished run is listed (the file as it is: the baseline) and drawn as an overlay
    assert win.results.rowCount() == 1 and win.results.baseline_id == win.results.run_at(0).id
    assert v._overlays[0].isVisible()
    assert list(v._overlays[0].getData()[1]) == list(results[0].curve)


def test_perplexity_needs_a_text(shared, win):
    win.open_model(str(shared(*INPUTS)))
    win.eval_view.settings.text.setText("")
    assert not win.eval_view.start()
    assert "text" in win.eval_view.panel.status.text()


def test_export_and_import_roundtrip(shared, win, qtbot, monkeypatch):
    win.open_model(str(shared(*INPUTS)))
    win.recipe_panel.editor.setPlainText("@base IQ4_KS\nffn_down=q6_K\nattn=iq4_nl\n")
    qtbot.waitUntil(lambda: win.plan is not None and win.session.snapshot.recipe.base == "IQ4_KS",
                    timeout=3000)
    monkeypatch.setattr(actions.TextDialog, "exec", lambda self: 1)
    text = actions.export_command(win, mainline=False)
    assert "--custom-q" in text and "ffn_down=q6_K,attn=iq4_nl" in text
    before = win.session.snapshot.recipe

    class Paste(actions.TextDialog):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.edit.setPlainText(text)

    monkeypatch.setattr(actions, "TextDialog", Paste)
    win.recipe_panel.editor.setPlainText("@base Q8_0\n")
    assert actions.import_command(win)
    got = win.session.snapshot.recipe
    assert got.rules == before.rules and got.base.upper() == "IQ4_KS"
    win.session.undo_stack.undo()  # the import is one undoable step
    assert win.session.flush().recipe.base == "Q8_0"


def test_closing_the_window_cancels_a_running_job(shared, win, qtbot):
    win.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")))
    v = win.eval_view
    v.settings.text.setText(str(shared("data", "wiki.test.raw")))
    v.settings.target.setCurrentIndex(0)
    v.settings.n_ctx.setValue(64)
    v.settings.chunks.setValue(0)  # all: long enough to be cancelled
    got = []
    v.panel.event.connect(got.append)
    assert v.start()
    qtbot.waitUntil(lambda: len(got) > 2, timeout=120000)
    win.close()
    assert v.panel.runner.wait(1)
    assert win.model is None


def test_sensitivity_tab(shared, win, qtbot):
    win.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")))
    s = win.sensitivity_view
    win.eval_view.settings.text.setText("")
    assert not s.start()  # no evaluation text yet: a message
    win.eval_view.settings.text.setText(str(shared("data", "wiki.test.raw")))
    s.qtype.setCurrentText("q4_0")
    s.by.setCurrentText("role")
    s.only.setText("attn_v|ffn_down")
    s.n_ctx.setValue(128)
    s.chunks.setValue(1)
    with qtbot.waitSignal(s.panel.runner.done, timeout=300000):
        assert s.start()
    labels = {s.table.topLevelItem(i).text(0) for i in range(s.table.topLevelItemCount())}
    assert labels == {"attn_v", "ffn_down"}
    assert len(s._bars.opts["height"]) == 2  # the chart has one bar per group
    store = win.results.source.store  # recorded as a sensitivity run with its groups
    (rec,) = store.list_runs(kind="sensitivity")
    groups = store.get_run(rec.id).groups
    assert rec.status == "finished" and {g.label for g in groups} == labels
    assert rec.facts["type"] == "q4_0" and rec.facts["by"] == "role"
    s.only.setText("(")  # a bad regex is a message, not a crash
    assert not s.start() and "cannot start" in s.panel.status.text()
