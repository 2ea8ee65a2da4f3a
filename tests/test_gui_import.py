"""Published results into the app: a llama-perplexity log pasted or dropped (the size asked when
the log states none), third-party points from CSV, all in the results list and on the chart; and
the chart's ratio errors paired over the chunks two runs share, checked against the statistic
ik_llama.cpp's own KLD run prints for the same two models and chunks."""

import math
import re

import pytest

pytest.importorskip("PySide6")
from conftest import shared_path  # noqa: E402
from PySide6.QtWidgets import QDialog, QMessageBox  # noqa: E402

from iqk_studio.external.logimport import parse_log, read_log  # noqa: E402
from iqk_studio.gui import import_dialogs  # noqa: E402
from iqk_studio.gui.import_dialogs import LogImportDialog, parse_points  # noqa: E402
from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.results_model import ResultsModel  # noqa: E402
from iqk_studio.gui.store_source import StoreSource  # noqa: E402
from iqk_studio.results import ResultsStore  # noqa: E402

PPL = ("refs", "ppl")
Q4 = "gemma3-270m-q4_k_m.wiki.c512.log"
F32 = "gemma3-270m-f32.wiki.c512.log"
KLD = "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log"


@pytest.fixture
def win(qtbot, tmp_path):
    w = MainWindow(results=ResultsModel(StoreSource(ResultsStore(tmp_path / "r.sqlite3"))))
    qtbot.addWidget(w)
    return w


def first_chunks(name: str, n: int, header: bool = True) -> str:
    """A real log cut after its n-th chunk (no final line), as someone would post a short run."""
    text = shared_path(*PPL, name).read_text()
    stream = next(ln for ln in text.splitlines() if ln.startswith("[1]"))
    cut = "".join(re.findall(r"\[\d+\][^,]*,", stream)[:n])
    head = text[:text.index(stream)] if header else ""
    return head + cut + "\n"


def accept_with(monkeypatch, size_gib=None, name=None):
    """Make the modal dialog answer at once (with a size / name typed in)."""
    def exec_(self):
        self.parse()
        if size_gib is not None:
            self.size.setValue(size_gib)
        if name is not None:
            self.name.setText(name)
        return QDialog.Accepted

    monkeypatch.setattr(LogImportDialog, "exec", exec_)


def test_paired_ratio_error_matches_llama_perplexitys_kld_statistic(win, monkeypatch):
    """F32 and Q4_K_M of the demo model over the same 8 chunks: PPL(Q)/PPL(base) and its error
    from the two perplexity logs' per-chunk NLL, against the KLD run's token-level statistic."""
    accept_with(monkeypatch)
    base = import_dialogs.paste_log(win, first_chunks(F32, 8))
    q = import_dialogs.paste_log(win, first_chunks(Q4, 8))
    kld_run = import_dialogs.import_log_file(win, shared_path(*PPL, KLD))
    expect = read_log(shared_path(*PPL, KLD)).kld
    res = win.results
    res.set_baseline(base.id)
    r = res.vs_base(res.run(q.id))
    assert r.how == "paired"
    assert r.pct == pytest.approx(100 * (expect["ppl_ratio"] - 1), abs=2e-4)
    assert 0.6 < r.err / (100 * expect["ppl_ratio_err"]) < 1.4  # chunk- vs token-level
    k = res.vs_base(res.run(kld_run.id))
    assert k.how == "kld" and k.err == pytest.approx(100 * expect["ppl_ratio_err"])
    c = win.chart_view
    assert {p[0].id for p in c.shown} == {base.id, q.id, kld_run.id}
    assert "paired over chunks" in c.note.text() and "paired over tokens" in c.note.text()


