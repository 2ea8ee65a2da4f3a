"""The results list as a Qt table model over a RunSource: editable names, which runs are drawn on
the live plot, which one is the baseline, each run's colour. Views redraw on `changed`."""

from __future__ import annotations

import math
import sqlite3
import time
from enum import IntEnum

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from iqk_studio.gui.results import ERROR_KINDS, Ratio, Run, RunSource, mean_kld, ppl_ratio_pct
from iqk_studio.gui.store_source import RunFilter, StoreSource
from iqk_studio.jobs.evaluate import IMPORTANCE_LABELS, RunResult
from iqk_studio.results import StoreError

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
    SOURCE = 8
    WHEN = 9


HEADERS = {RCol.NAME: "run (double-click to rename)", RCol.GIB: "GiB", RCol.BPW: "bpw",
           RCol.PPL: "PPL", RCol.VS_BASE: "PPL vs base", RCol.KLD: "mean KLD",
           RCol.CHUNKS: "chunks \u00d7 n_ctx", RCol.WEIGHTS: "weights", RCol.SOURCE: "engine",
           RCol.WHEN: "when"}
SOURCE_LABELS = {"builtin": "built-in", "external": "external", "imported": "imported log"}


def fmt_pm(v: float, err: float, digits: int = 4) -> str:
    return f"{v:.{digits}f} \u00b1 {err:.{digits}f}" if math.isfinite(err) else f"{v:.{digits}f}"


