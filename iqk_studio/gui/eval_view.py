"""The Evaluate tab: perplexity or KL-divergence of the open file or of the recipe quantized in
memory, a live per-chunk plot with any finished run overlaid, and the results list."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.eval_settings import EvalSettings
from iqk_studio.gui.job_panel import JobPanel, fmt_seconds
from iqk_studio.gui.results_model import RCol, ResultsModel
from iqk_studio.gui.session import Session
from iqk_studio.jobs.evaluate import evaluate
from iqk_studio.jobs.events import Chunk, KldChunk

REDRAW_MS = 33  # at most ~30 redraws a second
LIVE = (30, 30, 30)


class ChunkBuffers:
    """Preallocated per-chunk series, grown by doubling; the plot reads views of them."""

    def __init__(self, capacity: int = 64):
        self.n = 0
        self.x = np.zeros(capacity)
        self.ppl = np.zeros(capacity)
        self.err = np.zeros(capacity)
        self.chunk_ppl = np.zeros(capacity)

    def append(self, ev) -> None:
        if self.n == self.x.size:
            for k in ("x", "ppl", "err", "chunk_ppl"):
                a = getattr(self, k)
                setattr(self, k, np.concatenate([a, np.zeros_like(a)]))
        i = self.n
        self.x[i], self.ppl[i], self.err[i] = ev.index, ev.ppl, ev.ppl_err
        self.chunk_ppl[i] = float(np.exp(ev.nll)) if isinstance(ev, Chunk) else np.nan
        self.n += 1


class EvalView(QWidget):
    finished = Signal(object)  # RunResult

    def __init__(self, session: Session, results: ResultsModel, parent=None):
        super().__init__(parent)
        self.session, self.results = session, results
        self.settings = EvalSettings(session)
        self.panel = JobPanel("Run")
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "chunk")
        self.plot.setLabel("left", "running PPL")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self._upper = self.plot.plot([], [], pen=pg.mkPen((*LIVE, 60)))
        self._lower = self.plot.plot([], [], pen=pg.mkPen((*LIVE, 60)))
        # the band must not stretch the view to (0, 0) while it is empty
        self.plot.addItem(pg.FillBetweenItem(self._lower, self._upper, brush=(*LIVE, 35)),
                          ignoreBounds=True)
        self._running = self.plot.plot([], [], pen=pg.mkPen(LIVE, width=2))
        self._chunks = self.plot.plot([], [], pen=None, symbol="o", symbolSize=4,
                                      symbolBrush=(*LIVE, 120), symbolPen=None)
        self._overlays: list[pg.PlotDataItem] = []  # a pool: items are reused, never removed
        self.table = QTableView()
        self.table.setModel(results)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeToContents)
        hh.setSectionResizeMode(RCol.NAME, QHeaderView.Interactive)
        hh.resizeSection(RCol.NAME, 230)
        hh.setStretchLastSection(True)
        base_btn = QPushButton("Use as baseline")
        base_btn.setToolTip("PPL vs base and the chart's y axis divide by this run's PPL")
        open_btn = QPushButton("Open recipe")
        remove_btn = QPushButton("Remove")
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("finished runs (tick: draw on the plot)"), 1)
        for b in (base_btn, open_btn, remove_btn):
            buttons.addWidget(b)
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addLayout(buttons)
        ll.addWidget(self.table)
        self.split = QSplitter(Qt.Vertical)
        self.split.addWidget(self.plot)
        self.split.addWidget(lower)
        self.split.setSizes([300, 160])
        lay = QVBoxLayout(self)
        lay.addWidget(self.settings)
        lay.addWidget(self.panel)
        lay.addWidget(self.split, 1)

        self.panel.run_clicked.connect(self.start)
        self.panel.event.connect(self._on_event)
        self.panel.finished.connect(self._on_finished)
        self.panel.done.connect(lambda _: (self._timer.stop(), self._redraw()))
        results.changed.connect(self._draw_overlays)
        base_btn.clicked.connect(lambda: self._with_selected(
            lambda r: results.set_baseline(r.id)))
        remove_btn.clicked.connect(lambda: self._with_selected(lambda r: results.remove(r.id)))
        open_btn.clicked.connect(lambda: self._with_selected(self.open_recipe))
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.buf = ChunkBuffers()
        self._t_chunks: list[float] = []

    # --- running -------------------------------------------------------------------------------
    def start(self) -> bool:
        spec, why = self.settings.spec()
        if spec is None:
            self.panel.set_status(why, error=True)
            return False
        self.buf = ChunkBuffers()
        self._t_chunks = []
        self._redraw()
        what = "the recipe" if spec.plan is not None else "the file"
        metric = "KL-divergence" if spec.base_path else "perplexity"
        if not self.panel.start(lambda: evaluate(spec), f"{metric} of {what}: starting..."):
            return False
        self.settings.remember()
        self._timer.start()
        return True

    def cancel(self) -> None:
        self.panel.cancel()

    def _on_event(self, ev) -> None:
        if not isinstance(ev, (Chunk, KldChunk)):
            return
        import time

        self.buf.append(ev)
        self._t_chunks.append(time.monotonic())
        self.settings.note_speed(ev.tokens_per_second)
        head = f"[{ev.index}/{ev.count}] PPL = {ev.ppl:.4f} \u00b1 {ev.ppl_err:.4f}"
        if isinstance(ev, KldChunk):
            head += (f", vs base {100 * (np.exp(ev.ln_ratio) - 1):+.2f} %, KLD = {ev.kld:.5f} "
                     f"\u00b1 {ev.kld_err:.5f}, same top {100 * ev.same_top:.1f} %")
        self.panel.set_status(f"{head}   {ev.tokens_per_second:.0f} tokens/s, "
                              f"{self._eta(ev)} left")

    def _eta(self, ev) -> str:
        """From the time between chunks once two have arrived (the first also carries warm-up
        work); before that, the job's own estimate."""
        t = self._t_chunks
        left = ev.count - ev.index
        if len(t) >= 2:
            per = (t[-1] - t[0]) / (len(t) - 1)
            return fmt_seconds(per * left)
        return "about " + fmt_seconds(ev.eta_seconds)

    def _on_finished(self, result) -> None:
        if result is None:
            return
        run = self.results.add_result(result)
        r = result
        if r.kind == "kld":
            self.panel.set_status(
                f"{run.name}: mean KLD = {r.kld:.5f} \u00b1 {r.kld_err:.5f}, PPL(Q)/PPL(base) = "
                f"{r.ppl_ratio:.4f} \u00b1 {r.ppl_ratio_err:.4f}, same top "
                f"{100 * r.same_top:.1f} % over {r.n_chunks} chunks of {r.n_ctx}")
        else:
            self.panel.set_status(f"{run.name}: PPL = {r.ppl:.4f} \u00b1 {r.ppl_err:.4f} over "
                                  f"{r.n_chunks} chunks of {r.n_ctx}")
        self.buf = ChunkBuffers()  # the run is now an overlay of its own colour
        self._redraw()
        self.finished.emit(result)

    # --- plot ----------------------------------------------------------------------------------
    def _redraw(self) -> None:
        n, b = self.buf.n, self.buf
        ok = np.isfinite(b.err[:n])
        err = np.where(ok, b.err[:n], 0.0)
        self._running.setData(b.x[:n], b.ppl[:n])
        self._upper.setData(b.x[:n], b.ppl[:n] + err)
        self._lower.setData(b.x[:n], b.ppl[:n] - err)
        fin = np.isfinite(b.chunk_ppl[:n])
        self._chunks.setData(b.x[:n][fin], b.chunk_ppl[:n][fin])

    def _draw_overlays(self) -> None:
        runs = [r for r in self.results.shown_runs() if r.result.curve]
        while len(self._overlays) < len(runs):
            self._overlays.append(self.plot.plot([], []))
        for item, run in zip(self._overlays, runs):
            y = np.asarray(run.result.curve, dtype=float)
            item.setData(np.arange(1, y.size + 1, dtype=float), y,
                         pen=pg.mkPen(self.results.color(run.id), width=2),
                         symbol="o", symbolSize=5, symbolBrush=self.results.color(run.id),
                         symbolPen=None)
            item.setToolTip(run.name)
            item.setVisible(True)
        for item in self._overlays[len(runs):]:
            item.setData([], [])
            item.setVisible(False)

    # --- results list --------------------------------------------------------------------------
    def selected_run(self):
        rows = self.table.selectionModel().selectedRows()
        return self.results.run_at(rows[0].row()) if rows else None

    def _with_selected(self, fn) -> None:
        run = self.selected_run()
        if run is None:
            self.session.say("select a run in the list first")
            return
        fn(run)

    def open_recipe(self, run) -> bool:
        """Put a run's recipe in the editor (one undoable step)."""
        r = run.result
        if not r.recipe_text:
            self.session.say(f"{run.name} evaluated the file as it is: it has no recipe")
            return False
        self.session.set_text(r.recipe_text, f"open the recipe of {run.name}",
                              name=r.recipe_name or None)
        if self.session.model_path and r.model_path != self.session.model_path:
            self.session.say(f"note: {run.name} was measured on {r.model_path}", 10000)
        return True
