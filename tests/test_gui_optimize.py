"""Run > Optimize for a size budget on the tiny qwen2 model (1 chunk of 128, two types): the
recipe lands in the editor as one undoable step, fits the budget, and the summary's prediction
follows it; a cancel keeps the measurements; bad input is one line and starts nothing."""

import pytest

pytest.importorskip("PySide6")
from iqk_studio.gui.main_window import MainWindow
from iqk_studio.gui.optimize_dialog import load_result
from iqk_studio.jobs.events import Failed
from iqk_studio.optimize.job import Measured
from iqk_studio.recipe import textfile
from iqk_studio.results import model_id, open_store


@pytest.fixture
def win(qtbot, shared, tmp_path, monkeypatch):
    monkeypatch.setenv("IQK_STUDIO_DATA", str(tmp_path))  # the window's (default) store
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")))
    w.eval_view.settings.text.setText(str(shared("data", "wiki.test.raw")))
    w.eval_view.settings.n_ctx.setValue(128)
    return w


def _dialog(win, bpw=5.5):
    dlg = win.optimize_dialog()
    assert dlg is not None and dlg.isVisible()
    assert dlg.text.text() == win.eval_view.settings.text.text() and dlg.n_ctx.value() == 128
    dlg.kind.setCurrentIndex(1)  # bits per weight
    dlg.value.setValue(bpw)
    dlg.types.setText("q4_0, q8_0")
    return dlg


def _stored_klds(tmp_path, model) -> int:
    """KLD measurements of groups kept in the store for the model."""
    with open_store(tmp_path / "results.sqlite3") as s:
        keys = s.cost_keys(model_id(model))
        rows = s.get_costs(keys[0][0]) if keys else []
    return sum(1 for r in rows if r.kld == r.kld and not r.group.startswith("recipe:"))


def test_optimize_loads_one_undoable_recipe(win, qtbot, tmp_path):
    s = win.session
    before = s.text
    assert win.summary.prediction.text() == ""  # nothing measured for this model yet
    dlg = _dialog(win)
    dlg.placement.setText("ffn_=CPU")  # kept in the recipe with a total budget
    with qtbot.waitSignal(dlg.runner.done, timeout=120000) as done:
        assert dlg.start()
    assert done.args == [False], dlg.panel.status.toolTip()
    r = dlg.result
    assert r is not None
    budget = int(5.5 * s.model.n_elements / 8)
    assert r.plan.total_bytes <= budget
    # the editor holds the result (a comment on top), planned to the same bytes
    assert textfile.loads(s.text, "x") == r.recipe and s.text.startswith("# iqk-studio optimize")
    assert win.plan.total_bytes == r.plan.total_bytes
    assert [str(p) for p in r.recipe.placement] == ["ffn_=CPU"] and win.plan.cpu_bytes > 0
    # the summary's live prediction: now measured, the optimizer's own prediction
    assert win.summary.prediction.text() == f"predicted KLD {r.predicted['kld']:.4f}"
    assert "measured" in dlg.summary.text() and dlg.table.topLevelItemCount() >= 1
    # one undo step takes it back, redo brings it again
    assert s.undo_stack.undoText() == "optimize"
    s.undo_stack.undo()
    assert s.text == before
    s.undo_stack.redo()
    assert textfile.loads(s.text, "x") == r.recipe
    dlg.close()


def test_cancel_keeps_measurements_and_bad_input_is_one_line(win, qtbot, tmp_path):
    s = win.session
    before = s.text
    dlg = _dialog(win, bpw=5.0)
    dlg.types.setText("q4_0, q4_k")
    assert not dlg.start() and "unknown type 'q4_k'" in dlg.panel.status.toolTip()
    dlg.types.setText("q4_0,q8_0")
    dlg.text.setText(str(tmp_path / "missing.txt"))
    assert not dlg.start() and "choose the text" in dlg.panel.status.toolTip()
    dlg.text.setText(win.eval_view.settings.text.text())
    dlg.kind.setCurrentIndex(2)  # GPU + CPU without placement rules
    assert not dlg.start() and "placement" in dlg.panel.status.toolTip()
    dlg.gpu.setValue(1.5)
    dlg.cpu.setValue(0.25)
    dlg.placement.setText("ffn_=CPU, exps")
    budget, place, _ = dlg.budget()
    assert (budget.gpu, budget.cpu, budget.total) == (3 * 2**29, 2**28, None)
    assert [(p.pattern, p.device) for p in place] == [("ffn_", "CPU"), ("exps", "CPU")]
    dlg.placement.setText("")
    dlg.kind.setCurrentIndex(1)
    dlg.value.setValue(0.5)  # far below the smallest types: one line from the job
    failed = []
    dlg.panel.failed.connect(failed.append)
    with qtbot.waitSignal(dlg.runner.done, timeout=60000):
        assert dlg.start()
    assert len(failed) == 1 and failed[0].startswith("budget too small")
    assert "\n" not in failed[0] and s.text == before
    # cancel at the second KLD measurement: the first stays in the store, the editor unchanged
    dlg.value.setValue(5.0)
    seen = []
    dlg.runner.event.connect(lambda ev: isinstance(ev, Measured) and (
        seen.append(ev), len(seen) == 2 and dlg.runner.cancel()))
    with qtbot.waitSignal(dlg.runner.done, timeout=120000) as done:
        assert dlg.start()
    assert done.args == [True] and dlg.result is None and s.text == before
    assert "cancelled" in dlg.panel.status.toolTip()
    n = _stored_klds(tmp_path, s.model_path)  # each stored before its event was sent
    assert 2 <= n <= len(seen) + 1 and n < 4 * 6 + 2 * 2  # not every probe: it did stop
    assert not any(isinstance(e, Failed) for e in seen)
    dlg.close()


def test_a_model_the_engine_cannot_run_says_so(qtbot, shared, tmp_path, monkeypatch):
    """No tokenizer (the quantizer test inputs): the costs are the quantization error, the
    dialog says so, the recipe still loads; a quantized file is told it will be requantized."""
    monkeypatch.setenv("IQK_STUDIO_DATA", str(tmp_path))
    win = MainWindow()
    qtbot.addWidget(win)
    assert win.open_model(str(shared("refs", "quant", "inputs.gguf")))
    win.eval_view.settings.text.setText(str(shared("data", "wiki.test.raw")))
    dlg = win.optimize_dialog()
    assert dlg.note.text() == ""  # a float file
    dlg.kind.setCurrentIndex(1)
    dlg.value.setValue(6.0)
    dlg.types.setText("q4_0,q8_0")
    with qtbot.waitSignal(dlg.runner.done, timeout=120000) as done:
        assert dlg.start()
    assert done.args == [False] and dlg.result is not None
    assert "cannot run this model" in dlg.measured.text()
    assert "not a KLD" in dlg.summary.text()
    assert textfile.loads(win.session.text, "x") == dlg.result.recipe
    assert dlg.result.plan.bpw <= 6.0
    dlg.close()
    assert win.open_model(str(shared("refs", "quant", "out", "q8_0.gguf")))
    before = win.session.text
    load_result(win, dlg.result, "# late\n", dlg)  # a result for the model no longer open
    assert win.session.text == before and dlg.summary.text().startswith("Not loaded")
    dlg = win.optimize_dialog()
    assert "@allow-requantize" in dlg.note.text()
    dlg.close()