def test_paste_a_log_with_its_size_and_one_without(win, monkeypatch):
    accept_with(monkeypatch)
    text = shared_path(*PPL, Q4).read_text()
    run = import_dialogs.paste_log(win, text)
    log = read_log(shared_path(*PPL, Q4))
    assert run.source == "imported" and run.result.curve == log.chunks
    assert run.result.gib == pytest.approx(235.165 / 1024, abs=1e-6)  # "model size" of the log
    assert run.result.n_ctx == 512 and run.result.ppl == 18.8097
    assert win.results.is_shown(run.id)  # drawn on the live plot
    assert any(list(o.getData()[1]) == list(log.chunks) for o in win.eval_view._overlays
               if o.isVisible())
    win.chart_view.y_mode.setCurrentIndex(2)  # PPL: placed at its size
    assert [(p[0].id, p[1]) for p in win.chart_view.shown] == [(run.id, run.result.gib)]
    # as quoted in a forum, without its header: the size is asked
    quoted = "> " + first_chunks(Q4, 20, header=False) + \
        "> Final estimate: PPL = 14.2468 +/- 0.61853\n"
    dlg = LogImportDialog(quoted)
    assert "size not stated" in dlg.info.text() and dlg.size.value() == 0
    accept_with(monkeypatch, size_gib=12.5, name="someone's IQ4_KS")
    run2 = import_dialogs.paste_log(win, quoted)
    assert run2.name == "someone's IQ4_KS" and run2.result.gib == pytest.approx(12.5)
    assert run2.result.ppl == 14.2468 and len(run2.result.curve) == 20
    with ResultsStore(win.results.source.store.path) as s:
        assert {r.name: r.plan_bytes for r in s.list_runs()}["someone's IQ4_KS"] == 12.5 * 2**30


def test_a_log_without_results_is_refused():
    dlg = LogImportDialog("just some text\nwith no numbers\n")
    assert dlg.log is None and not dlg.box.button(dlg.box.StandardButton.Ok).isEnabled()
    assert "no llama-perplexity" in dlg.info.text()


def test_drop_a_log_and_a_csv_on_the_window(win, tmp_path, monkeypatch):
    log = tmp_path / "published.txt"
    log.write_text(shared_path(*PPL, F32).read_text())
    pts = tmp_path / "points.csv"
    pts.write_text("name,GiB,PPL,PPL err\nBF16,0.5,18.70,0.15\nIQ4_KS,0.15,19.3,\n"
                   "# a comment\nQ8_0,0.27,18.75,0.15\n")
    monkeypatch.setattr(LogImportDialog, "exec", lambda self: pytest.fail("no dialog: "
                                                                          "the log has a size"))
    win.open_files([str(log), str(pts)])
    runs = win.results.runs()
    assert [r.name for r in runs] == ["gemma-3-270m-f32.gguf (log)", "BF16", "IQ4_KS", "Q8_0"]
    assert runs[0].result.ppl == parse_log(log.read_text()).final[0]
    bf16 = runs[1]
    assert (bf16.result.gib, bf16.result.ppl, bf16.result.ppl_err) == (0.5, 18.70, 0.15)
    assert math.isnan(runs[2].result.ppl_err)
    win.results.set_baseline(bf16.id)  # third-party points compare among themselves
    c = win.chart_view
    c.y_mode.setCurrentIndex(0)
    ys = {p[0].name: p[2] for p in c.shown}
    assert ys["IQ4_KS"] == pytest.approx(100 * (19.3 / 18.70 - 1))
    assert "gemma3" not in " ".join(ys)  # the 570-chunk log is not comparable with points
    # the chart's own CSV export reads back as points
    out = tmp_path / "chart.csv"
    c.export(str(out), "csv")
    back = parse_points(out.read_text())
    assert [(n, round(g, 6), p) for n, g, p, _ in back][1:] == [
        ("BF16", 0.5, 18.70), ("IQ4_KS", 0.15, 19.3), ("Q8_0", 0.27, 18.75)]


def test_bad_points_say_which_line(win, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: shown.append(a[2]))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,1.0,10\nb,two,11\n")
    assert import_dialogs.import_points_csv(win, bad) == 0
    assert shown == ["bad.csv line 2: expected name, GiB, PPL[, PPL err], got 'b,two,11'"]
    with pytest.raises(ValueError, match="line 1: size and PPL must be positive"):
        parse_points("x,0,10\n")
    assert win.results.runs() == []
