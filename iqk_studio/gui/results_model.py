"""The results list as a Qt table model over a RunSource: editable names, which runs are drawn on
the live plot, which one is the baseline, each run's colour. Views redraw on `changed`."""

from __future__ import annotations

import math
from enum import IntEnum

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from iqk_studio.gui.results import Run, RunSource, SessionRuns, mean_kld, ppl_ratio_pct
from iqk_studio.jobs.evaluate import IMPORTANCE_LABELS, RunResult

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
RUN_ID_ROLE = Qt.UserRole + 2


class RCol(IntEnum):
    NAME = 0
    GIB = 1
    BPW = 2
    PPL = 3
    VS_BASE = 4
    KLD = 5
    CHUNKS = 6
    WEIGHTS = 7


HEADERS = {RCol.NAME: "run (double-click to rename)", RCol.GIB: "GiB", RCol.BPW: "bpw",
           RCol.PPL: "PPL", RCol.VS_BASE: "PPL vs base", RCol.KLD: "mean KLD",
           RCol.CHUNKS: "chunks \u00d7 n_ctx", RCol.WEIGHTS: "weights"}


def run_tooltip(run: Run) -> str:
    r = run.result
    lines = [run.name, f"model: {r.model_path}", f"text: {r.text_path}",
             f"{r.n_chunks} chunks of {r.n_ctx}, {r.seconds:.0f} s",
             f"size: {r.gib:.4f} GiB ({r.bpw:.3f} bpw)",
             f"PPL = {r.ppl:.4f} \u00b1 {r.ppl_err:.4f}"]
    if r.kind == "kld":
        lines += [f"base: {r.base_path} (PPL {r.ppl_base:.4f})",
                  f"mean KLD = {r.kld:.6f} \u00b1 {r.kld_err:.6f}, same top {100 * r.same_top:.2f} %"]
    if r.recipe_text:
        lines += [f"weights: {IMPORTANCE_LABELS.get(r.importance, r.importance)}", "recipe:"]
        body = [ln for ln in r.recipe_text.splitlines() if ln.strip() and not ln.startswith("#")]
        lines += body[:12] + (["..."] if len(body) > 12 else [])
    return "\n".join(lines)


