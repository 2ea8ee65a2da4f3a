"""The study's value-grid plot (ik_llama.cpp discussion #359): index on x, value / max |value| on
y, the linear mapping as a thick line; a toggle per grid, hover read-out, legend, PNG/SVG/CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.quant.grids import curves, iq4k_variants

STUDY = ("iq4k", "iq4k shifted", "iq4k mirrored", "iq4k shifted mirrored", "nf4", "fe1m2")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#843c39",
          "#7b4173", "#009e73", "#e6550d", "#31a354", "#756bb1", "#636363"]
HOVER_PX = 12  # a point within this many pixels of the mouse is read out


def x_positions(n: int) -> np.ndarray:
    """Index positions on the 0-15 axis: 16-value grids at their index, others spread evenly."""
    return np.arange(n, dtype=np.float64) * (15.0 / (n - 1)) if n > 1 else np.zeros(1)


class GridPlot(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.curves = curves()
        self.colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(self.curves)}
        self.list = QListWidget()
        self.list.setMinimumWidth(190)
        for name in self.curves:
            it = QListWidgetItem(name)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked if name in STUDY else Qt.Unchecked)
            pm = QPixmap(12, 12)
            pm.fill(QColor(self.colors[name]))
            it.setIcon(pm)
            self.list.addItem(it)
        self.plot = pg.PlotWidget(background="w")
        pi = self.plot.getPlotItem()
        pi.setTitle("value grids scaled to max |value| = 1", color="k")
        pi.setLabel("bottom", "index (grids of other sizes than 16 spread over 0-15)")
        pi.setLabel("left", "value / max |value|")
        pi.showGrid(x=True, y=True, alpha=0.25)
        self.plot.setXRange(-0.5, 15.5, padding=0)
        self.plot.setYRange(-1.08, 1.08, padding=0)
        self.legend = pi.addLegend(offset=(10, 10), labelTextColor="k")
        self.linear = self.plot.plot([0, 15], [-1, 1], pen=pg.mkPen("k", width=4), name="linear")
        self.items = {}
        for name in self.curves:
            c = self.colors[name]
            self.items[name] = self.plot.plot(
                [], [], pen=pg.mkPen(c, width=1.5), symbol="o", symbolSize=6, symbolBrush=c,
                symbolPen=None, name=name)
        self.readout = QLabel("hover a point for its value")
        self.marker = pg.TextItem("", color="k", anchor=(0, 1))
        self.plot.addItem(self.marker)
        self.plot.scene().sigMouseMoved.connect(self._mouse_moved)
        self.list.itemChanged.connect(lambda _: self.redraw())

        buttons = QHBoxLayout()
        for text, kind in (("Export PNG...", "png"), ("Export SVG...", "svg"),
                           ("Export CSV...", "csv")):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, k=kind: self.export_dialog(k))
            buttons.addWidget(b)
        buttons.addStretch(1)
        left = QVBoxLayout()
        left.addWidget(self.plot, 1)
        left.addWidget(self.readout)
        left.addLayout(buttons)
        side = QVBoxLayout()
        side.addWidget(QLabel("grids"))
        side.addWidget(self.list, 1)
        lay = QHBoxLayout(self)
        lay.addLayout(left, 4)
        lay.addLayout(side, 1)
        self.redraw()

    def checked(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.Checked]

    def set_checked(self, names) -> None:
        names = set(names)
        self.list.blockSignals(True)
        for i in range(self.list.count()):
            it = self.list.item(i)
            it.setCheckState(Qt.Checked if it.text() in names else Qt.Unchecked)
        self.list.blockSignals(False)
        self.redraw()

    def redraw(self) -> None:
        on = self.checked()
        self.legend.clear()
        self.legend.addItem(self.linear, "linear")
        for name, item in self.items.items():
            y = self.curves[name]
            if name in on:
                item.setData(x_positions(len(y)), y)
                item.setVisible(True)
                self.legend.addItem(item, name)
            else:
                item.setVisible(False)
        self.marker.setText("")

    # --- hover ---------------------------------------------------------------------------
    def nearest(self, x: float, y: float, px: float = HOVER_PX) -> tuple[str, int] | None:
        """(grid, index) of the visible point nearest to the data position (x, y), if within
        `px` pixels."""
        vb = self.plot.getPlotItem().vb
        (x0, x1), (y0, y1) = vb.viewRange()
        w, h = max(vb.width(), 1.0), max(vb.height(), 1.0)
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        best, where = px * px, None
        for name in self.checked():
            v = self.curves[name]
            d2 = ((x_positions(len(v)) - x) * sx) ** 2 + ((v - y) * sy) ** 2
            i = int(np.argmin(d2))
            if d2[i] <= best:
                best, where = d2[i], (name, i)
        return where

    def readout_text(self, name: str, i: int) -> str:
        v = self.curves[name][i]
        raw = iq4k_variants().get(name)
        extra = f" (integer {int(np.sort(raw)[i])})" if raw is not None else ""
        return f"{name}: index {i} of {len(self.curves[name])}, value {v:+.4f}{extra}"

    def _mouse_moved(self, pos) -> None:
        vb = self.plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(pos):
            return
        p = vb.mapSceneToView(pos)
        hit = self.nearest(p.x(), p.y())
        if hit is None:
            self.marker.setText("")
            return
        name, i = hit
        text = self.readout_text(name, i)
        self.readout.setText(text)
        self.marker.setText(f"{name} [{i}] {self.curves[name][i]:+.3f}")
        self.marker.setPos(x_positions(len(self.curves[name]))[i], self.curves[name][i])

    # --- export ---------------------------------------------------------------------------
    def export_dialog(self, kind: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}", f"grids.{kind}",
                                              f"{kind.upper()} (*.{kind})")
        if not path:
            return
        try:
            {"png": self.export_png, "svg": self.export_svg, "csv": self.export_csv}[kind](path)
        except OSError as e:
            QMessageBox.critical(self, "Cannot export", str(e))

    def export_png(self, path) -> Path:
        from pyqtgraph.exporters import ImageExporter

        ImageExporter(self.plot.getPlotItem()).export(str(path))
        return Path(path)

    def export_svg(self, path) -> Path:
        """Vector output through Qt's SVG generator (pyqtgraph's SVG exporter fails on Qt 6's
        path data)."""
        from PySide6.QtSvg import QSvgGenerator

        rect = self.plot.getPlotItem().sceneBoundingRect()
        gen = QSvgGenerator()
        gen.setFileName(str(path))
        gen.setSize(QSize(int(rect.width()), int(rect.height())))
        gen.setViewBox(QRectF(0, 0, rect.width(), rect.height()))
        gen.setTitle("iqk-studio value grids")
        p = QPainter(gen)
        try:
            self.plot.scene().render(p, QRectF(0, 0, rect.width(), rect.height()), rect)
        finally:
            p.end()
        if not Path(path).is_file():
            raise OSError(f"{path}: could not be written")
        return Path(path)

    def export_csv(self, path) -> Path:
        """grid, index, x, value / max|value| of every checked grid (temp file + rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["grid", "index", "x", "value_over_max_abs"])
            for name in self.checked():
                y = self.curves[name]
                for i, (x, v) in enumerate(zip(x_positions(len(y)), y)):
                    w.writerow([name, i, f"{x:.6g}", repr(float(v))])
        tmp.replace(path)
        return path
