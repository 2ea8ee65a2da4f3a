"""The results list over the SQLite results store: the app's runs recorded as they run and listed
in the next session (with the CLI's runs), renames kept, deletes asked, filters by model and
kind, a killed app keeping its finished chunks, an unusable store falling back to memory."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("PySide6")
from conftest import shared_path  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402
from test_external_runs import _alive, make_fake_bin  # noqa: E402

from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.results_model import RCol, ResultsModel  # noqa: E402
from iqk_studio.gui.store_source import RunFilter, StoreSource  # noqa: E402
from iqk_studio.results import ChunkRow, ResultsStore, RunSpec, model_id  # noqa: E402

TINY = ("refs", "ppl", "tiny", "tiny-qwen2.gguf")
TINY_MOE = ("refs", "ppl", "tiny", "tiny-qwen3moe.gguf")
TINY_LOG = ("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")


def window(qtbot, db) -> MainWindow:
    model = ResultsModel(StoreSource(ResultsStore(db)))
    QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    w = MainWindow(results=model)
    qtbot.addWidget(w)
    return w


def _run(qtbot, w) -> None:
    with qtbot.waitSignal(w.eval_view.panel.runner.done, timeout=300000):
        assert w.eval_view.start(), w.eval_view.panel.status.text()


def test_runs_are_recorded_and_listed_in_the_next_session(qtbot, tmp_path, monkeypatch):
    db = tmp_path / "results.sqlite3"
    w = window(qtbot, db)
    w.open_model(str(shared_path(*TINY)))
    st = w.eval_view.settings
    st.text.setText(str(shared_path("data", "wiki.test.raw")))
    st.n_ctx.setValue(64)
    st.chunks.setValue(2)
    st.target.setCurrentIndex(0)
    _run(qtbot, w)  # the file as it is: the baseline
    w.session.set_text("# mine\n@base Q8_0\nffn_down=q4_0\n", "edit", name="mix")
    st.target.setCurrentIndex(1)
    _run(qtbot, w)
    before = w.results.runs()
    assert [r.name for r in before] == ["tiny-qwen2.gguf (file)", "mix: q8_0+q4_0, no imatrix"]
    with ResultsStore(db) as s:  # recorded as they ran, under the names the list shows
        rows = s.list_runs()
        assert sorted((r.name, r.status, r.n_done, r.source) for r in rows) == sorted(
            (r.name, "finished", 2, "builtin") for r in before)
    # two runs over the same chunks: the ratio's error is paired over them
    ratio = w.results.vs_base(before[1])
    assert ratio.how == "paired" and 0 < ratio.err
    assert w.results.data(w.results.index(1, RCol.SOURCE)).startswith("iqk-studio")
    assert w.results.setData(w.results.index(1, RCol.NAME), "my mix", Qt.EditRole)
    w.results.set_shown(before[0].id, False)
    state = w.eval_view.list.state()
    w.close()

    # a CLI run into the same store meanwhile
    from iqk_studio.cli import main as cli

    monkeypatch.setenv("IQK_STUDIO_DATA", str(tmp_path))
    assert cli(["perplexity", str(shared_path(*TINY)), "-f", str(shared_path("data",
                                                                             "wiki.test.raw")),
                "-c", "64", "--chunks", "1"]) == 0

    w2 = window(qtbot, db)
    w2.eval_view.list.restore(state)
    after = w2.results.runs()
    cli_id = after[2].id  # unnamed, and its default name is taken: the run id tells them apart
    assert [r.name for r in after] == ["tiny-qwen2.gguf (file)", "my mix",
                                       f"tiny-qwen2.gguf (file) (run {cli_id})"]
    for a, b in zip(before, after):
        ra, rb = a.result, b.result
        assert (ra.ppl, ra.ppl_err, ra.curve, ra.chunk_nll, ra.total_bytes, ra.n_elements,
                ra.importance, ra.types) == (rb.ppl, rb.ppl_err, rb.curve, rb.chunk_nll,
                                             rb.total_bytes, rb.n_elements, rb.importance,
                                             rb.types)
    assert after[1].result.recipe_text == "# mine\n@base Q8_0\nffn_down=q4_0\n"  # as typed
    assert w2.results.baseline_id == after[0].id  # remembered, as the ticks
    assert not w2.results.is_shown(after[0].id) and w2.results.is_shown(after[1].id)
    cli_run = after[2]
    assert cli_run.result.n_chunks == 1 and cli_run.source == "builtin"
    assert w2.results.vs_base(cli_run) is None  # 1 chunk, not 2: not comparable

    # delete asks first
    answers = iter([QMessageBox.No, QMessageBox.Yes])
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda *a, **k: (asked.append(a[2]), next(answers))[1])
    assert not w2.eval_view.list.delete(cli_run)
    assert w2.eval_view.list.delete(cli_run)
    assert "the results store" in asked[0] and len(w2.results.runs()) == 2
    with ResultsStore(db) as s:
        assert len(s.list_runs()) == 2


def _spec(kind, path, name="", **kw):
    return RunSpec(kind, name=name, model_path=str(path), model_id=model_id(path), **kw)


def test_filters_this_model_and_kind(qtbot, tmp_path):
    from iqk_studio.gguf.reader import open_model

    db = tmp_path / "results.sqlite3"
    tiny, moe = shared_path(*TINY), shared_path(*TINY_MOE)
    with open_model(tiny) as m:
        name = m.metadata["general.name"]
    with ResultsStore(db) as s:
        for spec in (_spec("perplexity", tiny, "a"), _spec("kld", tiny, "b"),
                     _spec("perplexity", moe, "c"), _spec("imatrix", tiny, "d"),
                     _spec("kld", moe, "e", base_model_path=str(tiny),
                           base_model_id=model_id(tiny)),
                     RunSpec("perplexity", "imported", "f", "/elsewhere/quant-of-tiny.gguf",
                             model_name=name),
                     RunSpec("perplexity", "imported", "g")):  # a log naming no model
            rid = s.start_run(spec)
            s.add_chunk(rid, ChunkRow(1, 10.0, 0.1, 2.3))
            s.finish_run(rid, "finished")
        s.start_run(_spec("perplexity", tiny, "nothing"))  # failed before its first chunk
        s.finish_run(s.list_runs()[0].id, "failed", "boom")
    w = window(qtbot, db)
    p = w.eval_view.list

    def names():
        return [r.name for r in w.results.runs()]

    assert names() == ["a", "b", "c", "e", "f", "g"]  # no model open: every model, PPL + KLD
    w.open_model(str(tiny))
    # this model: its file, a KLD run with it as the base, a model of the same general.name,
    # a log that names no model
    assert p.models.currentIndex() == 0 and names() == ["a", "b", "e", "f", "g"]
    p.kinds.setCurrentIndex(2)
    assert names() == ["b", "e"]
    p.kinds.setCurrentIndex(3)
    assert names() == ["d"]
    p.models.setCurrentIndex(1)
    p.kinds.setCurrentIndex(0)
    assert names() == ["a", "b", "c", "e", "f", "g"]
    assert RunFilter().kinds == ("perplexity", "kld")


def test_an_unusable_store_falls_back_to_memory_and_says_so(qtbot, tmp_path):
    bad = tmp_path / "results.sqlite3"
    bad.write_bytes(b"this is not an sqlite database" * 100)
    src = StoreSource.open(bad)
    assert not src.persistent and "kept in memory only" in src.warning and str(bad) in src.warning
    w = MainWindow(results=ResultsModel(src))
    qtbot.addWidget(w)
    assert "kept in memory only" in w.statusBar().currentMessage()
    assert "not saved" in w.eval_view.list.where.text()
    assert str(bad) in w.eval_view.list.where.toolTip()
    from test_gui_results import result

    run = w.results.add_result(result(10.0, 0.1, 2**30))  # runs still work, in memory
    assert [r.id for r in w.results.runs()] == [run.id]
    assert bad.read_bytes().startswith(b"this is not")  # the user's file is left alone


CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from PySide6.QtWidgets import QApplication
    from iqk_studio.gui.main_window import MainWindow
    from iqk_studio.gui.results_model import ResultsModel
    from iqk_studio.gui.store_source import StoreSource
    from iqk_studio.results import ResultsStore
    db, model, text, llama = sys.argv[1:5]
    app = QApplication([])
    w = MainWindow(results=ResultsModel(StoreSource(ResultsStore(db))))
    w.open_model(model)
    st = w.eval_view.settings
    st.text.setText(text)
    st.chunks.setValue(4)
    st.engine.setCurrentIndex(1)
    st.external.where.setText(llama)
    assert w.eval_view.start(), w.eval_view.panel.status.text()
    t0 = time.monotonic()
    with ResultsStore(db) as s:
        while time.monotonic() - t0 < 60:
            app.processEvents()
            runs = s.list_runs()
            if runs and runs[0].n_done >= 2:
                os.kill(os.getpid(), signal.SIGKILL)  # the app dies mid-run
            time.sleep(0.02)
    sys.exit(3)
""")


