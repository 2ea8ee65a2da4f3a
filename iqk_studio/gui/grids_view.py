"""Value grids of the quant types next to the block-normalized weight distribution of a tensor,
and the quantization error of every type we can quantize, measured on that tensor."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.type_errors import TypeScore, sample_rows, type_errors
from iqk_studio.quant.ref_grids import block_normalized, comparison_grids, normalized

DEFAULT_ON = ("iq4k_values base", "iq4k_values shifted", "iq4k base (mirrored)",
              "iq4k shifted (mirrored)", "nf4", "fe1m2")
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


class GridsView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.grids = comparison_grids()
        self.list = QListWidget()
        for name in self.grids:
            it = QListWidgetItem(name)
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked if name in DEFAULT_ON else Qt.Unchecked)
            self.list.addItem(it)
        self.list.itemChanged.connect(lambda _: self.redraw())
        self.hist = pg.PlotWidget(title="weights / max|w| of their 32-block")
        self.dots = pg.PlotWidget(title="grid values scaled to max |v| = 1")
        self.dots.setXLink(self.hist)
        self.hist.setLabel("left", "density")
        self.caption = QLabel("select a tensor in the Tensors tab")
        self.errors = QTreeWidget()
        self.errors.setHeaderLabels(["type", "bpw", "rmse / rms", "weighted"])
        self.errors.setSortingEnabled(True)
        self.errors.setRootIsDecorated(False)
        self.measure = QPushButton("Measure error of every type on this tensor")
        self.measure.clicked.connect(self.measure_errors)
        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_error_event)
        self.runner.failed.connect(lambda m: self.caption.setText(f"error measurement failed: {m}"))
        self.runner.done.connect(lambda _: self.measure.setEnabled(True))

        plots = QWidget()
        pl = QVBoxLayout(plots)
        pl.addWidget(self.caption)
        pl.addWidget(self.hist, 3)
        pl.addWidget(self.dots, 2)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.addWidget(QLabel("grids"))
        sl.addWidget(self.list, 2)
        sl.addWidget(self.measure)
        sl.addWidget(self.errors, 3)
        split = QSplitter()
        split.addWidget(plots)
        split.addWidget(side)
        split.setSizes([800, 320])
        lay = QHBoxLayout(self)
        lay.addWidget(split)
        self._sample: np.ndarray | None = None
        self._name = ""
        self.redraw()

    def set_tensor(self, model, name: str) -> None:
        """Show the distribution of (a sample of) one tensor's weights."""
        try:
            self._sample = sample_rows(model, name)
        except (ValueError, KeyError) as e:
            self._sample, self._name = None, ""
            self.caption.setText(f"{name}: {e}")
            self.redraw()
            return
        self._name = name
        self.caption.setText(f"{name}: {self._sample.size:,} weights sampled")
        self._model = model
        self.errors.clear()
        self.redraw()

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
        for i, name in enumerate(self.grids):
            color = _COLORS[i % len(_COLORS)]
            lines = self.hist.plot([], [], connect="pairs",
                                   pen=pg.mkPen(color, width=1, style=Qt.DotLine))
            dots = self.dots.plot([], [], pen=None, symbol="o", symbolSize=7,
                                  symbolBrush=color, symbolPen=None)
            self._grid_items[name] = (lines, dots)

    def redraw(self) -> None:
        if not hasattr(self, "_grid_items"):
            self._build_items()
        top = 1.0
        if self._sample is not None and self._sample.size:
            v = block_normalized(self._sample, 32)
            y, x = np.histogram(v, bins=201, range=(-1.0, 1.0), density=True)
            self._hist_curve.setData(x, y)
            top = float(y.max()) if y.size else 1.0
        else:
            self._hist_curve.setData([0.0, 0.0], [0.0])
        on = self.checked()
        ticks = []
        for name, (lines, dots) in self._grid_items.items():
            visible = name in on
            lines.setVisible(visible)
            dots.setVisible(visible)
            if not visible:
                continue
            i = on.index(name)
            vals = normalized(self.grids[name])
            lines.setData(np.repeat(vals, 2), np.tile([0.0, top], vals.size))
            dots.setData(vals, np.full(vals.shape, float(i)))
            ticks.append((float(i), name))
        self.dots.getAxis("left").setTicks([ticks])
        self.dots.setYRange(-0.5, max(len(on) - 0.5, 0.5))

    def measure_errors(self) -> None:
        if self._sample is None or self.runner.busy:
            return
        self.errors.clear()
        self.measure.setEnabled(False)
        sample = self._sample
        self.runner.start(lambda: type_errors(sample))

    def _on_error_event(self, ev) -> None:
        if isinstance(ev, TypeScore):
            if ev.note:
                it = QTreeWidgetItem([ev.qtype, f"{ev.bpw:.3f}", "-", "-"])
                it.setToolTip(0, ev.note)
                it.setToolTip(2, ev.note)
            else:
                it = QTreeWidgetItem([ev.qtype, f"{ev.bpw:.3f}", f"{ev.rel_rmse:.5f}",
                                      f"{ev.weighted_rel_rmse:.5f}"])
            self.errors.addTopLevelItem(it)
