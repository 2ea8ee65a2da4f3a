"""The Grids tab: the study's plot (toggles, legend, hover, PNG/SVG/CSV), the tensor plots (aligned
axes, legend, an all-zero tensor), importance modes per tensor, variant statistics, and the
importance comparison dialog."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402

from iqk_studio.gguf.reader import open_model  # noqa: E402
from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf  # noqa: E402
from iqk_studio.gui.grid_plot import STUDY, GridPlot, x_positions  # noqa: E402
from iqk_studio.gui.grids_view import X_RANGE, GridsView  # noqa: E402
from iqk_studio.quant.grids import curves  # noqa: E402
from iqk_studio.quant.types import by_name  # noqa: E402

INPUTS = ("refs", "quant", "inputs.gguf")


def test_study_plot_toggles_legend_hover(qtbot):
    g = GridPlot()
    qtbot.addWidget(g)
    g.resize(900, 600)
    g.show()
    qtbot.waitExposed(g)
    assert g.checked() == list(STUDY)
    assert [lab.text for _, lab in g.legend.items] == ["linear", *STUDY]
    assert all(g.items[n].isVisible() == (n in STUDY) for n in g.items)
    g.list.item(list(g.curves).index("e2m1")).setCheckState(Qt.Checked)
    assert "e2m1" in [lab.text for _, lab in g.legend.items] and g.items["e2m1"].isVisible()
    g.set_checked(["nf4"])
    assert [lab.text for _, lab in g.legend.items] == ["linear", "nf4"]
    assert g.nearest(1.0, -0.69) == ("nf4", 1)
    assert g.nearest(1.0, 0.5) is None  # far from every point
    g.set_checked(["iq4k shifted mirrored"])
    assert g.nearest(15.0, 1.0) == ("iq4k shifted mirrored", 15)
    assert "integer 123" in g.readout_text("iq4k shifted mirrored", 15)
    assert "integer -123" in g.readout_text("iq4k shifted", 0)
    np.testing.assert_array_equal(x_positions(4), [0, 5, 10, 15])


def test_study_plot_exports(qtbot, tmp_path):
    g = GridPlot()
    qtbot.addWidget(g)
    g.resize(800, 500)
    g.show()
    qtbot.waitExposed(g)
    assert g.export_png(tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = g.export_svg(tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "</svg>" in svg
    rows = list(csv.reader(open(g.export_csv(tmp_path / "g.csv"))))
    assert rows[0] == ["grid", "index", "x", "value_over_max_abs"]
    assert len(rows) == 1 + 16 * len(STUDY)
    c = curves()
    for name, i, _, v in rows[1:]:
        assert float(v) == c[name][int(i)]
    assert not (tmp_path / "g.csv.tmp").exists()


def _zero_model(path):
    z = np.zeros((4, 256), np.float32)
    write_gguf(path, [KV("general.architecture", "llama")],
               [TensorSpec("z.weight", (256, 4), by_name("f32").id)], [z])
    return path


def test_tensor_plots_aligned_with_legend(shared, qtbot, tmp_path):
    v = GridsView()
    qtbot.addWidget(v)
    with open_model(shared(*INPUTS)) as m:
        v.set_tensor(m, "blk.0.ffn_up.weight")
        qtbot.waitUntil(lambda: not v.stats_view.runner.busy, timeout=60000)
    assert v.hist.getAxis("left").width() == v.dots.getAxis("left").width()
    assert [lab.text for _, lab in v.hist_legend.items] == v.checked()
    assert tuple(round(a, 6) for a in v.hist.viewRange()[0]) == X_RANGE
    assert tuple(round(a, 6) for a in v.dots.viewRange()[0]) == X_RANGE
    with open_model(_zero_model(tmp_path / "z.gguf")) as m:
        v.set_tensor(m, "z.weight")
        assert "zero" in v.caption.text()
        assert "zero" in v.stats_view.caption.text()
    assert tuple(round(a, 6) for a in v.hist.viewRange()[0]) == X_RANGE


def test_importance_modes_on_a_tensor(shared, qtbot):
    v = GridsView()
    qtbot.addWidget(v)
    v.add_imatrix(shared("refs", "quant", "imatrix.dat"))
    with open_model(shared(*INPUTS)) as m:
        v.set_tensor(m, "blk.0.ffn_up.weight")
        qtbot.waitUntil(lambda: not v.stats_view.runner.busy, timeout=60000)
        v.mode_type.setCurrentText("iq4_ks")
        with qtbot.waitSignal(v.runner.done, timeout=60000):
            v.compare_modes()
    rows = [[v.modes.topLevelItem(i).text(c) for c in range(3)]
            for i in range(v.modes.topLevelItemCount())]
    assert [r[0] for r in rows] == ["imatrix imatrix.dat", "no imatrix (default weights)",
                                    "no imatrix, w = 1"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
    assert len({r[1] for r in rows}) == 3  # the three weightings give three results


def test_variant_statistics_tensor_and_model(shared, qtbot):
    v = GridsView()
    qtbot.addWidget(v)
    s = v.stats_view
    with open_model(shared(*INPUTS)) as m:
        v.set_tensor(m, "blk.0.ffn_up.weight")
        qtbot.waitUntil(lambda: s.stats is not None, timeout=60000)
        for q, item in s.bar_items.items():
            h = item.opts["height"]
            assert np.isclose(np.sum(h), 1.0) and np.all(h >= 0), q
        assert s.rows["e2m1"].text(1) and "%" in s.rows["fp4 better"].text(1)
        assert s.dist_curve.getData()[1].sum() == s.stats.n_blocks
        assert s.analyse_model()  # may wait for the tensor's job to end, then runs
        qtbot.waitUntil(lambda: s.model_stats is not None, timeout=120000)
        qtbot.waitUntil(lambda: not s.runner.busy, timeout=10000)
    assert s.model_stats.n_tensors >= 1 and s.model_btn.isEnabled()
    assert s.rows["blocks"].text(2) == f"{s.model_stats.n_blocks:,}"


def test_importance_dialog_runs_and_gives_points(shared, qtbot, tmp_path):
    from iqk_studio.gui.importance_dialog import ImportanceDialog
    from iqk_studio.recipe import Recipe, Rule, plan

    path = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = tmp_path / "t.txt"
    text.write_bytes(shared("data", "wiki.test.raw").read_bytes()[:20000])
    with open_model(path) as m:
        p = plan(m, Recipe("Q8_0", rules=(Rule("ffn_down", "iq4_ks"),)))
    d = ImportanceDialog(str(path), p, "mix", str(text))
    qtbot.addWidget(d)
    d.chunks.setValue(1)
    d.n_ctx.setValue(128)
    d.use_default.setChecked(False)
    got = []
    d.results_ready.connect(got.append)
    with qtbot.waitSignal(d.runner.done, timeout=120000):
        assert d.start()
    labels = [d.table.topLevelItem(i).text(0) for i in range(d.table.topLevelItemCount())]
    assert labels == ["unquantized (the file as stored)", "no imatrix, w = 1"]
    assert "%" in d.table.topLevelItem(1).text(3)
    assert len(got) == 1 and [n for n, _ in got[0]] == ["tiny-qwen2.gguf (file)",
                                                        "mix: no imatrix, w = 1"]
    assert got[0][1][1].importance == "uniform"
    d.text.setText(str(tmp_path / "missing.txt"))
    assert not d.start() and "text" in d.status.text()


def test_compare_importance_from_the_window(shared, qtbot, monkeypatch):
    """Run > Compare importance modes: the dialog gets the session's plan, recipe name and
    @imatrix; its runs land in the results list; a recipe with errors is refused."""
    from PySide6.QtWidgets import QMessageBox

    from iqk_studio.gui.importance_dialog import open_dialog
    from iqk_studio.gui.main_window import MainWindow
    from iqk_studio.jobs.evaluate import RunResult

    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_model(str(shared(*INPUTS)))
    im = shared("refs", "quant", "imatrix.dat")
    w.session.set_text(f"@base Q8_0\n@imatrix {im}\nffn=iq4_ks\n", "test")
    dlg = open_dialog(w)
    qtbot.addWidget(dlg)
    assert dlg.plan is w.session.snapshot.plan and dlg.imatrix_list.item(0).text() == str(im)
    res = RunResult("ppl", str(shared(*INPUTS)), "x", "r", "iq4_ks", "uniform", "t.txt", 128, 1,
                    1000, 2000, 12.0, 0.5)
    n = len(w.results.runs())
    dlg.results_ready.emit([("r: no imatrix, w = 1", res)])
    assert [r.name for r in w.results.runs()[n:]] == ["r: no imatrix, w = 1"]
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: shown.append(a[2]))
    w.session.set_text("@base Q8_0\nno equals sign\n", "bad")
    assert open_dialog(w) is None and shown
