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

    def set_plan(self, plan: Plan | None) -> None:
        self.beginResetModel()
        entries = plan.entries if plan is not None else ()
        n = len(entries)
        nbytes = np.array([e.bytes for e in entries], dtype=np.int64)
        nel = np.array([max(e.n_elements, 1) for e in entries], dtype=np.int64)
        bpw = nbytes * 8 / nel if n else np.zeros(0)
        layer = np.array([-1 if e.layer is None else e.layer for e in entries], dtype=np.int64)
        self._text = {
            Column.NAME: np.array([e.name for e in entries], dtype=object),
            Column.LAYER: np.array(["" if v < 0 else str(v) for v in layer], dtype=object),
            Column.SHAPE: np.array([fmt_shape(e.shape) for e in entries], dtype=object),
            Column.SOURCE: np.array([e.source_type for e in entries], dtype=object),
            Column.TYPE: np.array([e.type for e in entries], dtype=object),
            Column.BYTES: np.array([f"{b / 2**20:.3f}" for b in nbytes], dtype=object),
            Column.BPW: np.array([f"{v:.3f}" for v in bpw], dtype=object),
            Column.DEVICE: np.array([e.device for e in entries], dtype=object),
            Column.REASON: np.array([e.reason for e in entries], dtype=object),
        }
        self._sort = dict(self._text)
        self._sort[Column.NAME] = np.arange(n)  # file order
        self._sort[Column.LAYER] = layer
        self._sort[Column.SHAPE] = nel
        self._sort[Column.BYTES] = nbytes
        self._sort[Column.BPW] = bpw
        self._quantized = np.array([e.type != e.source_type for e in entries], dtype=bool)
        self._warned = np.array([bool(e.warnings) for e in entries], dtype=bool)
        self._tips = np.array(["\n".join((e.reason, *e.warnings)) for e in entries], dtype=object)
        self._n = n
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt API)
        return 0 if parent.isValid() else self._n

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(Column)

    def data(self, index: QModelIndex, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        r, c = index.row(), Column(index.column())
        if role == Qt.DisplayRole:
            return self._text[c][r]
        if role == SORT_ROLE:
            v = self._sort[c][r]
            return v.item() if isinstance(v, np.generic) else v
        if role == Qt.ToolTipRole:
            return self._tips[r]
        if role == Qt.ForegroundRole and c == Column.TYPE:
            if self._warned[r]:
                return _WARN
            if self._quantized[r]:
                return _CHANGED
        if role == Qt.TextAlignmentRole and c in (Column.LAYER, Column.BYTES, Column.BPW):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if role == Qt.DisplayRole and orientation == Qt.Horizontal and 0 <= section < len(Column):
            return HEADERS[Column(section)]
        return None

    def name_at(self, row: int) -> str:
        return self._text[Column.NAME][row]


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
