"""Desktop conventions: drag and drop, remembered settings, recent files, About, shortcuts, the
searchable type list, a usable window at 1024 x 700; the Sensitivity tab's sort and apply."""

import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402

from iqk_studio.gui import desktop  # noqa: E402
from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.recipe_panel import sorted_ftype_names  # noqa: E402
from iqk_studio.gui.sensitivity_view import natural_key  # noqa: E402
from iqk_studio.jobs.sensitivity import Candidate, Sensitivity  # noqa: E402

INPUTS = ("refs", "quant", "inputs.gguf")


def _drop(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    ev = QDropEvent(QPointF(5, 5), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    widget.dropEvent(ev)


def test_dropping_files(shared, qtbot, tmp_path):
    w = MainWindow()
    qtbot.addWidget(w)
    w.session.set_text("@base Q8_0\n", "x")
    _drop(w.recipe_panel.editor, [shared(*INPUTS)])  # onto the editor: opens, inserts nothing
    assert w.session.model_path == str(shared(*INPUTS))
    assert w.recipe_panel.editor.toPlainText() == "@base Q8_0\n"
    r = tmp_path / "a.recipe"
    r.write_text("@base Q4_0\n")
    _drop(w, [r])  # a recipe onto the window: loaded
    assert w.session.snapshot.recipe.base == "Q4_0" and w.session.recipe_name == "a"


def test_settings_are_remembered(shared, qtbot, tmp_path):
    ini = str(tmp_path / "settings.ini")
    w = MainWindow(settings=QSettings(ini, QSettings.IniFormat))
    qtbot.addWidget(w)
    w.resize(760, 560)  # within the offscreen screen (restoreGeometry clamps to it)
    w.open_model(str(shared(*INPUTS)))
    w.session.set_text("@base Q4_0\nffn=q8_0\n", "edit")
    st = w.eval_view.settings
    st.text.setText(__file__)
    st.n_ctx.setValue(256)
    st.chunks.setValue(3)
    st.engine.setCurrentIndex(1)  # the user's llama-perplexity, its folder and arguments
    st.external.where.setText(str(tmp_path / "ik_llama.cpp" / "build"))
    st.external.args.setText("-ngl 99 -ot 'exps=CPU' -t 32")
    st.external.stop_nan.setChecked(True)
    w.split.setSizes([200, 700, 200])
    sizes = w.split.sizes()
    w.close()
    w2 = MainWindow(settings=QSettings(ini, QSettings.IniFormat))
    qtbot.addWidget(w2)
    desktop.restore_session(w2, w2.settings)
    assert w2.session.model_path == str(shared(*INPUTS))
    assert w2.session.text == "@base Q4_0\nffn=q8_0\n" and w2.plan is not None
    st2 = w2.eval_view.settings
    assert (st2.text.text(), st2.n_ctx.value(), st2.chunks.value()) == (__file__, 256, 3)
    x = st2.external
    assert st2.is_external() and not x.isHidden() and not st2.target.isEnabled()
    assert (x.where.text(), x.args.text(), x.stop_nan.isChecked()) == (
        str(tmp_path / "ik_llama.cpp" / "build"), "-ngl 99 -ot 'exps=CPU' -t 32", True)
    qtbot.waitUntil(lambda: "not found" in x.flavour.text(), timeout=10000)  # detected: absent
    assert (w2.width(), w2.height()) == (760, 560)
    assert w2.split.sizes() == sizes
    recent = [a.toolTip() for a in w2.recent_menu.actions()]
    assert recent == [str(shared(*INPUTS).resolve())]


def test_menus_shortcuts_about(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    keys = {a.text().replace("&", ""): a.shortcut().toString()
            for m in w.menuBar().actions() for a in m.menu().actions()}
    assert keys["Evaluate"] == "F5" and keys["Cancel running jobs"] == "Shift+F5"
    assert keys["Quantize to GGUF..."] == "Ctrl+Shift+Q" and keys["Undo"] == "Ctrl+Z"
    text = desktop.about_text()
    for name in ("numba", "PySide6-Essentials", "Qt", "Python", "iqk-studio"):
        assert name in text


def test_type_list_is_sorted_and_searchable(qtbot):
    names = sorted_ftype_names()
    assert names.index("Q2_K") < names.index("Q3_K_M") < names.index("Q10_X" if "Q10_X" in names
                                                                        else "Q8_0")
    w = MainWindow()
    qtbot.addWidget(w)
    box = w.recipe_panel.base
    assert [box.itemText(i) for i in range(box.count())] == names
    box.lineEdit().selectAll()  # what a click into the box does
    qtbot.keyClicks(box.lineEdit(), "iq4_k")
    found = box.completer().completionModel()
    got = {found.index(i, 0).data() for i in range(found.rowCount())}
    assert got and all("IQ4_K" in g for g in got)


def test_usable_at_1024_by_700(shared, qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*INPUTS)))
    hint = w.minimumSizeHint()
    assert hint.width() <= 1024 and hint.height() <= 700
    w.resize(1024, 700)
    w.show()
    qtbot.waitExposed(w)
    assert (w.width(), w.height()) == (1024, 700)
    for widget in (w.summary.total, w.statusBar(), w.tabs, w.recipe_panel.editor):
        top_left = widget.mapTo(w, widget.rect().topLeft())
        assert widget.isVisible() and widget.width() > 50
        assert 0 <= top_left.x() and top_left.x() + widget.width() <= 1024 + 1, widget


def test_sensitivity_sorts_numerically_and_applies(shared, qtbot):
    assert sorted(["layer 12", "layer 2", "non-layer", "layer 1"], key=natural_key) == [
        "layer 1", "layer 2", "layer 12", "non-layer"]
    w = MainWindow()
    qtbot.addWidget(w)
    w.open_model(str(shared(*INPUTS)))
    s = w.sensitivity_view
    s._cands = {"attn_v": Candidate("attn_v", {"blk.0.attn_v.weight": "q4_0"}),
                "blk.12.x": Candidate("blk.12.x", {}), "blk.2.x": Candidate("blk.2.x", {})}
    s._qtype = "q4_0"
    for i, label in enumerate(["blk.12.x", "attn_v", "blk.2.x"]):
        s._on_event(Sensitivity(i + 1, 3, label, 1000, 500, 0.1 * (i + 1), 0.01, 0.0, 0.9, 1.0))
    s.table.sortByColumn(0, Qt.AscendingOrder)
    order = [s.table.topLevelItem(i).text(0) for i in range(3)]
    assert order == ["attn_v", "blk.2.x", "blk.12.x"]
    assert list(s._bars.opts["height"]) == pytest.approx([0.2, 0.3, 0.1])
    s.table.setCurrentItem(s.table.topLevelItem(0))
    assert s.apply_selected()
    assert w.plan.entry("blk.0.attn_v.weight").type == "q4_0"
    w.undo_action.trigger()
    assert w.plan.entry("blk.0.attn_v.weight").type == "q8_0"
