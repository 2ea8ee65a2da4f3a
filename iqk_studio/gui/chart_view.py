"""Size vs quality: every run of the results list as a point (x = GiB, y = PPL(Q)/PPL(base) - 1
in %, mean KLD, or PPL), with error bars and the Pareto front; hover shows the run, a click opens
its recipe; PNG / SVG / CSV export."""

from __future__ import annotations

import csv
import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.results import ERROR_KINDS, mean_kld, pareto_front, published_points_for
from iqk_studio.gui.results_model import ResultsModel
from iqk_studio.jobs.evaluate import IMPORTANCE_LABELS

Y_MODES = (("ratio", "PPL(Q)/PPL(base) \u2212 1  (%)"), ("kld", "mean KLD"), ("ppl", "PPL"))
CSV_FIELDS = ("id", "name", "kind", "model", "recipe_name", "types", "weights", "text", "n_ctx",
              "n_chunks", "total_bytes", "gib", "bpw", "ppl", "ppl_err", "ppl_vs_base_pct",
              "ppl_vs_base_err_pct", "ppl_vs_base_err_kind", "kld", "kld_err", "same_top",
              "base_model", "recipe", "engine", "status")


def _check_written(path) -> None:
    import os

    if not os.path.isfile(path) or not os.path.getsize(path):
        raise OSError(f"cannot write {path}")


def _stack(labels) -> list[int]:
    """For each label, how many earlier labels sit at about the same place (1 % of the x span,
    2 % of the y span): that many lines up."""
    if not labels:
        return []
    xs = [lb[2] for lb in labels]
    ys = [lb[3] for lb in labels]
    dx = max(max(xs) - min(xs), 1e-9) * 0.01
    dy = max(max(ys) - min(ys), 1e-9) * 0.02
    out = []
    for i, (_, _, x, y) in enumerate(labels):
        out.append(sum(abs(x - labels[j][2]) <= dx and abs(y - labels[j][3]) <= dy
                       for j in range(i)))
    return out


