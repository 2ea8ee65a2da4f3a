"""For the selected tensor (and summed over the model): which of the four iq4k variants IQ4_KS and
IQ4_K blocks choose, and how far each block's best fp4 fit is from its best iq4k fit."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.grid_plot import COLORS
from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.events import Finished, Progress
from iqk_studio.jobs.grid_stats import TensorGridStats, eligible, grid_stats_job, tensor_grid_stats
from iqk_studio.quant.grid_fit import VARIANTS

TYPES = ("iq4_ks", "iq4_k")
_X = {q: np.arange(4) + 5 * k for k, q in enumerate(TYPES)}  # bar positions, a gap between types
FITS = ("e2m1", "fe1m2", "nf4", "iq4k")


def _fractions(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum() if c.sum() else c


class GridStatsView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.caption = QLabel("select a tensor in the Tensors tab")
        self.caption.setWordWrap(True)
        self.bars = pg.PlotWidget(background="w")
        bp = self.bars.getPlotItem()
        bp.setTitle("iq4k variant chosen per block", color="k")
        bp.setLabel("left", "fraction of blocks")
        bp.getAxis("bottom").setTicks([[(float(_X[q].mean()), q.upper()) for q in TYPES]])
        self.bars.setYRange(0, 1, padding=0.02)
        self.bars.setXRange(-0.7, 8.7, padding=0)
        legend = bp.addLegend(offset=(-10, 10), labelTextColor="k")
        for v, c in zip(VARIANTS, COLORS):  # legend samples: empty bars of each colour
            sample = pg.BarGraphItem(x=[0.0], height=[0.0], width=0.0, brush=c)
            self.bars.addItem(sample)
            legend.addItem(sample, v)
        self.bar_items = {}
        for q in TYPES:
            item = pg.BarGraphItem(x=_X[q], height=np.zeros(4), width=0.8,
                                   brushes=[pg.mkBrush(c) for c in COLORS[:4]])
            self.bars.addItem(item)
            self.bar_items[q] = item
        self.dist = pg.PlotWidget(background="w")
        dp = self.dist.getPlotItem()
        dp.setTitle("fp4 fit \u2212 iq4k fit, per block of 32", color="k")
        dp.setLabel("bottom", "(fp4 error \u2212 iq4k error) / \u03a3x\u00b2")
        dp.setLabel("left", "blocks")
        dp.getAxis("bottom").enableAutoSIPrefix(False)
        self.dist_curve = self.dist.plot([0.0, 0.0], [0.0], stepMode="center", fillLevel=0,
                                         brush=(80, 120, 200, 120), pen="k")
        self.dist.addItem(pg.InfiniteLine(0, angle=90, pen=pg.mkPen("r", width=2)))
        self.table = QTreeWidget()
        self.table.setRootIsDecorated(False)
        self.table.setHeaderLabels(["", "this tensor", "whole model"])
        self.rows = {}
        for key in (*FITS, "fp4 better", "mean distance", "blocks", *TYPES):
            label = {"fp4 better": "blocks an fp4 grid fits better",
                     "mean distance": "mean (fp4 \u2212 iq4k) / \u03a3x\u00b2",
                     **{q: f"{q.upper()} % per variant" for q in TYPES}}.get(
                key, f"rel. error, best {key} fit" if key in FITS else key)
            it = QTreeWidgetItem([label, "", ""])
            self.table.addTopLevelItem(it)
            self.rows[key] = it
        self.table.resizeColumnToContents(0)
        self.table.setColumnWidth(1, 120)
        self.model_btn = QPushButton("Analyse every tensor of the model")
        self.model_btn.clicked.connect(self.analyse_model)
        self.status = QLabel("")
        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(lambda m: self.status.setText(f"failed: {m}"))
        self.runner.done.connect(self._job_done)

        plots_w = QWidget()
        plots = QVBoxLayout(plots_w)
        plots.addWidget(self.caption)
        plots.addWidget(self.bars, 1)
        plots.addWidget(self.dist, 1)
        help_ = QLabel("Each block of 32 weights is fitted with its best scale to e2m1, fe1m2 "
                       "and nf4 and to the best of the four iq4k variants. Weights trained "
                       "towards an fp4 format with blocks of 32 fit it almost exactly (relative "
                       "error near 0, most blocks below the red line); ordinary weights fit the "
                       "non-uniform iq4k rows better.")
        help_.setWordWrap(True)
        side_w = QWidget()
        side = QVBoxLayout(side_w)
        side.addWidget(self.table, 1)
        side.addWidget(help_)
        side.addWidget(self.model_btn)
        side.addWidget(self.status)
        split = QSplitter()
        split.addWidget(plots_w)
        split.addWidget(side_w)
        split.setSizes([600, 420])
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self.model = None
        self._sample = None
        self._name = ""
        self._pending = None
        self._model_requested = False
        self.stats: TensorGridStats | None = None
        self.model_stats = None

    # --- input ----------------------------------------------------------------------------
    def set_tensor(self, model, name: str, sample: np.ndarray | None) -> None:
        """Compute the statistics of a tensor's sample (on the worker thread; the latest request
        wins when one is already running)."""
        if model is not self.model:
            self.model_stats = None
            for it in self.rows.values():
                it.setText(2, "")
        self.model, self._name, self._sample = model, name, sample
        self.stats = None
        if sample is None or sample.shape[1] % 256:
            why = "no sample" if sample is None else f"rows of {sample.shape[1]} are not a " \
                "multiple of 256 (IQ4_KS / IQ4_K)"
            self.caption.setText(f"{name}: {why}")
            self._show(None)
            return
        if not np.any(sample):
            self.caption.setText(f"{name}: every sampled weight is zero \u2014 no block to fit "
                                 "and no variant to choose")
            self._show(None)
            return
        self.caption.setText(f"{name}: computing ...")
        self._pending = (model, name, sample)
        self._start_pending()

    def _start_pending(self) -> None:
        if self._pending is None or self.runner.busy:
            return
        model, name, sample = self._pending
        self._pending = None
        self.runner.start(lambda: iter([tensor_grid_stats(model, name, x=sample)]))

    def analyse_model(self) -> bool:
        """Statistics of every eligible tensor, summed (starts when a running job ends)."""
        if self.model is None:
            return False
        self.model_btn.setEnabled(False)
        if self.runner.busy:
            self._model_requested = True
            return True
        model = self.model
        names = eligible(model)
        return self.runner.start(lambda: grid_stats_job(model, names))

    # --- output ---------------------------------------------------------------------------
    def _on_event(self, ev) -> None:
        if isinstance(ev, TensorGridStats) and ev.distances is not None:
            if ev.name == self._name:
                self.stats = ev
                self._show(ev)
        elif isinstance(ev, Progress) and ev.total:
            self.status.setText(f"{ev.done}/{ev.total} {ev.message}")
        elif isinstance(ev, Finished) and ev.result is not None:
            self.model_stats = ev.result
            self._fill(2, ev.result)
            self.status.setText(f"whole model: {ev.message}")

    def _job_done(self, _stopped: bool) -> None:
        if self._model_requested:
            self._model_requested = False
            self.analyse_model()
            return
        self.model_btn.setEnabled(True)
        self._start_pending()

    def _show(self, s: TensorGridStats | None) -> None:
        for q in TYPES:
            self.bar_items[q].setOpts(height=_fractions(s.variants[q]) if s else np.zeros(4))
        if s is None or not s.n_blocks:
            self.dist_curve.setData([0.0, 0.0], [0.0])
            for it in self.rows.values():
                it.setText(1, "")
            return
        d = s.distances
        lim = max(float(np.abs(d).max()), 1e-12)
        y, x = np.histogram(d, bins=81, range=(-lim, lim))
        self.dist_curve.setData(x, y)
        self._fill(1, s)
        src = "; ".join(f"{q.upper()} {v}" for q, v in s.variant_source.items())
        self.caption.setText(f"{s.name}: {s.n_weights:,} weights sampled, {s.n_blocks:,} blocks "
                             f"of 32. Variants: {src}")

    def _fill(self, col: int, s) -> None:
        rel = s.rel()
        for g in FITS:
            self.rows[g].setText(col, f"{rel[g]:.5f}")
        share = s.fp4_better / s.n_blocks if s.n_blocks else 0.0
        self.rows["fp4 better"].setText(col, f"{100 * share:.1f}%")
        self.rows["mean distance"].setText(col, f"{s.mean_distance:+.5f}")
        self.rows["blocks"].setText(col, f"{s.n_blocks:,}")
        for q in TYPES:
            self.rows[q].setText(col, " / ".join(f"{100 * f:.0f}" for f in
                                                 _fractions(s.variants[q])))
            self.rows[q].setToolTip(col, ", ".join(VARIANTS))
        self.table.resizeColumnToContents(0)
