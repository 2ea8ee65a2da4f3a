"""Perplexity of the open model on a text file, run in the background with a live per-chunk plot."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.events import Chunk, Failed, Finished, Progress

REDRAW_MS = 33  # at most ~30 redraws a second


class ChunkBuffers:
    """Preallocated per-chunk series, grown by doubling; the plot reads views of them."""

    def __init__(self, capacity: int = 64):
        self.n = 0
        self.x = np.zeros(capacity)
        self.ppl = np.zeros(capacity)
        self.err = np.zeros(capacity)
        self.chunk_ppl = np.zeros(capacity)

    def append(self, ev: Chunk) -> None:
        if self.n == self.x.size:
            for k in ("x", "ppl", "err", "chunk_ppl"):
                a = getattr(self, k)
                setattr(self, k, np.concatenate([a, np.zeros_like(a)]))
        i = self.n
        self.x[i], self.ppl[i], self.err[i] = ev.index, ev.ppl, ev.ppl_err
        self.chunk_ppl[i] = float(np.exp(ev.nll))
        self.n += 1


class PerplexityView(QWidget):
    finished = Signal(object)  # the job's Finished.result

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_path: str | None = None
        self.plan_provider = None  # callable -> (plan, imatrix or None, label) of the recipe
        self.text = QLineEdit()
        self.text.setPlaceholderText("evaluation text, e.g. wiki.test.raw")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(16, 32768)
        self.n_ctx.setValue(512)
        self.chunks = QSpinBox()
        self.chunks.setRange(0, 100000)
        self.chunks.setSpecialValueText("all")
        self.evaluate_recipe = QCheckBox("evaluate the recipe (quantize in memory, no file written)")
        self.evaluate_recipe.setChecked(True)
        self.run_btn = QPushButton("Run perplexity")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = pg.PlotWidget(title="perplexity, running (line) and per chunk (dots)")
        self.plot.setLabel("bottom", "chunk")
        self.plot.setLabel("left", "PPL")
        self.plot.addLegend()
        self._upper = self.plot.plot([], [], pen=pg.mkPen((30, 110, 200, 80)))
        self._lower = self.plot.plot([], [], pen=pg.mkPen((30, 110, 200, 80)))
        self.plot.addItem(pg.FillBetweenItem(self._lower, self._upper, brush=(30, 110, 200, 40)))
        self._running = self.plot.plot([], [], pen=pg.mkPen((30, 110, 200), width=2),
                                       name="running PPL")
        self._chunks = self.plot.plot([], [], pen=None, symbol="o", symbolSize=5,
                                      symbolBrush=(200, 90, 0), name="chunk PPL")
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.text, 1)
        row.addWidget(browse)
        form.addRow("text", row)
        form.addRow("n_ctx", self.n_ctx)
        form.addRow("chunks", self.chunks)
        form.addRow("", self.evaluate_recipe)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addWidget(self.progress, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.plot, 1)

        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(self._on_failed)
        self.runner.done.connect(self._on_done)
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.buf = ChunkBuffers()
        self._dirty = False

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Evaluation text", "", "Text (*.raw *.txt);;All (*)")
        if path:
            self.text.setText(path)

    def start(self) -> bool:
        if self.model_path is None:
            self.status.setText("open a model first")
            return False
        text = self.text.text().strip()
        if not text:
            self.status.setText("choose an evaluation text file")
            return False
        model, n_ctx = self.model_path, self.n_ctx.value()
        chunks = self.chunks.value() or -1
        if self.evaluate_recipe.isChecked() and self.plan_provider is not None:
            from iqk_studio.jobs.recipe_eval import evaluate_plan
            plan, imatrix, label = self.plan_provider()
            if plan is None:
                self.status.setText("the recipe has no valid plan")
                return False
            if plan.errors:
                self.status.setText("the plan has errors: " + plan.errors[0].message)
                return False
            job = lambda: evaluate_plan(model, plan, text, n_ctx, chunks, imatrix, label)  # noqa: E731
        else:
            from iqk_studio.jobs.perplexity import perplexity_job
            job = lambda: perplexity_job(model, text, n_ctx, chunks)  # noqa: E731
        self.buf = ChunkBuffers()
        self._redraw()
        if not self.runner.start(job):
            return False
        self.status.setText("starting...")
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self._timer.start()
        return True

    def _on_event(self, ev) -> None:
        if isinstance(ev, Progress):
            if ev.total:
                self.progress.setMaximum(ev.total)
                self.progress.setValue(ev.done)
            if ev.message:
                self.progress.setFormat(ev.message)
        elif isinstance(ev, Chunk):
            self.buf.append(ev)
            self._dirty = True
            self.status.setText(
                f"[{ev.index}/{ev.count}] PPL = {ev.ppl:.4f} +/- {ev.ppl_err:.5f}   "
                f"{ev.tokens_per_second:.0f} tokens/s, ETA {ev.eta_seconds:.0f} s")
        elif isinstance(ev, Finished):
            self.status.setText(ev.message)
            self.finished.emit(ev.result)
        elif isinstance(ev, Failed):
            self.status.setText(f"<span style='color:#c00'>{ev.message}</span>")

    def _on_failed(self, msg: str) -> None:
        self.status.setText(f"<span style='color:#c00'>{msg}</span>")

    def _on_done(self, cancelled: bool) -> None:
        self._timer.stop()
        self._redraw()
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if cancelled:
            self.status.setText(self.status.text() + "  (cancelled)")

    def _redraw(self) -> None:
        n = self.buf.n
        b = self.buf
        self._running.setData(b.x[:n], b.ppl[:n])
        self._upper.setData(b.x[:n], b.ppl[:n] + b.err[:n])
        self._lower.setData(b.x[:n], b.ppl[:n] - b.err[:n])
        self._chunks.setData(b.x[:n], b.chunk_ppl[:n])
        self._dirty = False
