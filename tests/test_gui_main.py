"""The main window on a real model: tensor table model (QAbstractItemModelTester), live re-plan."""

import pytest

pytest.importorskip("PySide6")
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402

from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.tensor_table import Column, TensorTableModel  # noqa: E402
from iqk_studio.recipe import plan  # noqa: E402
from iqk_studio.recipe.records import Recipe, Rule  # noqa: E402

INPUTS = ("refs", "quant", "inputs.gguf")


def test_table_model_tester(shared, qtbot):
    from iqk_studio.gguf.reader import open_model
    with open_model(shared(*INPUTS)) as m:
        p = plan(m, Recipe(base="Q8_0", rules=(Rule("ffn", "q4_0"),)))
    tm = TensorTableModel()
    QAbstractItemModelTester(tm, QAbstractItemModelTester.FailureReportingMode.Fatal)
    tm.set_plan(p)
    assert tm.rowCount() == len(p.entries)
    names = [tm.data(tm.index(r, Column.NAME)) for r in range(tm.rowCount())]
    assert names == [e.name for e in p.entries]
    types = [tm.data(tm.index(r, Column.TYPE)) for r in range(tm.rowCount())]
    assert types == [e.type for e in p.entries]
    tm.set_plan(None)
    assert tm.rowCount() == 0


def test_window_replans_live(shared, qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    assert w.open_model(str(shared(*INPUTS)))
    w.recipe_panel.editor.setPlainText("@base Q8_0\nffn_down=q4_0\n")
    qtbot.waitUntil(lambda: w.plan is not None and any(
        e.type == "q4_0" for e in w.plan.entries), timeout=3000)
    before = w.plan.total_bytes
    w.recipe_panel.editor.setPlainText("@base Q8_0\nffn=q4_0\n")
    qtbot.waitUntil(lambda: w.plan.total_bytes < before, timeout=3000)
    assert "\u2212" in w.summary.delta.text()
    # a rule that matches nothing shows up in the lint list
    w.recipe_panel.editor.setPlainText("@base Q8_0\nnothing_matches_this=q4_0\n")
    qtbot.waitUntil(lambda: any("nothing_matches_this" in w.recipe_panel.lints.item(i).text()
                                for i in range(w.recipe_panel.lints.count())), timeout=3000)


def test_bad_recipe_text_shows_error(shared, qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*INPUTS)))
    w.recipe_panel.editor.setPlainText("@base Q8_0\nno equals sign here\n")
    qtbot.waitUntil(lambda: "no '='" in w.recipe_panel.status.text(), timeout=3000)


def test_bad_model_is_a_message_not_a_crash(tmp_path, qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox
    shown = []
    monkeypatch.setattr(QMessageBox, "critical", lambda *a: shown.append(a[2]))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    w = MainWindow()
    qtbot.addWidget(w)
    assert not w.open_model(str(bad))
    assert shown and "bad.gguf" in shown[0]
    assert w.tensors_view.table_model.rowCount() == 0


def test_selecting_a_tensor_shows_its_distribution(shared, qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*INPUTS)))
    qtbot.waitUntil(lambda: w.plan is not None, timeout=3000)
    tv = w.tensors_view
    row = next(r for r in range(tv.proxy.rowCount())
               if tv.table_model.name_at(tv.proxy.mapToSource(tv.proxy.index(r, 0)).row())
               == "blk.0.ffn_up.weight")
    tv.table.setCurrentIndex(tv.proxy.index(row, 0))
    assert "blk.0.ffn_up.weight" in w.grids_view.caption.text()
    assert w.grids_view._sample.shape == (64, 1024)


def test_set_type_of_selected_rows(shared, qtbot):
    from PySide6.QtCore import QItemSelectionModel
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*INPUTS)))
    w.recipe_panel.editor.setPlainText("@base Q8_0\nffn=q4_0\n")
    qtbot.waitUntil(lambda: w.plan is not None and bool(w.session.snapshot.recipe.rules),
                    timeout=3000)
    tv = w.tensors_view
    assert not tv.set_selection_type()  # nothing selected: a message, no change
    pick = {"blk.0.ffn_up.weight", "blk.0.attn_v.weight"}
    sm = tv.table.selectionModel()
    for r in range(tv.proxy.rowCount()):
        idx = tv.proxy.index(r, 0)
        if tv.table_model.name_at(tv.proxy.mapToSource(idx).row()) in pick:
            sm.select(idx, QItemSelectionModel.Select | QItemSelectionModel.Rows)
    tv.set_type.setCurrentText("q6_K")
    assert tv.set_selection_type()
    qtbot.waitUntil(lambda: w.plan.entry("blk.0.ffn_up.weight").type == "q6_K", timeout=3000)
    assert w.plan.entry("blk.0.attn_v.weight").type == "q6_K"
    assert w.plan.entry("blk.0.ffn_gate.weight").type == "q4_0"  # the old rule still applies
