"""The tensor table updates in place on an edit: no reset, dataChanged only for the rows that
changed, selection and sort kept (bench/bench_gui_edit.py measures what this saves)."""

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QAbstractItemModelTester  # noqa: E402

from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.tensor_table import Column, TensorTableModel  # noqa: E402
from iqk_studio.recipe import plan  # noqa: E402
from iqk_studio.recipe.records import Recipe, Rule  # noqa: E402

INPUTS = ("refs", "quant", "inputs.gguf")


def test_in_place_update_under_the_model_tester(shared):
    from iqk_studio.gguf.reader import open_model

    with open_model(shared(*INPUTS)) as m:
        p1 = plan(m, Recipe(base="Q8_0"))
        p2 = plan(m, Recipe(base="Q8_0", rules=(Rule("ffn_down", "q4_0"),)))
    tm = TensorTableModel()
    QAbstractItemModelTester(tm, QAbstractItemModelTester.FailureReportingMode.Fatal)
    tm.set_plan(p1)
    resets, changed = [], []
    tm.modelAboutToBeReset.connect(lambda: resets.append(1))
    tm.dataChanged.connect(lambda a, b, roles: changed.extend(range(a.row(), b.row() + 1)))
    tm.set_plan(p2)
    assert not resets
    want = [i for i, (a, b) in enumerate(zip(p1.entries, p2.entries)) if a.type != b.type]
    assert want and sorted(changed) == want
    types = [tm.data(tm.index(r, Column.TYPE)) for r in range(tm.rowCount())]
    assert types == [e.type for e in p2.entries]
    mib = [tm.data(tm.index(r, Column.BYTES)) for r in range(tm.rowCount())]
    assert mib == [f"{e.bytes / 2**20:.3f}" for e in p2.entries]
    changed.clear()
    tm.set_plan(p2)  # nothing changed: no signal at all
    assert not changed and not resets


def test_edit_keeps_selection_and_sort(shared, qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*INPUTS)))
    tv = w.tensors_view
    tv.table.sortByColumn(Column.BYTES, Qt.DescendingOrder)
    tv.select_names(["blk.0.attn_k.weight", "blk.0.ffn_down.weight"])
    resets = []
    tv.proxy.modelAboutToBeReset.connect(lambda: resets.append(1))
    w.session.set_text(w.session.text + "ffn_down=q4_0\n", "edit")
    assert not resets
    assert tv.selected_names() == ["blk.0.attn_k.weight", "blk.0.ffn_down.weight"]
    sizes = [tv.table_model._sort[Column.BYTES][tv.proxy.mapToSource(tv.proxy.index(r, 0)).row()]
             for r in range(tv.proxy.rowCount())]
    assert sizes == sorted(sizes, reverse=True)  # re-sorted by the new sizes