def test_a_killed_app_keeps_its_finished_chunks(qtbot, tmp_path):
    db = tmp_path / "results.sqlite3"
    root = make_fake_bin(tmp_path / "llama")
    env = dict(os.environ, FAKE_DELAY="0", FAKE_STALL_AT="3", FAKE_PIDFILE=str(tmp_path / "pid"),
               FAKE_LOG=str(shared_path(*TINY_LOG)), QT_QPA_PLATFORM="offscreen")
    child = subprocess.run([sys.executable, "-c", CHILD, str(db), str(shared_path(*TINY)),
                            str(shared_path("data", "wiki.test.raw")), str(root)], env=env,
                           capture_output=True, text=True, timeout=120)
    tool = int((tmp_path / "pid").read_text())
    try:
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    finally:
        if _alive(tool):  # the stalled stand-in outlived the app (its own process group)
            os.killpg(tool, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(tool) and time.monotonic() < deadline:
        time.sleep(0.05)
    w = window(qtbot, db)
    (run,) = w.results.runs()
    assert run.status == "interrupted" and run.result.n_chunks == 2
    from iqk_studio.external.logimport import read_log

    assert run.result.curve == read_log(shared_path(*TINY_LOG)).chunks[:2]
    assert w.results.data(w.results.index(0, RCol.CHUNKS)) == "2/4 \u00d7 512 (interrupted)"


def test_ticks_baseline_and_filters_are_remembered_with_the_store(qtbot, tmp_path):
    from PySide6.QtCore import QSettings
    from test_gui_results import result

    db, ini = tmp_path / "results.sqlite3", str(tmp_path / "settings.ini")

    def win():
        w = MainWindow(settings=QSettings(ini, QSettings.IniFormat),
                       results=ResultsModel(StoreSource(ResultsStore(db))))
        qtbot.addWidget(w)
        return w

    w = win()
    a = w.results.add_result(result(10.0, 0.1, 2**30, "x", "a"))
    b = w.results.add_result(result(11.0, 0.1, 2**29, "y", "b"))
    w.results.set_baseline(b.id)
    w.results.set_shown(a.id, False)
    w.eval_view.list.kinds.setCurrentIndex(1)
    w.close()
    w2 = win()
    assert w2.results.baseline_id == b.id and w2.eval_view.list.kinds.currentIndex() == 1
    assert [r.id for r in w2.results.shown_runs()] == [b.id]


def test_a_store_failing_mid_session_keeps_the_run_in_memory(qtbot, tmp_path):
    from test_gui_results import result

    model = ResultsModel(StoreSource(ResultsStore(tmp_path / "results.sqlite3")))
    said = []
    model.message.connect(said.append)
    model.source.store.close()  # as a disk that went away
    run = model.add_result(result(10.0, 0.1, 2**30))
    assert run.id.startswith("m") and [r.id for r in model.runs()] == [run.id]
    assert said and "could not be written to the results store" in said[0]
    assert model.rename(run.id, "kept anyway") and model.run(run.id).name == "kept anyway"
    assert not model.refresh()  # listing fails: said, the rows stay
    assert [r.name for r in model.runs()] == ["kept anyway"] and len(said) == 2


def test_an_imported_log_of_another_model_is_shown(qtbot, tmp_path, monkeypatch):
    from iqk_studio.gui import import_dialogs
    from iqk_studio.gui.import_dialogs import LogImportDialog

    w = window(qtbot, tmp_path / "results.sqlite3")
    w.open_model(str(shared_path(*TINY)))
    assert w.eval_view.list.models.currentIndex() == 0  # this model
    monkeypatch.setattr(LogImportDialog, "exec", lambda self: pytest.fail("the log has a size"))
    run = import_dialogs.import_log_file(
        w, shared_path("refs", "ppl", "gemma3-270m-q4_k_m.wiki.c512.log"))
    assert w.eval_view.list.models.currentIndex() == 1  # switched to all models, and said so
    assert [r.id for r in w.results.runs()] == [run.id]
