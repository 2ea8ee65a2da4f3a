"""The editor's predicted-KLD label follows the plan (measurements written to a store by hand:
per tensor a weighted error at q4_0 and q8_0, per group a KLD at q4_0)."""

from iqk_studio.gguf.reader import open_model
from iqk_studio.optimize.space import build_space
from iqk_studio.recipe import plan
from iqk_studio.recipe.records import Recipe, Rule
from iqk_studio.results import CostKey, CostRow, model_id, open_store


def test_label_follows_the_plan(qtbot, shared, tmp_path):
    from iqk_studio.gui.prediction import PredictionLabel

    model = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    store = tmp_path / "r.sqlite3"
    label = PredictionLabel(store=store)
    qtbot.addWidget(label)
    label.set_model(model)
    assert label.live is None and label.text() == ""  # nothing measured yet
    with open_model(model) as m:
        sp = build_space(m, ("q4_0", "q8_0"))
        rows = [CostRow(n, t, err=e) for names in sp.groups.values() for n in names
                for t, e in (("q4_0", 2.0), ("q8_0", 1.0))]
        rows += [CostRow(g, "q4_0", kld=0.02, kld_err=0.001) for g in sp.groups]
        with open_store(store) as s:
            s.put_costs(CostKey(model_id(model), "text", 128, 1), rows)
        label.set_model(model)
        label.update_plan(plan(m, Recipe("Q8_0", (Rule(".", "q4_0"),))))
        assert label.text() == f"predicted KLD {0.02 * len(sp.groups):.4f}"
        label.update_plan(plan(m, Recipe("Q8_0", (Rule(".", "q8_0"),))))  # half the error
        assert label.text() == f"predicted KLD {0.01 * len(sp.groups):.4f}"
        label.update_plan(plan(m, Recipe("Q8_0", (Rule(".", "q6_0"),))))  # never measured
        assert label.text() == f"predicted KLD 0.0000 (0/{len(sp.groups)} groups measured)"
    assert label.live.key.n_ctx == 128 and label.live.n_measured == len(sp.groups)


def _measure_by_hand(model, store):
    """Per tensor an error at q4_0 (2.0) and q8_0 (1.0), per group a KLD of 0.02 at q4_0."""
    with open_model(model) as m:
        sp = build_space(m, ("q4_0", "q8_0"))
    rows = [CostRow(n, t, err=e) for names in sp.groups.values() for n in names
            for t, e in (("q4_0", 2.0), ("q8_0", 1.0))]
    rows += [CostRow(g, "q4_0", kld=0.02, kld_err=0.001) for g in sp.groups]
    with open_store(store) as s:
        s.put_costs(CostKey(model_id(model), "text", 128, 1), rows)
    return len(sp.groups)


def test_window_shows_the_prediction_beside_the_size(qtbot, shared, tmp_path, monkeypatch):
    """In the summary panel under the GiB/bpw: follows every edit, greys with the other
    numbers while an edit waits for its re-plan, blank for a model with no measurements."""
    from iqk_studio.gui.main_window import MainWindow

    monkeypatch.setenv("IQK_STUDIO_DATA", str(tmp_path))  # the window's default store
    model = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    n = _measure_by_hand(model, tmp_path / "results.sqlite3")
    win = MainWindow()
    qtbot.addWidget(win)
    assert win.open_model(str(model))
    label = win.summary.prediction
    assert label.isVisibleTo(win.summary) and label.live is not None
    win.session.set_text("@base Q8_0\n.=q4_0\n", "edit")
    assert label.text() == f"predicted KLD {0.02 * n:.4f}"
    win.session.set_text("@base Q8_0\n.=q8_0\n", "edit")
    assert label.text() == f"predicted KLD {0.01 * n:.4f}"
    win.session.undo_stack.undo()
    assert label.text() == f"predicted KLD {0.02 * n:.4f}"
    win.session.typed("@base Q8_0\n.=q8_0  \n")  # typing: stale until the debounced re-plan
    assert win.session.stale and "#999" in label.styleSheet()
    qtbot.waitUntil(lambda: not win.session.stale, timeout=3000)
    assert "#999" not in label.styleSheet() and label.text() == f"predicted KLD {0.01 * n:.4f}"
    assert win.open_model(str(shared("refs", "ppl", "tiny", "tiny-qwen3moe.gguf")))
    assert label.live is None and label.text() == ""
