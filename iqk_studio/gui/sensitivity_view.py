"""Sensitivity tab: the KLD cost of setting each tensor group to a type, against the unchanged
model, measured in the background — which groups can take fewer bits."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.sensitivity import GROUPINGS, Sensitivity, candidates, sensitivity_job
from iqk_studio.quant import registry


class NumItem(QTreeWidgetItem):
    """Sorts numerically by the values given, not by the displayed text."""

    def __init__(self, texts, keys):
        super().__init__(texts)
        self.keys = keys

    def __lt__(self, other):
        c = self.treeWidget().sortColumn()
        return self.keys[c] < other.keys[c]


class SensitivityView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = None
        self.model_path: str | None = None
        self.text_source = None  # callable -> evaluation text path (shared with the PPL tab)
        self.qtype = QComboBox()
        self.qtype.addItems(sorted(registry.quantizers()))
        self.qtype.setCurrentText("iq2_ks" if "iq2_ks" in registry.quantizers() else "q4_0")
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
        self.run_btn = QPushButton("Measure")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("uses the evaluation text chosen in the Perplexity tab")
        self.status.setWordWrap(True)
        self.table = QTreeWidget()
        self.table.setHeaderLabels(["group", "MiB now", "MiB as type", "mean KLD", "±",
                                    "same top %", "KLD per MiB saved"])
        self.table.setRootIsDecorated(False)
        self.table.setSortingEnabled(True)
        form = QFormLayout()
        form.addRow("type", self.qtype)
        form.addRow("group by", self.by)
        form.addRow("tensors", self.only)
        form.addRow("n_ctx", self.n_ctx)
        form.addRow("chunks", self.chunks)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addWidget(self.progress, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.table, 1)
        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(lambda m: self.status.setText(f"failed: {m}"))
        self.runner.done.connect(self._on_done)
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.runner.cancel)

    def start(self) -> bool:
        text = self.text_source() if self.text_source else ""
        if self.model is None or not text:
            self.status.setText("open a model and choose an evaluation text (Perplexity tab)")
            return False
        try:
            cands = candidates(self.model, self.qtype.currentText(), self.by.currentText(),
                               self.only.text().strip() or None)
        except (ValueError, KeyError) as e:  # a bad regex, an unknown type
            self.status.setText(f"cannot start: {e}")
            return False
        path, n_ctx, chunks = self.model_path, self.n_ctx.value(), self.chunks.value()
        self.table.clear()
        if not self.runner.start(lambda: sensitivity_job(path, text, cands, n_ctx, chunks)):
            return False
        self.status.setText(f"{len(cands)} groups to test")
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        return True

    def _on_event(self, ev) -> None:
        if isinstance(ev, Progress) and ev.total:
            self.progress.setMaximum(ev.total)
            self.progress.setValue(ev.done)
            self.progress.setFormat(ev.message[:60])
        elif isinstance(ev, Sensitivity):
            saved = (ev.bytes_before - ev.bytes_after) / 2**20
            per = ev.kld / saved if saved > 0 else float("inf")
            keys = [ev.label, ev.bytes_before, ev.bytes_after, ev.kld, ev.kld_err, ev.same_top,
                    per]
            self.table.addTopLevelItem(NumItem(
                [ev.label, f"{ev.bytes_before / 2**20:.3f}", f"{ev.bytes_after / 2**20:.3f}",
                 f"{ev.kld:.6f}", f"{ev.kld_err:.6f}", f"{100 * ev.same_top:.2f}",
                 f"{per:.6f}" if saved > 0 else "-"], keys))
        elif isinstance(ev, Failed):
            self.status.setText(f"failed: {ev.message}")
        elif isinstance(ev, Finished):
            self.status.setText(ev.message)

    def _on_done(self, cancelled: bool) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if cancelled:
            self.status.setText(self.status.text() + " (cancelled)")
