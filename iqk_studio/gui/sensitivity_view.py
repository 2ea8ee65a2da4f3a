"""Sensitivity tab: the KLD cost of setting each tensor group to a type, against the unchanged
model, measured in the background — which groups can take fewer bits. Sorted numerically, drawn
as bars, with the time left; a chosen group's type can be applied to the recipe."""

from __future__ import annotations

import re
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.job_panel import JobPanel, fmt_seconds
from iqk_studio.gui.recipe_panel import TypeBox
from iqk_studio.gui.session import Session, insert_rule_first
from iqk_studio.jobs.events import Progress
from iqk_studio.jobs.sensitivity import GROUPINGS, Sensitivity, candidates, sensitivity_job
from iqk_studio.jobs.warmup import warm_types
from iqk_studio.quant import registry
from iqk_studio.recipe.records import Rule
from iqk_studio.recipe.selection import selection_pattern


def natural_key(text: str) -> tuple:
    """'blk.2' < 'blk.12', 'layer 9' < 'layer 10': digit runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", text) if p)


class NumItem(QTreeWidgetItem):
    """Sorts by the values given (labels naturally, numbers numerically), not by the text."""

    def __init__(self, texts, keys):
        super().__init__(texts)
        self.keys = keys

    def __lt__(self, other):
        c = self.treeWidget().sortColumn()
        # a Python bool: numpy's bool_ (np.float64 keys) returned to Qt's sort crashes PySide6
        return bool(self.keys[c] < other.keys[c])


def _job(path, text, cands, n_ctx, chunks, qtype):
    yield from warm_types([qtype])
    yield from sensitivity_job(path, text, cands, n_ctx, chunks)


class SensitivityView(QWidget):
    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.text_source = None  # callable -> evaluation text path (the Evaluate tab's)
        self.qtype = TypeBox(sorted(registry.quantizers(), key=str.lower))
        self.qtype.set_current("iq2_ks" if "iq2_ks" in registry.quantizers() else "q4_0")
        self.by = QComboBox()
        self.by.addItems(GROUPINGS)
        self.only = QLineEdit()
        self.only.setPlaceholderText("only tensors matching this regex (optional)")
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(16, 32768)
        self.n_ctx.setValue(512)
        self.chunks = QSpinBox()
        self.chunks.setRange(1, 1000)
        self.chunks.setValue(2)
        self.panel = JobPanel("Measure")
        self.panel.set_status("uses the evaluation text chosen in the Evaluate tab")
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["group", "MiB now", "MiB as type", "mean KLD", "\u00b1",
                                    "same top %", "KLD per MiB saved"])
        self.table.setRootIsDecorated(False)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.AscendingOrder)
        self.chart = pg.PlotWidget()
        self.chart.setLabel("left", "mean KLD")
        self.chart.getAxis("left").enableAutoSIPrefix(False)
        self._bars = pg.BarGraphItem(x=[], height=[], width=0.7, brush=(30, 110, 200))
        self.chart.addItem(self._bars)
        apply_btn = QPushButton("Apply type to the selected group")
        apply_btn.setToolTip("adds a rule for exactly this group's tensors at the type measured, "
                             "first in the recipe (undo: Ctrl+Z)")
        apply_btn.clicked.connect(self.apply_selected)
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.qtype, 1)
        row.addWidget(self.by, 1)
        form.addRow("type, group by", row)
        form.addRow("tensors", self.only)
        ctx = QHBoxLayout()
        ctx.addWidget(self.n_ctx)
        ctx.addWidget(self.chunks)
        ctx.addStretch(1)
        form.addRow("n_ctx, chunks", ctx)
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.table, 1)
        ll.addWidget(apply_btn)
        split = QSplitter(Qt.Vertical)
        split.addWidget(lower)
        split.addWidget(self.chart)
        split.setSizes([260, 160])
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.panel)
        lay.addWidget(split, 1)
        self.panel.run_clicked.connect(self.start)
        self.panel.event.connect(self._on_event)
        self._cands: dict = {}
        self._qtype = ""
        self._t0 = 0.0
        self._results: dict[str, float] = {}
        self.record = None  # (job, RunSpec) -> the job recorded in the results store

    def start(self) -> bool:
        text = self.text_source() if self.text_source else ""
        model = self.session.model
        if model is None or not text:
            self.panel.set_status("open a model and choose an evaluation text (Evaluate tab)",
                                  error=True)
            return False
        qtype = self.qtype.currentText().strip()
        try:
            cands = candidates(model, qtype, self.by.currentText(),
                               self.only.text().strip() or None)
        except (ValueError, KeyError) as e:  # a bad regex, an unknown type
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            self.panel.set_status(f"cannot start: {msg}", error=True)
            return False
        path, n_ctx, chunks = self.session.model_path, self.n_ctx.value(), self.chunks.value()
        record, facts = self.record, {"type": qtype, "by": self.by.currentText(),
                                      "only": self.only.text().strip() or None}

        def make_job():  # on the worker thread (the spec hashes the model and the text)
            job = _job(path, text, cands, n_ctx, chunks, qtype)
            if record is None:
                return job
            from iqk_studio.results import evaluation_spec

            return record(job, evaluation_spec("sensitivity", path, text, n_ctx, chunks,
                                               facts=facts))

        if not self.panel.start(make_job, f"{len(cands)} groups to test"):
            return False
        self.table.clear()
        self._cands = {c.label: c for c in cands}
        self._qtype, self._t0, self._results = qtype, time.monotonic(), {}
        self._draw()
        return True

    def _on_event(self, ev) -> None:
        if isinstance(ev, Progress) and ev.total and ev.done:
            left = (time.monotonic() - self._t0) * (ev.total - ev.done) / ev.done
            self.panel.progress.setFormat(f"{ev.message[:50]}  ({fmt_seconds(left)} left)")
        elif isinstance(ev, Sensitivity):
            saved = (ev.bytes_before - ev.bytes_after) / 2**20
            per = ev.kld / saved if saved > 0 else float("inf")
            keys = [natural_key(ev.label), ev.bytes_before, ev.bytes_after, ev.kld, ev.kld_err,
                    ev.same_top, per]
            item = NumItem(
                [ev.label, f"{ev.bytes_before / 2**20:.3f}", f"{ev.bytes_after / 2**20:.3f}",
                 f"{ev.kld:.6f}", f"{ev.kld_err:.6f}", f"{100 * ev.same_top:.2f}",
                 f"{per:.6f}" if saved > 0 else "-"], keys)
            for c in range(1, 7):
                item.setTextAlignment(c, Qt.AlignRight | Qt.AlignVCenter)
            self.table.addTopLevelItem(item)
            self._results[ev.label] = ev.kld
            self._draw()

    def _draw(self) -> None:
        labels = sorted(self._results, key=natural_key)
        x = np.arange(len(labels), dtype=float)
        self._bars.setOpts(x=x, height=np.array([self._results[k] for k in labels]), width=0.7)
        step = max(1, len(labels) // 12)  # at most ~12 tick labels
        self.chart.getAxis("bottom").setTicks([[(float(i), labels[i])
                                                for i in range(0, len(labels), step)]])

    def selected_group(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].text(0) if items else None

    def apply_selected(self) -> bool:
        label = self.selected_group()
        cand = self._cands.get(label) if label else None
        if cand is None:
            self.session.say("select a measured group first")
            return False
        rule = Rule(selection_pattern(sorted(cand.types)), self._qtype)
        self.session.set_text(insert_rule_first(self.session.text, str(rule)),
                              f"set {label} to {self._qtype}")
        return True
