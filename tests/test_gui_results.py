"""The results list (a Qt model over the RunSource protocol) and the size-vs-quality chart built
from it: names, baseline, ratios, Pareto front, hover, click, export."""

import math

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402

from iqk_studio.gui.chart_view import ChartView  # noqa: E402
from iqk_studio.gui.results import Run, pareto_front, ppl_ratio_pct  # noqa: E402
from iqk_studio.gui.results_model import RCol, ResultsModel  # noqa: E402
from iqk_studio.gui.store_source import StoreSource  # noqa: E402
from iqk_studio.jobs.evaluate import RunResult  # noqa: E402
from iqk_studio.results import ResultsStore  # noqa: E402

TEXT = "/data/wiki.test.raw"


def result(ppl, err, nbytes, recipe="", name="", importance="default", kind="ppl", **kw):
    return RunResult(kind, "/m/model.gguf", recipe, name, "q4_0+q8_0", importance if recipe
                     else "", TEXT, 512, 2, nbytes, 2 * nbytes, ppl, err, curve=(ppl + 1, ppl),
                     curve_err=(err, err), **kw)


class LoggingSource(StoreSource):
    """A RunSource that logs its calls: the model only talks through the protocol."""

    def __init__(self):
        super().__init__(ResultsStore(":memory:"), persistent=False)
        self.calls = []

    def add(self, r, name, recorded_id=None):
        self.calls.append(("add", name))
        return super().add(r, name, recorded_id)

    def rename(self, run_id, name):
        self.calls.append(("rename", run_id, name))
        return super().rename(run_id, name)

    def remove(self, run_id):
        self.calls.append(("remove", run_id))
        super().remove(run_id)


@pytest.fixture
def model():
    src = LoggingSource()
    m = ResultsModel(src)
    QAbstractItemModelTester(m, QAbstractItemModelTester.FailureReportingMode.Fatal)
    base = m.add_result(result(10.0, 0.1, 2**31))  # the file as it is: becomes the baseline
    a = m.add_result(result(11.0, 0.2, 2**30, "@base Q4_0\n", "mix"))
    b = m.add_result(result(11.5, 0.2, 3 * 2**29, "@base Q4_0\n", "mix", "uniform"))
    k = m.add_result(result(12.0, 0.3, 2**29, "@base Q2_K\n", "small", kind="kld",
                            ppl_ratio=1.2, ppl_ratio_err=0.01, kld=0.3, kld_err=0.02,
                            ppl_base=10.0, base_path="/m/model.gguf"))
    return m, src, (base, a, b, k)


def test_names_baseline_and_ratios(model):
    m, src, (base, a, b, k) = model
    assert [r.name for r in m.runs()] == ["model.gguf (file)", "mix: q4_0+q8_0, no imatrix",
                                          "mix: q4_0+q8_0, w=1", "small: q4_0+q8_0, w=1 KLD"
                                          .replace("w=1", "no imatrix")]
    again = m.add_result(result(11.0, 0.2, 2**30, "@base Q4_0\n", "mix"))
    assert again.name == "mix: q4_0+q8_0, no imatrix #2"  # never two identical labels
    assert m.baseline_id == base.id
    v, e, how = m.vs_base(m.run(a.id))  # no per-chunk NLL: combined as if independent
    assert v == pytest.approx(10.0) and e == pytest.approx(110 * math.hypot(0.2 / 11, 0.1 / 10))
    assert how == "independent"
    k_ratio = m.vs_base(m.run(k.id))  # KLD runs: their own ratio
    assert k_ratio[:2] == pytest.approx((20.0, 1.0)) and k_ratio.how == "kld"
    assert m.vs_base(m.run(base.id)) == (0.0, 0.0, "baseline")
    shown = m.data(m.index(1, RCol.VS_BASE))
    assert shown.startswith("+10.000 %")
    other = result(9.0, 0.1, 2**30, "x", "y")
    assert ppl_ratio_pct(RunResult(**{**other.__dict__, "n_ctx": 256}), base.result) is None


def test_rename_show_remove_through_the_source(model):
    m, src, (base, a, b, k) = model
    idx = m.index(1, RCol.NAME)
    assert m.flags(idx) & Qt.ItemIsEditable
    assert m.setData(idx, "my 4-bit mix", Qt.EditRole)
    assert m.run(a.id).name == "my 4-bit mix" and ("rename", a.id, "my 4-bit mix") in src.calls
    assert src.runs()[1].name == "my 4-bit mix"
    assert not m.setData(idx, "   ", Qt.EditRole)  # an empty name is refused
    assert m.is_shown(a.id)
    m.setData(idx, Qt.Unchecked.value, Qt.CheckStateRole)
    assert not m.is_shown(a.id) and a.id not in {r.id for r in m.shown_runs()}
    m.remove(base.id)
    assert m.baseline_id is None and ("remove", base.id) in src.calls
    assert m.vs_base(m.run(a.id)) is None and m.rowCount() == 3
    m.reload()
    assert [r.id for r in m.runs()] == [r.id for r in src.runs()]


