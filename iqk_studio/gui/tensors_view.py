"""The Tensors tab: the per-tensor plan table (filter by regex, sort) and "set type of selected
rows", which adds an exact rule for the selection at the top of the recipe."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.recipe_panel import TypeBox
from iqk_studio.gui.session import Session, Snapshot, insert_rule_first
from iqk_studio.gui.tensor_table import Column, TensorFilterProxy, TensorTableModel
from iqk_studio.quant.types import QUANT_TYPES, Kind
from iqk_studio.recipe.records import Rule
from iqk_studio.recipe.selection import selection_pattern

_WIDTHS = ((Column.NAME, 230), (Column.LAYER, 40), (Column.SHAPE, 110), (Column.SOURCE, 60),
           (Column.TYPE, 60), (Column.BYTES, 70), (Column.BPW, 50), (Column.DEVICE, 50))


class TensorsView(QWidget):
    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
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
        for col, width in _WIDTHS:
            hh.resizeSection(col, width)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("filter by regex, e.g. blk\\.1[0-9]\\.ffn_down")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter)
        self.set_type = TypeBox(sorted((t.name for t in QUANT_TYPES
                                        if t.is_quantized or t.kind == Kind.FLOAT),
                                       key=str.lower))
        self.set_type.set_current("q8_0")
        apply_btn = QPushButton("Set type of selection")
        apply_btn.setToolTip("adds a rule for exactly the selected tensors at the top of the "
                             "recipe (undo: Ctrl+Z)")
        apply_btn.clicked.connect(self.set_selection_type)
        row = QHBoxLayout()
        row.addWidget(self.filter, 1)
        row.addWidget(self.set_type)
        row.addWidget(apply_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.table)
        session.plan_changed.connect(self._show)
        session.model_changed.connect(self._model_changed)
        session.stale_changed.connect(self._stale)

    def _show(self, snap: Snapshot) -> None:
        if snap.plan is not None:
            self.table_model.set_plan(snap.plan)

    def _model_changed(self, _model) -> None:
        self.table_model.reset(None)

    def _stale(self, stale: bool) -> None:
        self.table.setStyleSheet("QTableView { color: #999 }" if stale else "")

    def selected_names(self) -> list[str]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return [self.table_model.name_at(r) for r in sorted(rows)]

    def select_names(self, names) -> None:
        names, sm = set(names), self.table.selectionModel()
        sm.clearSelection()
        for r in range(self.proxy.rowCount()):
            idx = self.proxy.index(r, 0)
            if self.table_model.name_at(self.proxy.mapToSource(idx).row()) in names:
                sm.select(idx, QItemSelectionModel.Select | QItemSelectionModel.Rows)

    def set_selection_type(self) -> bool:
        """A rule for exactly the selected tensors, first in the recipe (first match wins)."""
        names = self.selected_names()
        if self.session.snapshot.recipe is None or not names:
            self.session.say("select tensors in the table first (and fix the recipe's syntax)")
            return False
        t = self.set_type.currentText().strip()
        rule = Rule(selection_pattern(names), t)
        self.session.set_text(insert_rule_first(self.session.text, str(rule)),
                              f"set {len(names)} tensor(s) to {t}")
        return True

    def show_tensors(self, names) -> None:
        """Filter the table to exactly these tensors (from a lint)."""
        if names:
            self.filter.setText("^(" + "|".join(n.replace(".", r"\.") for n in names[:200])
                                + ")$")

    def _filter(self, text: str) -> None:
        ok = self.proxy.set_pattern(text)
        self.filter.setStyleSheet("" if ok else "background: #fdd")
