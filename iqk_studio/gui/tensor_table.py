"""The per-tensor table: a thin Qt model over numpy columns precomputed from a Plan."""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QRegularExpression,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from iqk_studio.recipe.records import Plan

SORT_ROLE = Qt.UserRole + 1
_ROLES = [Qt.DisplayRole, SORT_ROLE, Qt.ToolTipRole, Qt.ForegroundRole]
_DISPLAY, _SORT, _FOREGROUND = int(Qt.DisplayRole.value), int(SORT_ROLE), int(Qt.ForegroundRole.value)
_ALIGN, _TOOLTIP = int(Qt.TextAlignmentRole.value), int(Qt.ToolTipRole.value)
_RIGHT = int((Qt.AlignRight | Qt.AlignVCenter).value)


class Column(IntEnum):
    NAME = 0
    LAYER = 1
    SHAPE = 2
    SOURCE = 3
    TYPE = 4
    BYTES = 5
    BPW = 6
    DEVICE = 7
    REASON = 8


_NCOL = len(Column)
_TYPE_COL = int(Column.TYPE)
_RIGHT_COLS = frozenset((int(Column.LAYER), int(Column.BYTES), int(Column.BPW)))
HEADERS = {
    Column.NAME: "tensor", Column.LAYER: "layer", Column.SHAPE: "shape (ggml)",
    Column.SOURCE: "source", Column.TYPE: "type", Column.BYTES: "MiB", Column.BPW: "bpw",
    Column.DEVICE: "device", Column.REASON: "why",
}
_CHANGED = QBrush(QColor(30, 110, 200))
_WARN = QBrush(QColor(200, 90, 0))


def fmt_shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in shape)


class TensorTableModel(QAbstractTableModel):
    """Columns are Column; data() is an O(1) lookup into arrays built once per plan."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._n = 0
        self._text: dict[Column, np.ndarray] = {}
        self._sort: dict[Column, np.ndarray] = {}
        self._quantized = np.zeros(0, bool)
        self._warned = np.zeros(0, bool)
        self._tips = np.zeros(0, object)
        self._rows: list[list] = [[] for _ in Column]
        self._sort_rows: list[list] = [[] for _ in Column]
        self._names: tuple[str, ...] = ()
        self._nel = np.zeros(0, np.int64)

    def set_plan(self, plan: Plan | None) -> None:
        """Show a plan. For the same tensors as now (an edit of the recipe), rows are updated in
        place: dataChanged for the rows whose type, size, device or reason changed, so the view
        keeps its selection, scroll position and sort without a reset. Otherwise a reset."""
        entries = plan.entries if plan is not None else ()
        names = tuple(e.name for e in entries)
        if self._n and names == self._names:
            self._update(entries)
        else:
            self.reset(plan)

    def reset(self, plan: Plan | None) -> None:
        """Rebuild every column (a new model, or the first plan)."""
        self.beginResetModel()
        entries = plan.entries if plan is not None else ()
        n = len(entries)
        nel = np.array([max(e.n_elements, 1) for e in entries], dtype=np.int64)
        layer = np.array([-1 if e.layer is None else e.layer for e in entries], dtype=np.int64)
        self._names = tuple(e.name for e in entries)
        self._nel = nel
        self._text = {
            Column.NAME: np.array(self._names, dtype=object),
            Column.LAYER: np.array(["" if v < 0 else str(v) for v in layer], dtype=object),
            Column.SHAPE: np.array([fmt_shape(e.shape) for e in entries], dtype=object),
            Column.SOURCE: np.array([e.source_type for e in entries], dtype=object),
        }
        self._sort = dict(self._text)
        self._sort[Column.NAME] = np.arange(n)  # file order
        self._sort[Column.LAYER] = layer
        self._sort[Column.SHAPE] = nel
        self._set_varying(entries)
        self._n = n
        self.endResetModel()

    def _set_varying(self, entries) -> np.ndarray:
        """(Re)compute the columns an edit can change; returns a mask of the rows that changed."""
        n = len(entries)
        nbytes = np.array([e.bytes for e in entries], dtype=np.int64)
        bpw = nbytes * 8 / self._nel if n else np.zeros(0)
        cols = {
            Column.TYPE: np.array([e.type for e in entries], dtype=object),
            Column.BYTES: np.array([f"{b / 2**20:.3f}" for b in nbytes], dtype=object),
            Column.BPW: np.array([f"{v:.3f}" for v in bpw], dtype=object),
            Column.DEVICE: np.array([e.device for e in entries], dtype=object),
            Column.REASON: np.array([e.reason for e in entries], dtype=object),
        }
        tips = np.array(["\n".join((e.reason, *e.warnings)) for e in entries], dtype=object)
        changed = np.zeros(n, dtype=bool)
        if self._tips.shape == tips.shape and Column.TYPE in self._text:
            for c, a in cols.items():
                changed |= a != self._text[c]
            changed |= tips != self._tips
        self._text.update(cols)
        self._sort.update(cols)
        self._sort[Column.BYTES] = nbytes
        self._sort[Column.BPW] = bpw
        self._quantized = np.array([e.type != e.source_type for e in entries], dtype=bool)
        self._warned = np.array([bool(e.warnings) for e in entries], dtype=bool)
        self._tips = tips
        self._rows = [self._text[c].tolist() for c in Column]  # what data() reads: lists
        self._sort_rows = [np.asarray(self._sort[c]).tolist() for c in Column]
        return changed

    def _update(self, entries) -> None:
        changed = self._set_varying(entries)
        rows = np.flatnonzero(changed)
        if not rows.size:
            return
        # one dataChanged per run of consecutive changed rows, over the columns an edit changes
        breaks = np.flatnonzero(np.diff(rows) > 1)
        starts = np.concatenate([[rows[0]], rows[breaks + 1]])
        ends = np.concatenate([rows[breaks], [rows[-1]]])
        for r0, r1 in zip(starts.tolist(), ends.tolist()):
            self.dataChanged.emit(self.index(r0, Column.TYPE), self.index(r1, Column.REASON),
                                  _ROLES)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt API)
        return 0 if parent.isValid() else self._n

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else _NCOL

    def data(self, index: QModelIndex, role=Qt.DisplayRole):
        # called for every role of every painted cell: plain ints and lists, no enum objects
        role = int(role)
        if role == _DISPLAY:
            return self._rows[index.column()][index.row()]
        if role == _SORT:
            return self._sort_rows[index.column()][index.row()]
        if role == _FOREGROUND:
            if index.column() == _TYPE_COL:
                r = index.row()
                return _WARN if self._warned[r] else (_CHANGED if self._quantized[r] else None)
            return None
        if role == _ALIGN:
            return _RIGHT if index.column() in _RIGHT_COLS else None
        if role == _TOOLTIP:
            return self._tips[index.row()]
        return None

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if role == Qt.DisplayRole and orientation == Qt.Horizontal and 0 <= section < len(Column):
            return HEADERS[Column(section)]
        return None

    def name_at(self, row: int) -> str:
        return self._names[row]


class TensorFilterProxy(QSortFilterProxyModel):
    """Sorts by the model's SORT_ROLE values; filters tensor names by a regex."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(Column.NAME)

    def set_pattern(self, text: str) -> bool:
        rx = QRegularExpression(text)
        if not rx.isValid():
            return False
        self.setFilterRegularExpression(rx)
        return True
