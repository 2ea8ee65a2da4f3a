"""The Evaluate tab with real runs on the tiny model (one chunk of 64): file and recipes, KLD,
weighting modes, overlays kept, the results list and chart fed, estimates, defaults."""

import pytest

pytest.importorskip("PySide6")
from iqk_studio.gui.eval_settings import DEFAULT_CHUNKS, find_text  # noqa: E402
from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.jobs.perplexity import tokenize_file  # noqa: E402

TINY = ("refs", "ppl", "tiny", "tiny-qwen2.gguf")


def _run(qtbot, v) -> None:
    with qtbot.waitSignal(v.panel.runner.done, timeout=300000):
        assert v.start(), v.panel.status.text()


def test_two_recipes_a_file_run_and_kld(shared, qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*TINY)))
    v, st, res = w.eval_view, w.eval_view.settings, w.results
    assert st.target.currentIndex() == 1  # a float model: the recipe by default
    assert st.chunks.value() == DEFAULT_CHUNKS  # not "all"
    st.text.setText(str(shared("data", "wiki.test.raw")))
    st.n_ctx.setValue(64)
    st.chunks.setValue(1)
    st.target.setCurrentIndex(0)
    _run(qtbot, v)  # the file as it is: the baseline
    st.target.setCurrentIndex(1)
    w.session.set_text("@base Q8_0\nffn_down=q4_0\n", "edit", name="mix")
    _run(qtbot, v)
    w.session.set_text("@base Q8_0\nffn_down=q4_0\n", "edit")
    st.weights.setCurrentIndex(2)  # w = 1
    _run(qtbot, v)
    st.weights.setCurrentIndex(0)  # imatrix, but the recipe has none: refused with a reason
    assert not v.start() and "@imatrix" in v.panel.status.text()
    st.weights.setCurrentIndex(1)
    st.metric.setCurrentIndex(1)  # KLD against the open file
    _run(qtbot, v)
    runs = res.runs()
    names = [r.name for r in runs]
    assert names == ["tiny-qwen2.gguf (file)", "mix: q8_0+q4_0, no imatrix",
                     "mix: q8_0+q4_0, w=1", "mix: q8_0+q4_0, no imatrix KLD"]
    assert res.baseline_id == runs[0].id
    assert runs[1].result.total_bytes == w.plan.total_bytes
    assert runs[2].result.ppl != runs[1].result.ppl
    assert runs[3].result.kld > 0 and runs[3].result.base_path == w.session.model_path
    # every finished run stays on the live plot, each in its colour
    drawn = [o for o in v._overlays if o.isVisible()]
    assert len(drawn) == 4
    assert [list(o.getData()[1]) for o in drawn] == [list(r.result.curve) for r in runs]
    # the chart: all four as points in GiB, the KLD run with its own paired ratio
    c = w.chart_view
    assert len(c.shown) == 4
    kld_point = next(p for p in c.shown if p[0].id == runs[3].id)
    assert kld_point[2] == pytest.approx(100 * (runs[3].result.ppl_ratio - 1))
    # a click on a point opens its recipe as one undoable step
    w.session.set_text("@base Q4_0\n", "other")
    c.open_run.emit(runs[2])
    assert w.session.text == runs[2].result.recipe_text
    w.undo_action.trigger()
    assert w.session.text == "@base Q4_0\n"
    # the chunk estimate: the text is now tokenized (cached): chunks available and a time
    with open(shared(*TINY), "rb"):
        from iqk_studio.gguf.reader import open_model

        with open_model(shared(*TINY)) as m:
            n_tok = len(tokenize_file(m, shared("data", "wiki.test.raw"))[0])
    st.update_estimate()
    assert st.estimate.text().startswith(f"of {n_tok // 64}, ~")


def test_quantized_file_defaults_to_itself_and_text_is_found(shared, qtbot, tmp_path,
                                                            monkeypatch):
    from iqk_studio.demo import demo_model_path

    (tmp_path / "wiki.test.raw").write_text("text\n")
    monkeypatch.chdir(tmp_path)
    assert find_text(None) == str(tmp_path / "wiki.test.raw")
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(demo_model_path()))
    assert w.eval_view.settings.target.currentIndex() == 0  # Q4_K_M: the file as it is
    assert w.eval_view.settings.text.text() == str(tmp_path / "wiki.test.raw")
