"""The Grids tab: the study's value-grid plot; for the selected tensor, its block-normalized weights
with the grid values overlaid, the error of every type, the importance modes compared as
quantization error, and the iq4k variant / fp4 fit statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.grid_plot import STUDY, GridPlot
from iqk_studio.gui.grid_stats_view import GridStatsView
from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.compare_importance import ModeError, importance_modes, tensor_mode_errors
from iqk_studio.jobs.type_errors import TypeScore, default_types, sample_rows, type_errors
from iqk_studio.quant.ref_grids import block_normalized, comparison_grids

AXIS_W = 150  # both tensor plots get this left-axis width, so their linked x axes line up
X_RANGE = (-1.05, 1.05)


class GridsView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.grids = comparison_grids()
        self.grid_plot = GridPlot()
        self.stats_view = GridStatsView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.grid_plot, "Value grids")
        self.tabs.addTab(self._tensor_tab(), "Tensor")
        self.tabs.addTab(self.stats_view, "iq4k variants && fp4 fit")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)
        self.model = None
        self._sample: np.ndarray | None = None
        self._name = ""
        self.imatrices: list[tuple[str, object]] = []  # (file name, Imatrix)
        self.redraw()

    def _tensor_tab(self) -> QWidget:
        self.list = QListWidget()
        for name in self.grids:
            it = QListWidgetItem(name)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked if name in STUDY[:2] + ("e2m1", "nf4") else Qt.Unchecked)
            self.list.addItem(it)
        self.list.itemChanged.connect(lambda _: self.redraw())
        self.hist = pg.PlotWidget(title="weights / max|w| of their 32-block")
        self.hist.setLabel("left", "density")
        self.hist_legend = self.hist.addLegend(offset=(-10, 10))
        self.dots = pg.PlotWidget(title="grid values scaled to max |v| = 1")
        self.dots.setXLink(self.hist)
        self.dots.setLabel("bottom", "value / max |value| of the block")
        for p in (self.hist, self.dots):
            p.getAxis("left").setWidth(AXIS_W)
            p.setXRange(*X_RANGE, padding=0)
            p.getPlotItem().vb.setMouseEnabled(x=True, y=False)
        self.caption = QLabel("select a tensor in the Tensors tab")
        self.caption.setWordWrap(True)
        self.errors = QTreeWidget()
        self.errors.setHeaderLabels(["type", "bpw", "rmse / rms", "weighted"])
        self.errors.setSortingEnabled(True)
        self.errors.setRootIsDecorated(False)
        self.measure = QPushButton("Measure error of every type on this tensor")
        self.measure.clicked.connect(self.measure_errors)
        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(lambda m: self.caption.setText(f"measurement failed: {m}"))
        self.runner.done.connect(lambda _: self._set_busy(False))

        self.mode_type = QComboBox()
        self.mode_type.addItems(default_types())
        self.mode_type.setCurrentText("iq4_ks")
        add_im = QPushButton("Add imatrix...")
        add_im.clicked.connect(self.add_imatrix_dialog)
        self.compare = QPushButton("Compare importance modes")
        self.compare.setToolTip("each imatrix, no imatrix (default weights), w = 1: the error of "
                                "the chosen type on this tensor's sample")
        self.compare.clicked.connect(self.compare_modes)
        self.modes = QTreeWidget()
        self.modes.setRootIsDecorated(False)
        self.modes.setHeaderLabels(["importance", "rmse / rms", "imatrix-weighted"])

        plots = QWidget()
        pl = QVBoxLayout(plots)
        pl.addWidget(self.caption)
        pl.addWidget(self.hist, 3)
        pl.addWidget(self.dots, 2)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.addWidget(QLabel("grids overlaid"))
        sl.addWidget(self.list, 2)
        sl.addWidget(self.measure)
        sl.addWidget(self.errors, 3)
        row = QHBoxLayout()
        row.addWidget(self.mode_type)
        row.addWidget(add_im)
        sl.addLayout(row)
        sl.addWidget(self.compare)
        sl.addWidget(self.modes, 2)
        split = QSplitter()
        split.addWidget(plots)
        split.addWidget(side)
        split.setSizes([800, 340])
        return split

    # --- tensor ---------------------------------------------------------------------------
    def set_tensor(self, model, name: str) -> None:
        """Show the distribution of (a sample of) one tensor's weights and its statistics."""
        self.model = model
        try:
            self._sample = sample_rows(model, name)
        except (ValueError, KeyError) as e:
            self._sample, self._name = None, ""
            self.caption.setText(f"{name}: {e}")
            self.redraw()
            self.stats_view.set_tensor(model, name, None)
            return
        self._name = name
        if not np.any(self._sample):
            self.caption.setText(f"{name}: all {self._sample.size:,} sampled weights are zero "
                                 "\u2014 no distribution to show")
        else:
            self.caption.setText(f"{name}: {self._sample.size:,} weights sampled")
        self.errors.clear()
        self.modes.clear()
        self.redraw()
        self.stats_view.set_tensor(model, name, self._sample)

    def checked(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.Checked]

    def _build_items(self) -> None:
        """Plot items are made once and updated with setData/setVisible: removing items from a
        pyqtgraph plot (clear/removeItem) over-releases `True` under PySide6 6.12 with Python 3.11
        and crashes the interpreter at exit."""
        self._hist_curve = self.hist.plot([0.0, 0.0], [0.0], stepMode="center", fillLevel=0,
                                          brush=(100, 100, 200, 80))
        self._grid_items = {}
        for name in self.grids:
            color = self.grid_plot.colors[name]
            lines = self.hist.plot([], [], connect="pairs",
                                   pen=pg.mkPen(color, width=1.5, style=Qt.DashLine))
            dots = self.dots.plot([], [], pen=None, symbol="o", symbolSize=7,
                                  symbolBrush=color, symbolPen=None)
            self._grid_items[name] = (lines, dots)

    def redraw(self) -> None:
        if not hasattr(self, "_grid_items"):
            self._build_items()
        top = 1.0
        v = block_normalized(self._sample, 32) if self._sample is not None else np.zeros(0)
        if v.size:
            y, x = np.histogram(v, bins=201, range=(-1.0, 1.0), density=True)
            self._hist_curve.setData(x, y)
            top = float(y.max())
        else:  # nothing sampled, or every block zero: an empty plot on the usual axes
            self._hist_curve.setData([0.0, 0.0], [0.0])
        self.hist.setYRange(0, top, padding=0.05)
        on = self.checked()
        ticks = []
        self.hist_legend.clear()
        for name, (lines, dots) in self._grid_items.items():
            visible = name in on
            lines.setVisible(visible)
            dots.setVisible(visible)
            if not visible:
                continue
            i = on.index(name)
            vals = self.grids[name]
            lines.setData(np.repeat(vals, 2), np.tile([0.0, top], vals.size))
            dots.setData(vals, np.full(vals.shape, float(i)))
            ticks.append((float(i), name))
            self.hist_legend.addItem(lines, name)
        self.dots.getAxis("left").setTicks([ticks])
        self.dots.setYRange(-0.5, max(len(on) - 0.5, 0.5), padding=0)
        self.hist.setXRange(*X_RANGE, padding=0)

    # --- jobs -----------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.measure.setEnabled(not busy)
        self.compare.setEnabled(not busy)

    def measure_errors(self) -> None:
        if self._sample is None or self.runner.busy:
            return
        self.errors.clear()
        self._set_busy(True)
        sample = self._sample
        self.runner.start(lambda: type_errors(sample))

    def add_imatrix(self, path) -> None:
        from iqk_studio.gguf.imatrix import load_imatrix

        self.imatrices.append((Path(path).name, load_imatrix(path)))

    def add_imatrix_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add an imatrix", "",
                                              "imatrix (*.dat *.gguf);;All (*)")
        if path:
            try:
                self.add_imatrix(path)
            except (OSError, ValueError) as e:
                QMessageBox.critical(self, "Cannot read imatrix", str(e))

    def compare_modes(self) -> None:
        if self._sample is None or self.runner.busy:
            return
        self.modes.clear()
        self._set_busy(True)
        model, name, sample = self.model, self._name, self._sample
        qtype, modes = self.mode_type.currentText(), importance_modes(self.imatrices)
        self.runner.start(lambda: tensor_mode_errors(model, name, qtype, modes, sample))

    def _on_event(self, ev) -> None:
        if isinstance(ev, TypeScore):
            if ev.note:
                it = QTreeWidgetItem([ev.qtype, f"{ev.bpw:.3f}", "-", "-"])
                it.setToolTip(0, ev.note)
                it.setToolTip(2, ev.note)
            else:
                it = QTreeWidgetItem([ev.qtype, f"{ev.bpw:.3f}", f"{ev.rel_rmse:.5f}",
                                      f"{ev.weighted_rel_rmse:.5f}"])
            self.errors.addTopLevelItem(it)
        elif isinstance(ev, ModeError):
            fmt = lambda v: "-" if v != v else f"{v:.5f}"  # noqa: E731 - nan -> "-"
            it = QTreeWidgetItem([ev.label, fmt(ev.rel_rmse), fmt(ev.weighted_rel_rmse)])
            if ev.note:
                for c in range(3):
                    it.setToolTip(c, ev.note)
            self.modes.addTopLevelItem(it)
