"""The Evaluate tab driving the user's llama-perplexity (the stand-in tests/fake_llama.py replaying
real logs): the same live plot, progress and results list as a built-in run, recorded in the
store; extra arguments untouched; cancel kills the process group; a failure shows the tool's last
lines; a NaN chunk is flagged with the choice to stop; KLD saves the base's log-probs first."""

import json
import os
import signal

import pytest

pytest.importorskip("PySide6")
from conftest import shared_path  # noqa: E402
from test_external_runs import _alive, make_fake_bin  # noqa: E402

from iqk_studio.external.logimport import read_log  # noqa: E402
from iqk_studio.gui import eval_view  # noqa: E402
from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.results_model import RCol, ResultsModel  # noqa: E402
from iqk_studio.gui.store_source import StoreSource  # noqa: E402
from iqk_studio.results import ResultsStore  # noqa: E402

TINY = ("refs", "ppl", "tiny", "tiny-qwen2.gguf")
TINY_LOG = ("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")


@pytest.fixture
def ext(tmp_path, monkeypatch, qtbot):
    """A window over a store in tmp_path, the tiny model open, the stand-in as llama-perplexity
    (detected), wiki.test.raw, 4 chunks of 512."""
    root = make_fake_bin(tmp_path / "llama")
    for k, v in (("FAKE_DELAY", "0"), ("FAKE_PIDFILE", str(tmp_path / "pid")),
                 ("FAKE_ARGV", str(tmp_path / "argv.json")),
                 ("FAKE_LOG", str(shared_path(*TINY_LOG)))):
        monkeypatch.setenv(k, v)
    store = tmp_path / "results.sqlite3"
    w = MainWindow(results=ResultsModel(StoreSource(ResultsStore(store))))
    qtbot.addWidget(w)
    w.open_model(str(shared_path(*TINY)))
    st = w.eval_view.settings
    st.text.setText(str(shared_path("data", "wiki.test.raw")))
    st.n_ctx.setValue(512)
    st.chunks.setValue(4)
    st.engine.setCurrentIndex(1)
    st.external.where.setText(str(root))
    st.external.detect()
    qtbot.waitUntil(lambda: st.external.binary is not None, timeout=10000)
    yield w, tmp_path, store
    pid = tmp_path / "pid"
    if pid.exists() and _alive(int(pid.read_text())):  # a failed test leaves no stalled tool
        os.killpg(int(pid.read_text()), signal.SIGKILL)


def _run(qtbot, w, timeout=30000):
    with qtbot.waitSignal(w.eval_view.panel.runner.done, timeout=timeout) as blocker:
        assert w.eval_view.start(), w.eval_view.panel.status.text()
    return blocker.args[0]


def _pid(tmp_path) -> int:
    return int((tmp_path / "pid").read_text())


def test_external_ppl_run_looks_like_a_builtin_one(ext, qtbot):
    w, tmp_path, store = ext
    st, v = w.eval_view.settings, w.eval_view
    assert not st.external.isHidden()
    assert st.target.currentIndex() == 0 and not st.target.isEnabled()  # the file as it is
    assert st.external.flavour.text() == "ik_llama.cpp build 4840 (8337e4cd3)"
    st.external.args.setText("-ngl 99 -t 3 --odd 'a b'")
    seen, statuses = [], []
    v.panel.event.connect(lambda ev: seen.append(ev))
    v.panel.event.connect(lambda ev: statuses.append(v.panel.status.text()))
    assert _run(qtbot, w) is False
    argv = json.loads((tmp_path / "argv.json").read_text())
    model, text = w.session.model_path, st.text.text()
    assert argv == ["-m", model, "-f", text, "-c", "512", "--chunks", "4", "-ngl", "99", "-t", "3",
                    "--odd", "a b"]
    log = read_log(shared_path(*TINY_LOG))
    chunk_ppl = [e.ppl for e in seen if type(e).__name__ == "Chunk"]
    assert chunk_ppl == list(log.chunks)
    assert any("tokens/s" in s and "left" in s and "[2/4] PPL = " in s for s in statuses)
    assert v.panel.progress.value() == v.panel.progress.maximum()
    (run,) = w.results.runs()
    assert run.source == "external" and run.engine == "ik_llama.cpp build 4840 (8337e4cd3)"
    assert run.name == "tiny-qwen2.gguf (ik_llama.cpp)"  # not the built-in run's "(file)"
    assert run.result.curve == log.chunks and run.result.ppl == log.final[0]
    assert w.results.data(w.results.index(0, RCol.SOURCE)) == run.engine
    assert w.results.baseline_id == run.id  # the file as it is: the baseline, as built-in
    drawn = [o for o in v._overlays if o.isVisible()]
    assert len(drawn) == 1 and list(drawn[0].getData()[1]) == list(log.chunks)
    with ResultsStore(store) as s:
        (rec,) = s.list_runs()
        assert (rec.source, rec.status, rec.n_done, rec.engine) == ("external", "finished", 4,
                                                                    "ik_llama.cpp")
        assert rec.command[-2:] == ("--odd", "a b") and rec.name == run.name


