"""The main window: open a GGUF, edit a recipe, watch the per-tensor plan and sizes update live."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gguf.reader import GGUFError, open_model
from iqk_studio.gui.actions import (
    QuantizeControl,
    export_command,
    fill_library_menu,
    import_command,
)
from iqk_studio.gui.compare_view import CompareView
from iqk_studio.gui.grids_view import GridsView
from iqk_studio.gui.ppl_view import PerplexityView
from iqk_studio.gui.recipe_panel import RecipePanel
from iqk_studio.gui.sensitivity_view import SensitivityView
from iqk_studio.gui.summary import SummaryPanel, size_line
from iqk_studio.gui.tensor_table import Column, TensorFilterProxy, TensorTableModel
from iqk_studio.jobs.recipe_eval import RecipePoint
from iqk_studio.quant.types import FTYPE_BY_ID, QUANT_TYPES, Kind
from iqk_studio.recipe import model_view, plan, textfile
from iqk_studio.recipe.records import Recipe
from iqk_studio.recipe.selection import with_selection_rule

DEFAULT_RECIPE = Recipe(base="Q8_0", note="")


class MainWindow(QMainWindow):
    model_opened = Signal(object)  # GGUFModel
    plan_changed = Signal(object)  # Plan

    def __init__(self):
        super().__init__()
        self.setWindowTitle("iqk-studio")
        self.resize(1500, 900)
        self.model = None
        self.model_path: str | None = None
        self.plan = None
        self.plan_ms = 0.0

        self.table_model = TensorTableModel(self)
        self.proxy = TensorFilterProxy(self)
        self.proxy.setSourceModel(self.table_model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(Column.NAME, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QTableView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.Interactive)
        hh.setStretchLastSection(True)
        for col, width in ((Column.NAME, 260), (Column.LAYER, 45), (Column.SHAPE, 120),
                           (Column.SOURCE, 70), (Column.TYPE, 70), (Column.BYTES, 80),
                           (Column.BPW, 60), (Column.DEVICE, 55)):
            hh.resizeSection(col, width)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("filter tensors by regex, e.g. blk\\.1[0-9]\\.ffn_down")
        self.filter.textChanged.connect(self._filter)

        self.recipe_panel = RecipePanel()
        self.summary = SummaryPanel()
        self.recipe_panel.recipe_changed.connect(self.replan)
        self.recipe_panel.lint_clicked.connect(self._show_lint_tensors)

        tensors = QWidget()
        tl = QVBoxLayout(tensors)
        tl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.filter, 1)
        self.set_type = QComboBox()
        self.set_type.addItems([t.name for t in QUANT_TYPES if t.is_quantized or t.kind == Kind.FLOAT])
        self.set_type.setCurrentText("q8_0")
        apply_btn = QPushButton("Set type of selected rows")
        apply_btn.setToolTip("adds a rule for exactly the selected tensors at the top of the recipe")
        apply_btn.clicked.connect(self.set_selection_type)
        row.addWidget(self.set_type)
        row.addWidget(apply_btn)
        tl.addLayout(row)
        tl.addWidget(self.table)
        self.tabs = QTabWidget()
        self.tabs.addTab(tensors, "Tensors")
        self.grids_view = GridsView()
        self.tabs.addTab(self.grids_view, "Grids && error")
        self.ppl_view = PerplexityView()
        self.tabs.addTab(self.ppl_view, "Perplexity")
        self.compare_view = CompareView()
        self.tabs.addTab(self.compare_view, "Size vs quality")
        self.sensitivity_view = SensitivityView()
        self.sensitivity_view.text_source = lambda: self.ppl_view.text.text().strip()
        self.tabs.addTab(self.sensitivity_view, "Sensitivity")
        self.ppl_view.plan_provider = self.current_plan
        self.ppl_view.finished.connect(self._evaluated)
        self.table.selectionModel().currentRowChanged.connect(self._tensor_selected)
        split = QSplitter()
        split.addWidget(self.recipe_panel)
        split.addWidget(self.tabs)
        split.addWidget(self.summary)
        split.setSizes([380, 850, 300])
        self.setCentralWidget(split)
        self.quantize_control = QuantizeControl(self)
        self._menus()
        self.statusBar().showMessage("open a GGUF model (File > Open)")

    def _menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        self._action(m, "&Open model...", self.open_dialog, QKeySequence.Open)
        self._action(m, "Load &recipe...", self.load_recipe_dialog)
        self._action(m, "&Save recipe...", self.save_recipe_dialog, QKeySequence.Save)
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence.Quit)
        r = self.menuBar().addMenu("&Recipe")
        self._action(r, "Export &ik_llama.cpp command...", lambda: export_command(self, False))
        self._action(r, "Export &mainline llama.cpp command...", lambda: export_command(self, True))
        self._action(r, "&Import command or custom= block...", lambda: import_command(self))
        fill_library_menu(self, r.addMenu("Published &recipes"))
        run = self.menuBar().addMenu("&Run")
        self._action(run, "&Quantize to GGUF...", self.quantize_control.start_dialog)
        self._action(run, "&Perplexity", lambda: self.tabs.setCurrentWidget(self.ppl_view))
        self._action(run, "Compare &importance modes...", self.compare_importance)

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(shortcut)
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    # --- model -------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open GGUF", "", "GGUF (*.gguf);;All (*)")
        if path:
            self.open_model(path)

    def open_model(self, path) -> bool:
        t0 = time.perf_counter()
        try:
            model = open_model(path)
        except (GGUFError, OSError) as e:
            QMessageBox.critical(self, "Cannot open model", str(e))
            return False
        if self.model is not None:
            self.model.close()
        self.model = model
        self.model_path = str(path)
        self.ppl_view.model_path = self.model_path
        self.sensitivity_view.model, self.sensitivity_view.model_path = model, self.model_path
        model_view(model)
        ms = (time.perf_counter() - t0) * 1000
        self.setWindowTitle(f"iqk-studio \u2014 {Path(path).name}")
        self.statusBar().showMessage(
            f"opened {path}: {len(model.tensors)} tensors, {model.arch} in {ms:.0f} ms")
        if self.recipe_panel.recipe() is None:
            self.recipe_panel.set_recipe(starting_recipe(model))
        else:
            self.replan(self.recipe_panel.recipe())
        self.model_opened.emit(model)
        return True

    # --- recipe -> plan ----------------------------------------------------------------------
    def replan(self, recipe: Recipe) -> None:
        if self.model is None:
            return
        t0 = time.perf_counter()
        try:
            p = plan(self.model, recipe)
        except (KeyError, ValueError) as e:
            self.recipe_panel.status.setText(f"<span style='color:#c00'>{e}</span>")
            return
        self.plan_ms = (time.perf_counter() - t0) * 1000
        self.plan = p
        self.table_model.set_plan(p)
        self.summary.show_plan(p)
        self.recipe_panel.show_lints(p.warnings)
        self.statusBar().showMessage(
            f"{size_line(p)} \u2014 planned {len(p.entries)} tensors in {self.plan_ms:.1f} ms")
        self.plan_changed.emit(p)

    def current_plan(self):
        """(plan, imatrix or None, label) of the recipe being edited, for an evaluation."""
        r = self.recipe_panel.recipe()
        imatrix = None
        if r is not None and r.imatrix:
            from iqk_studio.gguf.imatrix import load_imatrix
            try:
                imatrix = load_imatrix(r.imatrix)
            except (OSError, ValueError) as e:
                QMessageBox.critical(self, "Cannot read imatrix", str(e))
                return None, None, ""
        label = recipe_label(r) if r is not None else ""
        return self.plan, imatrix, label

    def _evaluated(self, result) -> None:
        if isinstance(result, RecipePoint):
            self.compare_view.add(result)

    def _tensor_selected(self, current, _previous=None) -> None:
        if self.model is None or not current.isValid():
            return
        name = self.table_model.name_at(self.proxy.mapToSource(current).row())
        self.grids_view.set_tensor(self.model, name)

    def selected_names(self) -> list[str]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return [self.table_model.name_at(r) for r in sorted(rows)]

    def set_selection_type(self) -> bool:
        """A rule for exactly the selected tensors, first in the recipe (first match wins)."""
        r, names = self.recipe_panel.recipe(), self.selected_names()
        if r is None or not names:
            self.statusBar().showMessage("select tensors in the table first", 5000)
            return False
        self.recipe_panel.set_recipe(with_selection_rule(r, names, self.set_type.currentText()))
        return True

    def _filter(self, text: str) -> None:
        ok = self.proxy.set_pattern(text)
        self.filter.setStyleSheet("" if ok else "background: #fdd")

    def _show_lint_tensors(self, lint) -> None:
        if lint is not None and lint.tensors:
            names = "|".join(n.replace(".", r"\.") for n in lint.tensors[:200])
            self.filter.setText(f"^({names})$")

    def load_recipe_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load recipe", "", "Recipe (*.txt *.recipe);;All (*)")
        if path:
            try:
                self.recipe_panel.set_recipe(textfile.load(path))
            except (OSError, ValueError) as e:
                QMessageBox.critical(self, "Cannot load recipe", str(e))

    def save_recipe_dialog(self) -> None:
        r = self.recipe_panel.recipe()
        if r is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe", "recipe.txt", "Recipe (*.txt)")
        if path:
            try:
                textfile.save(r, path)
            except OSError as e:
                QMessageBox.critical(self, "Cannot save recipe", str(e))

    def compare_importance(self) -> None:
        from iqk_studio.gui.importance_dialog import open_dialog

        dlg = open_dialog(self)
        if dlg is not None:
            dlg.exec()

    def runners(self):
        return (self.ppl_view.runner, self.quantize_control.runner, self.grids_view.runner,
                self.grids_view.stats_view.runner, self.sensitivity_view.runner)

    def shutdown(self) -> None:
        """Cancel running jobs and wait for their threads (a cancelled quantize removes its
        temp file), then release the model's memory maps."""
        for r in self.runners():
            r.cancel()
        for r in self.runners():
            r.wait(60000)
        if self.model is not None:
            self.model.close()
            self.model = None

    def closeEvent(self, event) -> None:  # Qt API name
        self.shutdown()
        super().closeEvent(event)


def recipe_label(r: Recipe) -> str:
    """A short name for a chart point: the note's first line, else base + rules."""
    if r.note:
        return r.note.splitlines()[0][:40]
    rules = ",".join(str(x) for x in r.rules[:3]) + ("..." if len(r.rules) > 3 else "")
    return f"{r.base} {rules}".strip()


def starting_recipe(model) -> Recipe:
    """The file's own ftype as base (Q8_0 for float files); for an already quantized file,
    --allow-requantize, without which llama-quantize refuses."""
    ft = FTYPE_BY_ID.get(int(model.metadata.get("general.file_type", -1)) & ~1024)
    quantized_source = any(t.qtype.is_quantized for t in model.tensors.values())
    base = "Q8_0" if ft is None or ft.name in ("F32", "F16", "BF16") else ft.name
    note = "the source is already quantized: requantizing loses quality" if quantized_source else ""
    return DEFAULT_RECIPE.with_(base=base, allow_requantize=quantized_source, note=note)