def run_tooltip(run: Run, ratio: Ratio | None = None) -> str:
    r = run.result
    size = (f"size: {r.gib:.4f} GiB" + (f" ({r.bpw:.3f} bpw)" if r.bpw else "")) if r.gib \
        else "size: unknown"
    lines = [run.name, f"model: {r.model_path or 'not stated'}",
             f"text: {r.text_path or 'not stated'}",
             f"{r.n_chunks} chunks of {r.n_ctx or '?'}" + (f", {r.seconds:.0f} s" if r.seconds
                                                           else ""),
             f"{SOURCE_LABELS.get(run.source, run.source)}: {run.engine or '?'}, {run.status}, "
             f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(run.created))}"
             if run.created else f"{SOURCE_LABELS.get(run.source, run.source)}",
             size, f"PPL = {fmt_pm(r.ppl, r.ppl_err)}"]
    if ratio is not None and ratio.how != "baseline":
        lines.append(f"PPL vs base: {ratio.pct:+.3f} % \u00b1 {ratio.err:.3f} "
                     f"({ERROR_KINDS[ratio.how]})")
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

    message = Signal(str)  # a problem with the store, for the status bar

    def __init__(self, source: RunSource | None = None, parent=None):
        super().__init__(parent)
        self.source: RunSource = source if source is not None else StoreSource.in_memory()
        self._runs: list[Run] = list(self.source.runs())
        self._signature = self._sig()
        self._shown: set[str] = set()
        self._colors: dict[str, QColor] = {}
        self.baseline_id: str | None = None
        for r in self._runs:
            self._color(r.id)
        self._adopt_baseline()

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

    def vs_base(self, run: Run) -> Ratio | None:
        b = self.baseline()
        if b is not None and b.id == run.id:
            return Ratio(0.0, 0.0, "baseline")
        return ppl_ratio_pct(run.result, b.result if b is not None else None)

    # --- changing ------------------------------------------------------------------------------
    def add_result(self, result: RunResult, name: str | None = None, show: bool = True,
                   recorded_id: str | None = None) -> Run:
        """Store a finished run (named recipe + types + weights unless given) and list it; a run
        recorded as it ran (recorded_id) replaces its row. The first run of a file as it is
        becomes the baseline when there is none."""
        name = self._unique(name or result.default_name(), recorded_id)
        run = self.source.add(result, name, recorded_id)
        self._put(run)
        if getattr(self.source, "warning", ""):
            self.message.emit(self.source.warning)
        if show:
            self._shown.add(run.id)
        if self.baseline() is None and result.is_file and result.kind == "ppl":
            self.set_baseline(run.id)
        self.changed.emit()
        return run

    def add_imported(self, log, name: str = "", source_path: str | None = None,
                     size_bytes: int | None = None, show: bool = True) -> Run:
        """A published log (or a third-party point) into the source and the list."""
        run = self.source.add_imported(log, self._unique(name) if name else "", source_path,
                                       size_bytes)
        self._put(run)
        if show:
            self._shown.add(run.id)
        self.changed.emit()
        return run

    def _adopt_baseline(self) -> None:
        """With no baseline, the newest finished perplexity run of a file as it is becomes it
        (runs of earlier sessions or of the CLI would otherwise stay off the chart)."""
        if self.baseline() is not None:
            return
        for r in sorted(self._runs, key=lambda r: r.created, reverse=True):
            if r.status == "finished" and r.result.is_file and r.result.kind == "ppl":
                self.set_baseline(r.id)
                return

    def _put(self, run: Run) -> None:
        """List a run: replace its row when listed, else append it."""
        self._signature = None  # the next refresh compares runs, not an old signature
        for i, r in enumerate(self._runs):
            if r.id == run.id:
                self._runs[i] = run
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(RCol) - 1))
                return
        n = len(self._runs)
        self.beginInsertRows(QModelIndex(), n, n)
        self._runs.append(run)
        self.endInsertRows()
        self._color(run.id)

    def refresh(self) -> bool:
        """Re-read the source when it changed (runs of the CLI, a run recording, a filter):
        rows updated in place and new ones appended when the order allows, else a reset.
        Returns whether anything changed."""
        try:
            sig = self._sig()
            if sig == self._signature:
                return False
            runs = list(self.source.runs())
        except (StoreError, sqlite3.Error) as e:
            self.message.emit(str(e))
            return False
        self._signature = sig
        old = [r.id for r in self._runs]
        if [r.id for r in runs[:len(old)]] != old:
            self._reset(runs)
            return True
        for i, run in enumerate(runs[:len(old)]):
            if run is not self._runs[i]:  # the source caches unchanged runs
                self._runs[i] = run
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(RCol) - 1))
        if len(runs) > len(old):
            self.beginInsertRows(QModelIndex(), len(old), len(runs) - 1)
            self._runs.extend(runs[len(old):])
            self.endInsertRows()
            for r in runs[len(old):]:
                self._color(r.id)
        self._adopt_baseline()
        self.changed.emit()
        return True

    def set_filter(self, **changes) -> None:
        """Change the source's RunFilter (kinds, model_id, model_name, this_model)."""
        from dataclasses import replace

        f = getattr(self.source, "filter", None)
        if f is None:
            return
        self.source.filter = replace(f, **changes)
        self.refresh()

    @property
    def filter(self) -> RunFilter | None:
        return getattr(self.source, "filter", None)

    def _sig(self):
        sig = getattr(self.source, "signature", None)
        return sig() if sig is not None else None

    def rename(self, run_id: str, name: str) -> bool:
        name = name.strip()
        if not name:
            return False
        row = self._row(run_id)
        try:
            self._runs[row] = self.source.rename(run_id, name)
        except (StoreError, sqlite3.Error) as e:
            self.message.emit(f"cannot rename: {e}")
            return False
        self.dataChanged.emit(self.index(row, RCol.NAME), self.index(row, RCol.NAME))
        self.changed.emit()
        return True

    def remove(self, run_id: str) -> bool:
        row = self._row(run_id)
        try:
            self.source.remove(run_id)
        except (StoreError, sqlite3.Error) as e:
            self.message.emit(f"cannot delete: {e}")
            return False
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._runs[row]
        self.endRemoveRows()
        self._shown.discard(run_id)
        if self.baseline_id == run_id:
            self.set_baseline(None)
        self.changed.emit()
        return True

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
        self._reset(list(self.source.runs()))
        self._signature = self._sig()

    def _reset(self, runs: list[Run]) -> None:
        self.beginResetModel()
        self._runs = runs
        for r in runs:
            self._color(r.id)
        self.endResetModel()
        self._adopt_baseline()
        self.changed.emit()

    def state(self) -> dict:
        """Which runs are drawn and the baseline (kept in QSettings for a persistent store)."""
        return {"shown": sorted(self._shown), "baseline": self.baseline_id or ""}

    def restore_state(self, st: dict) -> None:
        ids = {r.id for r in self._runs}
        self._shown = {str(i) for i in st.get("shown") or () if str(i) in ids}
        b = str(st.get("baseline") or "")
        self.set_baseline(b if b in ids else None)
        self._adopt_baseline()

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
            return run_tooltip(run, self.vs_base(run))
        if role == Qt.ForegroundRole and not run.complete:
            return QColor("#777")
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
            return f"{r.gib:.4f}" if r.total_bytes else "?"
        if c == RCol.BPW:
            return f"{r.bpw:.3f}" if r.bpw else ""
        if c == RCol.PPL:
            return fmt_pm(r.ppl, r.ppl_err) if math.isfinite(r.ppl) else ""
        if c == RCol.VS_BASE:
            if run.id == self.baseline_id:
                return "baseline"
            v = self.vs_base(run)
            return "" if v is None else f"{v.pct:+.3f} % \u00b1 {v.err:.3f}"
        if c == RCol.KLD:
            k = mean_kld(r)
            return "" if k is None else f"{k[0]:.5f} \u00b1 {k[1]:.5f}"
        if c == RCol.CHUNKS:
            done = f"{r.n_chunks}" if run.complete or not run.requested else \
                f"{r.n_chunks}/{run.requested}"
            tail = "" if run.complete else f" ({run.status})"
            return f"{done} \u00d7 {r.n_ctx or '?'}{tail}"
        if c == RCol.SOURCE:
            return run.engine if run.source != "imported" else "log"
        if c == RCol.WHEN:
            return time.strftime("%m-%d %H:%M", time.localtime(run.created)) if run.created \
                else ""
        if run.source == "imported":
            return ""
        return IMPORTANCE_LABELS.get(r.importance, r.importance) or (
            "(file)" if r.is_file else "?")

    def _unique(self, name: str, own_id: str | None = None) -> str:
        names = {r.name for r in self._runs if r.id != own_id}
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
