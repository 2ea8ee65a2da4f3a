"""The session (one undo stack, one snapshot of recipe + plan + lint) and the job panel, as a user
meets them: undo of every kind of change, unsaved-changes prompt, stale numbers, refusals."""

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QMessageBox  # noqa: E402

from iqk_studio.gui import actions  # noqa: E402
from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.jobs.events import Chunk, Failed, Progress  # noqa: E402
from iqk_studio.jobs.warmup import Compiling  # noqa: E402

INPUTS = ("refs", "quant", "inputs.gguf")


@pytest.fixture
def win(qtbot, shared):
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_model(str(shared(*INPUTS)))
    return w


def _type(qtbot, win, text):
    """Type at the end of the editor, one key at a time, and wait for the re-plan."""
    from PySide6.QtGui import QTextCursor

    ed = win.recipe_panel.editor
    ed.moveCursor(QTextCursor.End)
    for i, line in enumerate(text.split("\n")):
        if i:
            qtbot.keyClick(ed, Qt.Key_Return)
        qtbot.keyClicks(ed, line)
    qtbot.waitUntil(lambda: not win.session.pending, timeout=3000)


def test_open_emits_model_and_plan(qtbot, shared):
    w = MainWindow()
    qtbot.addWidget(w)
    with qtbot.waitSignals([w.session.model_changed, w.session.plan_changed], timeout=3000):
        w.open_model(str(shared(*INPUTS)))
    assert w.session.undo_stack.isClean()  # the starting recipe is not an unsaved change
    assert "note" not in w.session.text  # no automatic @note that would label every run


def test_every_recipe_change_is_one_undo_step(win, qtbot, tmp_path):
    s = win.session
    start = s.text
    _type(qtbot, win, "ffn=q4_0\n")
    assert s.snapshot.recipe.rules[0].type_name == "q4_0"
    assert s.undo_stack.count() == 2  # the starting recipe, then the typing as one step
    qtbot.keyClick(win.recipe_panel.editor, Qt.Key_Z, Qt.ControlModifier)  # the editor's Ctrl+Z
    assert s.text == start and s.snapshot.recipe.rules == ()
    win.redo_action.trigger()
    assert s.flush().recipe.rules[0].type_name == "q4_0"

    win.recipe_panel._set_base("Q4_0")  # the base-type box
    assert s.snapshot.recipe.base == "Q4_0" and "ffn=q4_0" in s.text
    win.tensors_view.select_names(["blk.0.attn_v.weight"])
    win.tensors_view.set_type.setCurrentText("q6_K")
    assert win.tensors_view.set_selection_type()
    assert s.snapshot.plan.entry("blk.0.attn_v.weight").type == "q6_K"
    f = tmp_path / "mine.recipe"
    f.write_text("# kept comment\n@base Q5_0\nattn=q8_0\n")
    assert s.load_recipe_file(f) == ""
    assert s.text.startswith("# kept comment") and s.undo_stack.isClean()
    assert s.recipe_name == "mine"
    win.undo_action.trigger()  # load, set type, base: each one step back
    assert s.snapshot.plan.entry("blk.0.attn_v.weight").type == "q6_K"
    win.undo_action.trigger()
    assert s.snapshot.plan.entry("blk.0.attn_v.weight").type == "q4_0"
    win.undo_action.trigger()
    assert s.snapshot.recipe.base == "Q8_0"
    actions._load_library(win, "iq4_ks-pure")  # a published recipe: undoable, not "saved"
    assert s.snapshot.recipe.base.upper() == "IQ4_KS" and s.recipe_path is None
    win.undo_action.trigger()
    assert s.snapshot.recipe.base == "Q8_0"


def test_save_offers_recipe_and_close_asks(win, qtbot, tmp_path, monkeypatch):
    _type(qtbot, win, "ffn=q4_0\n")
    seen = {}

    def save_dialog(parent, title, default, filters):
        seen["default"], seen["filters"] = default, filters
        return str(tmp_path / "mix"), filters

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    win.ask_to_save = True
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or
                        QMessageBox.Cancel)
    assert not win.close()  # cancelled: the window stays
    assert asked and win.session.model is not None
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Save)
    assert win.close()
    assert seen["default"].endswith(".recipe") and seen["filters"].startswith("Recipe (*.recipe)")
    assert (tmp_path / "mix.recipe").read_text() == win.session.text