def test_cancel_kills_the_process_group_and_keeps_the_chunks(ext, qtbot, monkeypatch):
    w, tmp_path, store = ext
    monkeypatch.setenv("FAKE_STALL_AT", "3")
    monkeypatch.setenv("FAKE_IGNORE_TERM", "1")  # SIGKILL after the grace period
    monkeypatch.setattr(eval_view, "EXTERNAL_GRACE", 0.5)
    v = w.eval_view
    v.panel.event.connect(lambda ev: v.buf.n >= 2 and v.cancel())
    assert _run(qtbot, w) is True
    assert not _alive(_pid(tmp_path))
    (run,) = w.results.runs()  # refreshed at the end: cancelled, its two chunks kept
    assert run.status == "cancelled" and run.result.n_chunks == 2
    assert w.results.data(w.results.index(0, RCol.CHUNKS)) == "2/4 \u00d7 512 (cancelled)"
    assert w.chart_view.shown == [] and "not finished" in w.chart_view.note.text()


def test_failure_shows_the_last_lines(ext, qtbot, monkeypatch):
    w, tmp_path, _ = ext
    monkeypatch.setenv("FAKE_LOG", str(shared_path("refs", "quant", "logs", "iq1_kt.log")))
    monkeypatch.setenv("FAKE_EXIT", "1")
    v = w.eval_view
    _run(qtbot, w)
    assert "llama-perplexity failed (exit status 1)" in v.panel.status.text()
    assert not v.details.isHidden()
    tail = v.details.toPlainText()
    assert "last output:" in tail and len(tail.splitlines()) > 3
    assert w.results.runs() == []  # nothing to show: failed before its first chunk


def test_nan_chunk_is_flagged_and_can_stop_the_run(ext, qtbot, monkeypatch):
    w, tmp_path, _ = ext
    monkeypatch.setenv("FAKE_NAN_AT", "2")
    monkeypatch.setenv("FAKE_STALL_AT", "4")  # the tool goes on (slowly) after the NaN
    v = w.eval_view
    with qtbot.waitSignal(v.panel.runner.done, timeout=30000) as blocker:
        assert v.start()
        qtbot.waitUntil(lambda: not v.nan_bar.isHidden(), timeout=20000)
        assert "chunk 2" in v.nan_bar.label.text()
        assert any(ln.isVisible() and ln.value() == 2 for ln in v._nan_lines)
        v.nan_bar.stop_btn.click()
    assert blocker.args == [True] and v.nan_bar.isHidden()
    assert not _alive(_pid(tmp_path))
    # ticked: the tool is stopped at the NaN without asking
    monkeypatch.delenv("FAKE_STALL_AT")
    w.eval_view.settings.external.stop_nan.setChecked(True)
    _run(qtbot, w)
    assert "llama-perplexity stopped" in v.panel.status.toolTip() and v.nan_bar.isHidden()


def test_kld_saves_the_base_first_then_compares(ext, qtbot, monkeypatch, tmp_path):
    import tempfile

    w, _, store = ext
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    kld_log = shared_path("refs", "ppl", "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log")
    monkeypatch.setenv("FAKE_LOG_KLD", str(kld_log))
    st = w.eval_view.settings
    st.metric.setCurrentIndex(1)
    st.base.setText(str(shared_path("refs", "ppl", "tiny", "tiny-qwen3moe.gguf")))
    progress = []
    w.eval_view.panel.event.connect(
        lambda ev: type(ev).__name__ == "Progress" and progress.append(ev.message))
    _run(qtbot, w)
    expect = read_log(kld_log)
    runs = w.results.runs()
    kld = next(r for r in runs if r.result.kind == "kld")
    assert kld.result.kld == pytest.approx(expect.kld["kld"]) and kld.source == "external"
    assert kld.result.ppl_ratio == pytest.approx(expect.kld["ppl_ratio"])
    assert any(m.startswith("base model's log-probs: chunk") for m in progress)
    with ResultsStore(store) as s:
        kinds = sorted((r.kind, r.model_path.rsplit("/", 1)[-1]) for r in s.list_runs())
        assert kinds == [("kld", "tiny-qwen2.gguf"), ("perplexity", "tiny-qwen3moe.gguf")]
        summary = s.get_run(int(kld.id)).info.summary
        assert summary["kld_max"] == pytest.approx(expect.kld["kld_max"])  # the full statistics
    assert list(temp.iterdir()) == []  # the temporary base log-probs are gone


def test_missing_binary_is_a_message(ext, qtbot, tmp_path):
    w, _, _ = ext
    x = w.eval_view.settings.external
    x.where.setText(str(tmp_path / "nowhere"))
    x.detect()
    qtbot.waitUntil(lambda: "not found" in x.flavour.text(), timeout=10000)
    _run(qtbot, w)
    assert "no such file, folder or command" in w.eval_view.panel.status.text()