class ChartView(QWidget):
    open_run = Signal(object)  # Run whose point was clicked

    def __init__(self, results: ResultsModel, parent=None):
        super().__init__(parent)
        self.results = results
        self.y_mode = QComboBox()
        for key, label in Y_MODES:
            self.y_mode.addItem(label, key)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "model size (GiB)")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        for ax in ("bottom", "left"):
            self.plot.getAxis(ax).enableAutoSIPrefix(False)
        self._zero = pg.InfiniteLine(pos=0.0, angle=0, pen=pg.mkPen((120, 120, 120),
                                                                    style=Qt.DashLine))
        self.plot.addItem(self._zero)
        self._front = self.plot.plot([], [], pen=pg.mkPen((60, 160, 60), width=2,
                                                          style=Qt.DashLine))
        self._bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), height=np.zeros(0),
                                     beam=0.0, pen=pg.mkPen((90, 90, 90)))
        self.plot.addItem(self._bars)
        self.scatter = pg.ScatterPlotItem(hoverable=True, tip=self._tip, size=11,
                                          hoverSize=15, pen=pg.mkPen("w"))
        self.plot.addItem(self.scatter)
        # published points of library recipes: hollow squares, not runs (no curve, no recipe run)
        self.published = pg.ScatterPlotItem(hoverable=True, tip=self._published_tip, size=10,
                                            symbol="s", brush=None,
                                            pen=pg.mkPen((120, 60, 0), width=2))
        self.plot.addItem(self.published)
        self.show_published = QCheckBox("published")
        self.show_published.setChecked(True)
        self.show_published.setToolTip("the published size and PPL of the library recipes "
                                       "written for this model (their @note published: lines)")
        self._published_pts: list = []
        self.set_model(None)
        self._labels: list[pg.TextItem] = []  # a pool: reused, never removed
        self.note = QLabel("")
        self.note.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("y"))
        top.addWidget(self.y_mode, 1)
        top.addWidget(self.show_published)
        for text, slot in (("PNG...", lambda: self._export_dialog("png")),
                           ("SVG...", lambda: self._export_dialog("svg")),
                           ("CSV...", lambda: self._export_dialog("csv"))):
            b = QPushButton(text)
            b.setToolTip(f"export the chart (or, for CSV, every run) as {text[:3]}")
            b.clicked.connect(slot)
            top.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.note)
        self.scatter.sigClicked.connect(self._clicked)
        self.y_mode.currentIndexChanged.connect(self.redraw)
        self.show_published.toggled.connect(self.redraw)
        results.changed.connect(self.redraw)
        self.shown: list = []  # (run, x, y, err) as drawn
        self.redraw()

    # --- data ----------------------------------------------------------------------------------
    def mode(self) -> str:
        return self.y_mode.currentData()

    def points(self) -> tuple[list, dict[str, list[str]]]:
        """(run, x GiB, y, err) of the runs the mode can place, and the names of the others by
        why they are left out; self.error_kinds: how each ratio's error was obtained."""
        mode, out = self.mode(), []
        left: dict[str, list[str]] = {}
        self.error_kinds: dict[str, list[str]] = {}
        for run in self.results.runs():
            r = run.result
            if not run.complete:
                left.setdefault("not finished", []).append(run.name)
                continue
            if not r.total_bytes:
                left.setdefault("size unknown", []).append(run.name)
                continue
            if mode == "ratio":
                v = self.results.vs_base(run)
                if v is not None:
                    self.error_kinds.setdefault(v.how, []).append(run.name)
            elif mode == "kld":
                v = mean_kld(r)
            else:
                v = (r.ppl, r.ppl_err) if math.isfinite(r.ppl) else None
            if v is None:
                left.setdefault(self.WHY[mode], []).append(run.name)
            else:
                out.append((run, r.gib, v[0], v[1] if math.isfinite(v[1]) else 0.0))
        return out, left

    WHY = {"ratio": "no baseline with the same text, n_ctx and chunks (select one in the "
                    "Evaluate tab's list and press 'Baseline', or run KLD)",
           "kld": "not KLD runs", "ppl": "no PPL"}

    def set_model(self, metadata: dict | None) -> None:
        """Published points follow the open model (the toggle is disabled when the library has
        none for it)."""
        pts = published_points_for(metadata)
        self._published_pts = pts
        self.show_published.setEnabled(bool(pts))
        if hasattr(self, "shown"):
            self.redraw()

    def published_points(self) -> list[tuple[object, float, float]]:
        """(point, GiB, y) of the published points the mode can place."""
        if not self.show_published.isChecked():
            return []
        out, mode = [], self.mode()
        for p in self._published_pts:
            y = (100 * p.quality_loss if p.quality_loss is not None else None) if mode == \
                "ratio" else p.ppl if mode == "ppl" else None
            if y is not None:
                out.append((p, p.size_gib, y))
        return out

    def _published_tip(self, x, y, data) -> str:
        p = data
        lines = [f"{p.label} (published)", f"model: {p.model or '?'}", f"size: {p.size_gib} GiB"]
        if p.ppl is not None:
            lines.append(f"PPL {p.ppl}" + (f", base PPL {p.base_ppl}" if p.base_ppl else ""))
        return "\n".join(lines + ([f"text: {p.text}"] if p.text else []) +
                         ([p.source] if p.source else []))

    # --- drawing -------------------------------------------------------------------------------
    def redraw(self) -> None:
        pts, left = self.points()
        self.shown = pts
        mode = self.mode()
        self.plot.setLabel("left", dict(Y_MODES)[mode])
        self._zero.setVisible(mode != "ppl" and bool(pts))
        base_id = self.results.baseline_id
        spots = [{"pos": (x, y), "data": run.id, "brush": self.results.color(run.id),
                  "symbol": "d" if run.id == base_id else "o",
                  "size": 15 if run.id == base_id else 11} for run, x, y, _ in pts]
        self.scatter.setData(spots=spots)
        x = np.array([p[1] for p in pts], dtype=float)
        y = np.array([p[2] for p in pts], dtype=float)
        err = np.array([p[3] for p in pts], dtype=float)
        self._bars.setData(x=x, y=y, height=2 * err)
        pub = self.published_points()
        self.published.setData(spots=[{"pos": (px, py), "data": p} for p, px, py in pub])
        self._published_shown = pub
        front = pareto_front(list(x), list(y))
        self._front.setData(x[front], y[front]) if len(front) > 1 else self._front.setData([], [])
        labels = [(run.name, self.results.color(run.id), px, py) for run, px, py, _ in pts] + [
            (p.label, QColor(120, 60, 0), px, py) for p, px, py in pub]
        while len(self._labels) < len(labels):
            item = pg.TextItem(anchor=(0, 1))
            self.plot.addItem(item)
            self._labels.append(item)
        for item, (name, color, px, py), k in zip(self._labels, labels, _stack(labels)):
            item.setText(name if len(name) <= 30 else name[:13] + "\u2026" + name[-16:],
                         color=color)  # the end tells runs of one file apart: kept
            item.setAnchor((0, 1 + k))  # points at (almost) the same place: labels stacked
            item.setPos(px, py)
            item.setVisible(True)
        for item in self._labels[len(labels):]:
            item.setVisible(False)
        self._ranges(np.concatenate([x, [p[1] for p in pub]]),
                     np.concatenate([y, [p[2] for p in pub]]),
                     np.concatenate([err, np.zeros(len(pub))]))
        notes = [f"{len(names)} run(s) not shown: {why}" for why, names in left.items()]
        if not pts and not pub:
            notes.append("no finished runs yet: evaluate in the Evaluate tab, or import a log")
        if pub:
            notes.append(f"{len(pub)} published point(s) of library recipes (hollow squares)")
        elif mode == "ratio":
            kinds = [f"{ERROR_KINDS[how]}: {len(names)}" for how, names in
                     self.error_kinds.items() if how != "baseline"]
            if kinds:
                notes.append("error bars (1σ) — " + "; ".join(kinds))
            if any(not run.result.text_path and run.result.kind == "ppl" and run.id != base_id
                   for run, *_ in pts):
                notes.append("logs that name no text are taken to be on the baseline's text "
                             "when n_ctx and chunks agree")
        self.note.setText("\n".join(notes))
        self.note.setToolTip("\n".join(f"{why}: {', '.join(names)}" for why, names in
                                       list(left.items()) + [
                                           (ERROR_KINDS[h], n) for h, n in
                                           getattr(self, "error_kinds", {}).items()]))

    def _ranges(self, x, y, err) -> None:
        """A sane x axis: at least 2 % of the largest size wide, never a sub-MiB sliver."""
        if not x.size:
            return
        lo, hi = float(x.min()), float(x.max())
        span = max(hi - lo, 0.02 * hi, 1e-3)
        mid = (lo + hi) / 2
        self.plot.setXRange(mid - 0.75 * span, mid + span, padding=0)  # room for labels
        ylo, yhi = float((y - err).min()), float((y + err).max())
        if self.mode() != "ppl":
            ylo, yhi = min(ylo, 0.0), max(yhi, 0.0)
        yspan = max(yhi - ylo, 1e-6 + 0.02 * abs(yhi))
        self.plot.setYRange(ylo - 0.1 * yspan, yhi + 0.15 * yspan, padding=0)

    def _tip(self, x, y, data) -> str:
        try:
            run = self.results.run(data)
        except KeyError:
            return ""
        from iqk_studio.gui.results_model import run_tooltip

        tip = run_tooltip(run, self.results.vs_base(run))
        return tip + ("\n(click: open this recipe)" if run.result.recipe_text else "")

    def _clicked(self, _item, points, *_):
        if len(points):
            try:
                self.open_run.emit(self.results.run(points[0].data()))
            except KeyError:
                pass

    # --- export --------------------------------------------------------------------------------
    def export(self, path: str, kind: str) -> None:
        """kind: png / svg (the chart as drawn) or csv (every run with its settings)."""
        if kind == "csv":
            return self.save_csv(path)
        if kind == "png":
            from pyqtgraph import exporters

            exp = exporters.ImageExporter(self.plot.plotItem)
            exp.parameters()["width"] = max(int(self.plot.width()), 800)
            exp.export(str(path))
            return _check_written(path)
        # pyqtgraph 0.14's SVGExporter fails on the closed paths Qt 6 writes (pyqtgraph#3495):
        # render the plot through Qt's own SVG generator instead (vector output)
        from PySide6.QtGui import QPainter
        from PySide6.QtSvg import QSvgGenerator

        gen = QSvgGenerator()
        gen.setFileName(str(path))
        gen.setSize(self.plot.size())
        gen.setViewBox(self.plot.rect())
        gen.setTitle("iqk-studio: size vs quality")
        painter = QPainter(gen)
        try:
            self.plot.render(painter)
        finally:
            painter.end()
        return _check_written(path)

    def save_csv(self, path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_FIELDS)
            for run in self.results.runs():
                r = run.result
                v = tuple(self.results.vs_base(run) or ("", "", ""))
                w.writerow([run.id, run.name, r.kind, r.model_path, r.recipe_name, r.types,
                            IMPORTANCE_LABELS.get(r.importance, r.importance), r.text_path,
                            r.n_ctx, r.n_chunks, r.total_bytes, f"{r.gib:.6f}", f"{r.bpw:.4f}",
                            r.ppl, r.ppl_err, *v, *(("", "") if r.kind != "kld" else
                                                    (r.kld, r.kld_err)),
                            "" if r.kind != "kld" else r.same_top, r.base_path, r.recipe_text,
                            run.engine, run.status])

    def _export_dialog(self, kind: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}",
                                              f"size-vs-quality.{kind}",
                                              f"{kind.upper()} (*.{kind})")
        if path:
            try:
                self.export(path, kind)
            except OSError as e:
                QMessageBox.critical(self, "Cannot export", str(e))
