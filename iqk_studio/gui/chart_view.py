"""Size-vs-quality chart: every evaluated recipe as a point (model size, perplexity ± error)."""

from __future__ import annotations

import csv

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.jobs.recipe_eval import RecipePoint

FIELDS = ("label", "total_bytes", "bpw", "ppl", "ppl_err", "n_chunks", "n_ctx", "text")


class CompareView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.points: list[RecipePoint] = []
        self.plot = pg.PlotWidget(title="recipes: size vs perplexity (same text, n_ctx, chunks)")
        self.plot.setLabel("bottom", "model size", units="MiB")
        self.plot.setLabel("left", "PPL")
        self._scatter = self.plot.plot([], [], pen=None, symbol="o", symbolSize=9,
                                       symbolBrush=(30, 110, 200))
        self._bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), height=np.zeros(0), beam=0.0)
        self.plot.addItem(self._bars)
        self._labels: list[pg.TextItem] = []
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["recipe", "MiB", "bpw", "PPL", "±", "chunks", "n_ctx"])
        self.table.setSortingEnabled(True)
        self.table.setRootIsDecorated(False)
        save = QPushButton("Save CSV...")
        save.clicked.connect(self._save_dialog)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(save)
        lay = QVBoxLayout(self)
        lay.addWidget(self.plot, 3)
        lay.addWidget(self.table, 2)
        lay.addLayout(row)

    def add(self, p: RecipePoint) -> None:
        self.points.append(p)
        mib = p.total_bytes / 2**20
        self.table.addTopLevelItem(QTreeWidgetItem([
            p.label, f"{mib:.3f}", f"{p.bpw:.3f}", f"{p.ppl:.4f}", f"{p.ppl_err:.4f}",
            str(p.n_chunks), str(p.n_ctx)]))
        x = np.array([q.total_bytes / 2**20 for q in self.points])
        y = np.array([q.ppl for q in self.points])
        err = np.array([q.ppl_err for q in self.points])
        self._scatter.setData(x, y)
        self._bars.setData(x=x, y=y, height=2 * err)
        label = pg.TextItem(p.label, anchor=(0, 1))  # labels are only ever added, never removed
        label.setPos(mib, p.ppl)
        self.plot.addItem(label)
        self._labels.append(label)

    def save_csv(self, path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(FIELDS)
            for p in self.points:
                w.writerow([getattr(p, k) for k in FIELDS])

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save points", "recipes.csv", "CSV (*.csv)")
        if path:
            self.save_csv(path)