def test_pareto_front():
    xs = [1.0, 2.0, 3.0, 1.5, 2.5]
    ys = [5.0, 3.0, 1.0, 6.0, 3.5]
    assert pareto_front(xs, ys) == [0, 1, 2]
    assert pareto_front([], []) == []


def test_chart_axes_front_hover_click_export(model, qtbot, tmp_path):
    m, _, (base, a, b, k) = model
    c = ChartView(m)
    qtbot.addWidget(c)
    c.resize(800, 500)
    assert c.mode() == "ratio"
    xs = {run.id: x for run, x, _, _ in c.shown}
    assert xs[a.id] == 1.0 and xs[base.id] == 2.0  # GiB
    ys = {run.id: y for run, _, y, _ in c.shown}
    assert ys[base.id] == 0.0 and ys[k.id] == pytest.approx(20.0)
    fx, fy = c._front.getData()
    assert list(fx) == [0.5, 1.0, 2.0]  # k, a, base: b (1.5 GiB, +15 %) is beaten by a
    (x0, x1), _ = c.plot.viewRange()
    assert x0 < 0.5 and x1 > 2.0 and (x1 - x0) < 4
    tip = c._tip(1.0, 10.0, a.id)
    assert "@base Q4_0" in tip and "2 chunks of 512" in tip and "no imatrix" in tip
    opened = []
    c.open_run.connect(opened.append)

    class P:
        def data(self):
            return a.id

    c._clicked(None, [P()])
    assert opened and opened[0].id == a.id
    c.y_mode.setCurrentIndex(1)  # mean KLD: only the KLD run
    assert [run.id for run, *_ in c.shown] == [k.id] and "3 run(s) not shown" in c.note.text()
    c.y_mode.setCurrentIndex(0)
    for kind in ("png", "svg", "csv"):
        c.export(str(tmp_path / f"chart.{kind}"), kind)
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "chart.svg").read_text()
    import csv

    rows = list(csv.DictReader(open(tmp_path / "chart.csv", encoding="utf-8")))
    assert [r["name"] for r in rows] == [r.name for r in m.runs()]
    assert float(rows[1]["ppl_vs_base_pct"]) == pytest.approx(10.0)
    assert rows[3]["kld"] == "0.3" and rows[1]["recipe"] == "@base Q4_0\n"
    with pytest.raises(OSError):
        c.export(str(tmp_path / "no" / "such" / "dir.svg"), "svg")


def test_sub_mib_differences_keep_a_sane_axis(qtbot):
    m = ResultsModel()
    m.add_result(result(10.0, 0.1, 250_000_000))
    m.add_result(result(10.1, 0.1, 250_100_000, "x", "a"))
    c = ChartView(m)
    qtbot.addWidget(c)
    (x0, x1), _ = c.plot.viewRange()
    assert x1 - x0 >= 0.02 * 250_100_000 / 2**30  # not a 0.1 MB sliver
    assert not c.plot.getAxis("bottom").autoSIPrefix


def test_run_record_is_what_the_list_shows():
    r = Run("s1", "n", result(1.0, 0.1, 8))
    assert r.result.bpw == 4.0 and r.result.gib == 8 / 2**30


def test_published_points_layer(qtbot):
    """Published points of the library recipes (recipe.published) are drawn for the open model
    by name, as hollow squares with their own y (PPL / base PPL - 1); sizes without a PPL are not
    placed."""
    from iqk_studio.gui.results import model_names, published_points_for
    from iqk_studio.recipe.published import published_points

    everything = published_points()
    assert published_points_for({}) == []
    assert model_names({"general.name": "Qwen3 30B A3B"}) == {"qwen330ba3b"}
    assert published_points_for({"general.name": "Gemma 3 270M"}) == [
        p for p in everything if not p.model]
    c = ChartView(ResultsModel())
    qtbot.addWidget(c)
    c.set_model({"general.name": "Qwen3 30B A3B"})
    assert not c.show_published.isHidden() and c.show_published.isEnabled()
    shown = c.published_points()
    with_ppl = [p for p in everything if p.quality_loss is not None]
    assert with_ppl and len(shown) == len(with_ppl)
    ks3 = next((p, x, y) for p, x, y in shown if p.recipe == "IQK-3-KS")
    assert ks3[1] == 10.229 and ks3[2] == pytest.approx(100 * (9.3908 / 9.0656 - 1))
    assert len(c.published.data) == len(shown)
    assert "IQK-3-KS" in c._published_tip(0, 0, ks3[0])
    c.show_published.setChecked(False)
    assert c.published_points() == [] and len(c.published.data) == 0


def test_labels_at_the_same_place_are_stacked():
    from iqk_studio.gui.chart_view import _stack

    labels = [("a", None, 0.23, 0.0), ("b", None, 10.0, 40.0), ("c", None, 0.23, -0.1),
              ("d", None, 0.2301, 0.05)]
    assert _stack(labels) == [0, 0, 1, 2] and _stack([]) == []