def test_plan_error_never_pairs_the_old_plan_with_new_text(win, qtbot):
    s = win.session
    _type(qtbot, win, "ffn=q4_0\n")
    good = s.snapshot.plan
    text = s.text.replace("@base Q8_0", "@base Q4_K_")
    win.recipe_panel.editor.setPlainText(text)
    assert s.stale  # while typing: the shown numbers are marked at once
    qtbot.waitUntil(lambda: not s.pending, timeout=3000)
    snap = s.snapshot
    assert snap.text == text and snap.plan is None and "Q4_K_" in snap.error
    assert s.stale and win.summary.stale and "last valid" in win.summary.state.text()
    assert s.shown_plan is good  # the table keeps the last plan, greyed
    assert "color" in win.tensors_view.table.styleSheet()
    v = win.eval_view
    v.settings.text.setText(__file__)
    v.settings.target.setCurrentIndex(1)
    assert not v.start() and "Q4_K_" in v.panel.status.text()  # refuses to run it
    assert not win.quantize_control.start("never.gguf")
    win.recipe_panel.editor.setPlainText(text.replace("Q4_K_", "Q4_K_M"))
    qtbot.waitUntil(lambda: not s.pending, timeout=3000)
    assert not s.stale and not win.summary.stale and s.snapshot.plan is not None


def test_missing_imatrix_is_an_error_in_the_lint(win, qtbot, tmp_path):
    s = win.session
    s.set_header("imatrix", str(tmp_path / "absent.dat"), "imatrix")
    lint = [w for w in s.snapshot.lints if w.code == "imatrix-missing"]
    assert lint and lint[0].severity == "error"
    assert "absent.dat" in s.snapshot.refusal()
    texts = [win.recipe_panel.lints.item(i).text() for i in range(win.recipe_panel.lints.count())]
    assert any("imatrix" in t for t in texts)
    assert win.recipe_panel.imatrix.text().endswith("absent.dat")


def test_a_new_run_starts_from_a_clean_plot_and_bar(win, qtbot, monkeypatch):
    from iqk_studio.gui import eval_view

    def fake(spec):
        yield Compiling("q4_0", "compiling Q4_0 kernels...")
        yield Progress(1, 4, "layer")
        yield Chunk(1, 2, 1.0, 5.0, 0.5, 100.0, 1.0)
        yield Failed("stop here")

    monkeypatch.setattr(eval_view, "evaluate", fake)
    v = win.eval_view
    v.settings.text.setText(__file__)
    v.settings.target.setCurrentIndex(0)
    said = []
    win.statusBar().messageChanged.connect(said.append)
    with qtbot.waitSignal(v.panel.runner.done, timeout=5000):
        assert v.start()
    assert v.buf.n == 1 and "stop here" in v.panel.status.text()
    assert "compiling Q4_0 kernels..." in said  # first use of a type: said in the status bar
    assert v.panel.progress.maximum() == 4
    with qtbot.waitSignal(v.panel.runner.done, timeout=5000):
        assert v.start()  # events are delivered by the event loop, after this line
        at_start = (v.buf.n, v._running.getData()[0], v.panel.progress.value(),
                    v.panel.progress.maximum(), v.panel.status.text(), v._band.isVisible())
    n, xs, value, maximum, status, band = at_start
    assert n == 0 and (xs is None or len(xs) == 0)  # no band or curve of the previous run
    assert not band and v.buf.n == 1 and v._band.isVisible()
    v.buf = eval_view.ChunkBuffers()  # what a finished run does: it becomes an overlay
    v._redraw()
    assert not v._band.isVisible()  # pyqtgraph would keep drawing the old band
    assert (value, maximum) == (0, 0) and "stop here" not in status


def test_job_panel_signals(qtbot):
    from iqk_studio.gui.job_panel import JobPanel
    from iqk_studio.jobs.warmup import Compiling

    p = JobPanel()
    qtbot.addWidget(p)
    got = {"compiling": [], "failed": []}
    p.compiling.connect(got["compiling"].append)
    p.failed.connect(got["failed"].append)

    def job():
        yield Compiling("q4_0", "compiling Q4_0 kernels...")
        yield Progress(3, 10, "step")
        raise ValueError("broken")

    with qtbot.waitSignal(p.done, timeout=5000):
        assert p.start(job)
        assert not p.start(job)  # one job at a time
    assert got == {"compiling": ["compiling Q4_0 kernels..."], "failed": ["ValueError: broken"]}
    assert p.run_btn.isEnabled() and not p.cancel_btn.isEnabled()


def test_runner_survives_many_cancels(qtbot):
    """Start and cancel repeatedly: worker and thread are released on the GUI thread only after
    the thread ended (a use-after-free here crashes the interpreter)."""
    import time

    from iqk_studio.gui.workers import JobRunner

    def job():
        for i in range(1000):
            time.sleep(0.001)
            yield i

    r = JobRunner()
    for _ in range(25):
        r.event.connect(lambda ev: r.cancel())
        with qtbot.waitSignal(r.done, timeout=5000) as blocker:
            assert r.start(job)
        r.event.disconnect()
        assert blocker.args == [True] and not r.busy