class ResultsModel(QAbstractTableModel):
    changed = Signal()

    def __init__(self, source: RunSource | None = None, parent=None):
        super().__init__(parent)
        self.source: RunSource = source if source is not None else SessionRuns()
        self._runs: list[Run] = list(self.source.runs())
        self._shown: set[str] = set()
        self._colors: dict[str, QColor] = {}
        self.baseline_id: str | None = None
        for r in self._runs:
            self._color(r.id)

    # --- reading -------------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        return list(self._runs)

    def run(self, run_id: str) -> Run:
        return self._runs[self._row(run_id)]

    def run_at(self, row: int) -> Run:
        return self._runs[row]

    def shown_runs(self) -> list[Run]:
        return [r for r in self._runs if r.id in self._shown]

    def is_shown(self, run_id: str) -> bool:
        return run_id in self._shown

    def baseline(self) -> Run | None:
        return next((r for r in self._runs if r.id == self.baseline_id), None)

    def color(self, run_id: str) -> QColor:
        return self._color(run_id)

    def vs_base(self, run: Run) -> tuple[float, float] | None:
        b = self.baseline()
        if b is not None and b.id == run.id:
            return 0.0, 0.0
        return ppl_ratio_pct(run.result, b.result if b is not None else None)

    # --- changing ------------------------------------------------------------------------------
    def add_result(self, result: RunResult, name: str | None = None, show: bool = True) -> Run:
        """Store a finished run (named recipe + types + weights unless given) and list it.
        The first run of a file as it is becomes the baseline when there is none."""
        name = self._unique(name or result.default_name())
        run = self.source.add(result, name)
        n = len(self._runs)
        self.beginInsertRows(QModelIndex(), n, n)
        self._runs.append(run)
        self.endInsertRows()
        self._color(run.id)
        if show:
            self._shown.add(run.id)
        if self.baseline() is None and result.is_file and result.kind == "ppl":
            self.set_baseline(run.id)
        self.changed.emit()
        return run

    def rename(self, run_id: str, name: str) -> bool:
        name = name.strip()
        if not name:
            return False
        row = self._row(run_id)
        self._runs[row] = self.source.rename(run_id, name)
        self.dataChanged.emit(self.index(row, RCol.NAME), self.index(row, RCol.NAME))
        self.changed.emit()
        return True

    def remove(self, run_id: str) -> None:
        row = self._row(run_id)
        self.source.remove(run_id)
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._runs[row]
        self.endRemoveRows()
        self._shown.discard(run_id)
        if self.baseline_id == run_id:
            self.set_baseline(None)
        self.changed.emit()

    def set_shown(self, run_id: str, shown: bool) -> None:
        (self._shown.add if shown else self._shown.discard)(run_id)
        row = self._row(run_id)
        self.dataChanged.emit(self.index(row, RCol.NAME), self.index(row, RCol.NAME))
        self.changed.emit()

    def set_baseline(self, run_id: str | None) -> None:
        self.baseline_id = run_id
        if self._runs:
            self.dataChanged.emit(self.index(0, RCol.NAME),
                                  self.index(len(self._runs) - 1, RCol.VS_BASE))
        self.changed.emit()

    def reload(self) -> None:
        """Re-read the source (after it changed outside this model)."""
        self.beginResetModel()
        self._runs = list(self.source.runs())
        ids = {r.id for r in self._runs}
        self._shown &= ids
        if self.baseline_id not in ids:
            self.baseline_id = None
        self.endResetModel()
        self.changed.emit()

    # --- Qt model ------------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt API)
        return 0 if parent.isValid() else len(self._runs)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(RCol)

    def flags(self, index):
        if not index.isValid():
            return Qt.NoItemFlags
        f = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if index.column() == RCol.NAME:
            f |= Qt.ItemIsEditable | Qt.ItemIsUserCheckable
        return f

    def data(self, index: QModelIndex, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        run, c = self._runs[index.row()], RCol(index.column())
        if role in (Qt.DisplayRole, Qt.EditRole):
            return run.name if (c == RCol.NAME and role == Qt.EditRole) else self._text(run, c)
        if role == Qt.CheckStateRole and c == RCol.NAME:
            return Qt.Checked if run.id in self._shown else Qt.Unchecked
        if role == Qt.DecorationRole and c == RCol.NAME:
            return self._color(run.id)
        if role == Qt.ToolTipRole:
            return run_tooltip(run)
        if role == RUN_ID_ROLE:
            return run.id
        if role == Qt.TextAlignmentRole and c != RCol.NAME:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        return None

    def setData(self, index, value, role=Qt.EditRole) -> bool:  # noqa: N802
        if not index.isValid() or index.column() != RCol.NAME:
            return False
        run = self._runs[index.row()]
        if role == Qt.EditRole:
            return self.rename(run.id, str(value))
        if role == Qt.CheckStateRole:
            self.set_shown(run.id, Qt.CheckState(value) == Qt.Checked)
            return True
        return False

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if role == Qt.DisplayRole and orientation == Qt.Horizontal and 0 <= section < len(RCol):
            return HEADERS[RCol(section)]
        return None

    # --- helpers -------------------------------------------------------------------------------
    def _text(self, run: Run, c: RCol) -> str:
        r = run.result
        if c == RCol.NAME:
            return run.name + ("  [baseline]" if run.id == self.baseline_id else "")
        if c == RCol.GIB:
            return f"{r.gib:.4f}"
        if c == RCol.BPW:
            return f"{r.bpw:.3f}"
        if c == RCol.PPL:
            return f"{r.ppl:.4f} \u00b1 {r.ppl_err:.4f}" if math.isfinite(r.ppl_err) else \
                f"{r.ppl:.4f}"
        if c == RCol.VS_BASE:
            if run.id == self.baseline_id:
                return "baseline"
            v = self.vs_base(run)
            return "" if v is None else f"{v[0]:+.3f} % \u00b1 {v[1]:.3f}"
        if c == RCol.KLD:
            k = mean_kld(r)
            return "" if k is None else f"{k[0]:.5f} \u00b1 {k[1]:.5f}"
        if c == RCol.CHUNKS:
            return f"{r.n_chunks} \u00d7 {r.n_ctx}"
        return IMPORTANCE_LABELS.get(r.importance, r.importance) or "(file)"

    def _unique(self, name: str) -> str:
        names = {r.name for r in self._runs}
        if name not in names:
            return name
        k = 2
        while f"{name} #{k}" in names:
            k += 1
        return f"{name} #{k}"

    def _row(self, run_id: str) -> int:
        for i, r in enumerate(self._runs):
            if r.id == run_id:
                return i
        raise KeyError(f"no run {run_id!r}")

    def _color(self, run_id: str) -> QColor:
        c = self._colors.get(run_id)
        if c is None:
            c = self._colors[run_id] = QColor(PALETTE[len(self._colors) % len(PALETTE)])
        return c
