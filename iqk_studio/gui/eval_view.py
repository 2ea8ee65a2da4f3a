"""The Evaluate tab: perplexity or KL-divergence of the open file or of the recipe quantized in
memory, with the built-in engine or the user's llama-perplexity (one look and feel for both); a
live per-chunk plot with any listed run overlaid, and the results list of the store."""

from __future__ import annotations

import math
import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.eval_settings import EvalSettings
from iqk_studio.gui.job_panel import JobPanel, fmt_seconds
from iqk_studio.gui.results_model import ResultsModel
from iqk_studio.gui.results_panel import ResultsPanel
from iqk_studio.gui.session import Session
from iqk_studio.gui.store_source import StoreSource, run_name
from iqk_studio.jobs.evaluate import evaluate
from iqk_studio.jobs.events import Chunk, KldChunk, RunInfo
from iqk_studio.results.recording import builtin_spec

REDRAW_MS = 33  # at most ~30 redraws a second
LIVE = (30, 30, 30)
EXTERNAL_GRACE = None  # seconds between SIGTERM and SIGKILL on cancel (None: the runner's)


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


class NanBar(QWidget):
    """Shown at the first NaN chunk of a run that goes on: stop it, or let it go on."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel("")
        self.stop_btn = QPushButton("Stop the run")
        self.go_btn = QPushButton("Let it go on")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.stop_btn)
        lay.addWidget(self.go_btn)
        self.go_btn.clicked.connect(self.hide)
        self.hide()


class EvalView(QWidget):
    finished = Signal(object)  # RunResult
    store_problem = Signal(str)  # the results store failed during a run (any thread)

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
        self._band = pg.FillBetweenItem(self._lower, self._upper, brush=(*LIVE, 35))
        self.plot.addItem(self._band, ignoreBounds=True)
        self._running = self.plot.plot([], [], pen=pg.mkPen(LIVE, width=2))
        self._chunks = self.plot.plot([], [], pen=None, symbol="o", symbolSize=4,
                                      symbolBrush=(*LIVE, 120), symbolPen=None)
        self._overlays: list[pg.PlotDataItem] = []  # a pool: items are reused, never removed
        self._nan_lines: list[pg.InfiniteLine] = []
        self.list = ResultsPanel(session, results)
        self.table = self.list.table
        self.nan_bar = NanBar()
        self.details = QPlainTextEdit()  # a failed tool's last lines
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(130)
        self.details.hide()
        self.split = QSplitter(Qt.Vertical)
        self.split.addWidget(self.plot)
        self.split.addWidget(self.list)
        self.split.setSizes([300, 160])
        lay = QVBoxLayout(self)
        lay.addWidget(self.settings)
        lay.addWidget(self.panel)
        lay.addWidget(self.nan_bar)
        lay.addWidget(self.details)
        lay.addWidget(self.split, 1)

        self.panel.run_clicked.connect(self.start)
        self.panel.event.connect(self._on_event)
        self.panel.finished.connect(self._on_finished)
        self.panel.failed.connect(self._on_failed)
        self.panel.done.connect(self._on_done)
        self.nan_bar.stop_btn.clicked.connect(self.cancel)
        self.store_problem.connect(self._on_store_problem)
        results.changed.connect(self._draw_overlays)
        self.list.open_run.connect(self.open_recipe)
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self.buf = ChunkBuffers()
        self._t_chunks: list[float] = []
        self._recording = None  # the recorded job of the run going on (its store id)
        self._external = False
        self._engine = ""  # as the external tool stated it (RunInfo)
        self._nan_seen = False
        self._store_warned = False

    # --- running -------------------------------------------------------------------------------
    def start(self) -> bool:
        spec, why = self.settings.spec()
        if spec is None:
            self.panel.set_status(why, error=True)
            return False
        make_job, why = self._job_factory(spec)
        if make_job is None:
            self.panel.set_status(why, error=True)
            return False
        self.buf = ChunkBuffers()
        self._t_chunks = []
        self._recording = None
        self._nan_seen = False
        self._engine = ""
        self.nan_bar.hide()
        self.details.hide()
        for line in self._nan_lines:
            line.hide()
        self._redraw()
        what = "the recipe" if spec.plan is not None else "the file"
        metric = "KL-divergence" if spec.base_path else "perplexity"
        how = " with llama-perplexity" if self._external else ""
        if not self.panel.start(make_job, f"{metric} of {what}{how}: starting..."):
            return False
        self.settings.remember()
        self._timer.start()
        return True

    def _job_factory(self, spec):
        """(make_job, "") to run on the worker thread, or (None, why not)."""
        source = self.results.source

        def record(job, run_spec):
            rec = source.record(job, run_spec, on_error=self.store_problem.emit)
            self._recording = rec
            return rec

        self._external = self.settings.is_external()
        if not self._external:
            return (lambda: record(evaluate(spec), builtin_spec(spec))), ""
        from iqk_studio.gui.external_eval import run_external

        x = self.settings.external
        extra, why = x.extra_args()
        if extra is None:
            return None, why
        where, binary, stop = x.where.text().strip(), x.binary, x.stop_nan.isChecked()
        return (lambda: run_external(spec, where, binary, extra, stop, record,
                                     EXTERNAL_GRACE)), ""

    def cancel(self) -> None:
        self.panel.cancel()

    def _on_event(self, ev) -> None:
        if isinstance(ev, RunInfo):
            self._engine = ev.engine
        if not isinstance(ev, (Chunk, KldChunk)):
            return
        if not math.isfinite(ev.ppl):
            self._flag_nan(ev)
            return
        self.buf.append(ev)
        self._t_chunks.append(time.monotonic())
        self.settings.note_speed(ev.tokens_per_second)
        pm = f" \u00b1 {ev.ppl_err:.4f}" if math.isfinite(ev.ppl_err) else ""
        head = f"[{ev.index}/{ev.count}] PPL = {ev.ppl:.4f}{pm}"
        if isinstance(ev, KldChunk):
            head += (f", vs base {100 * (np.exp(ev.ln_ratio) - 1):+.2f} %, KLD = {ev.kld:.5f} "
                     f"\u00b1 {ev.kld_err:.5f}, same top {100 * ev.same_top:.1f} %")
        self.panel.set_status(f"{head}   {ev.tokens_per_second:.0f} tokens/s, "
                              f"{self._eta(ev)} left")

    def _flag_nan(self, ev) -> None:
        """A NaN / Inf chunk: marked on the plot, and (when the run goes on) the choice to stop."""
        line = next((ln for ln in self._nan_lines if not ln.isVisible()), None)
        if line is None:
            line = pg.InfiniteLine(angle=90, pen=pg.mkPen((200, 0, 0), style=Qt.DashLine))
            self.plot.addItem(line, ignoreBounds=True)
            self._nan_lines.append(line)
        line.setPos(ev.index)
        line.show()
        msg = (f"chunk {ev.index}: the perplexity is {ev.ppl} \u2014 the model produced NaN or Inf "
               "(a broken tensor, or an unsupported type or option)")
        self.panel.set_status(msg, error=True)
        goes_on = self._external and not self.settings.external.stop_nan.isChecked()
        if goes_on and self.panel.busy and not self._nan_seen:
            self._nan_seen = True
            self.nan_bar.label.setText(f"<span style='color:#c00'>{msg}</span>")
            self.nan_bar.show()

    def _eta(self, ev) -> str:
        """From the time between chunks once two have arrived (the first also carries warm-up
        work); before that, and for external tools (which evaluate several chunks per pass and
        time their passes), the job's own estimate."""
        t = self._t_chunks
        left = ev.count - ev.index
        if len(t) >= 2 and not self._external:
            per = (t[-1] - t[0]) / (len(t) - 1)
            return fmt_seconds(per * left)
        return "about " + fmt_seconds(ev.eta_seconds)

    def _on_finished(self, result) -> None:
        if result is None:
            return
        rid = StoreSource.recorded_id(self._recording) if self._recording is not None else None
        name = run_name(result, "external", self._engine) if self._external else None
        run = self.results.add_result(result, name, recorded_id=rid)
        r = result
        if r.kind == "kld":
            self.panel.set_status(
                f"{run.name}: mean KLD = {r.kld:.5f} \u00b1 {r.kld_err:.5f}, PPL(Q)/PPL(base) = "
                f"{r.ppl_ratio:.4f} \u00b1 {r.ppl_ratio_err:.4f}, same top "
                f"{100 * r.same_top:.1f} % over {r.n_chunks} chunks of {r.n_ctx}")
        else:
            pm = f" \u00b1 {r.ppl_err:.4f}" if math.isfinite(r.ppl_err) else ""
            self.panel.set_status(f"{run.name}: PPL = {r.ppl:.4f}{pm} over {r.n_chunks} chunks "
                                  f"of {r.n_ctx}")
        self.panel.progress.setFormat(f"chunk {r.n_chunks}/{r.n_chunks}")  # not the tool's line
        self.buf = ChunkBuffers()  # the run is now an overlay of its own colour
        self._redraw()
        self.finished.emit(result)

    def _on_failed(self, message: str) -> None:
        """A tool's failure carries its last output lines: shown below the status line."""
        if "\n" in message.strip():
            self.details.setPlainText(message.strip())
            self.details.show()

    def _on_done(self, _stopped: bool) -> None:
        self._timer.stop()
        self._redraw()
        self.nan_bar.hide()
        self.results.refresh()  # cancelled / failed runs keep their chunks in the store

    def _on_store_problem(self, message: str) -> None:
        if not self._store_warned:
            self._store_warned = True
            self.session.say(f"the run is not recorded in the results store: {message}", 15000)

    # --- plot ----------------------------------------------------------------------------------
    def _redraw(self) -> None:
        n, b = self.buf.n, self.buf
        ok = np.isfinite(b.err[:n])
        err = np.where(ok, b.err[:n], 0.0)
        self._running.setData(b.x[:n], b.ppl[:n])
        self._upper.setData(b.x[:n], b.ppl[:n] + err)
        self._lower.setData(b.x[:n], b.ppl[:n] - err)
        # pyqtgraph keeps the last filled path when both curves are emptied (a finished run left
        # the band of its second-to-last chunk behind): hide it
        self._band.setVisible(n > 0)
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
                         symbolPen=None, connect="finite")
            item.setToolTip(run.name)
            item.setVisible(True)
        for item in self._overlays[len(runs):]:
            item.setData([], [])
            item.setVisible(False)

    # --- results list --------------------------------------------------------------------------
    def selected_run(self):
        return self.list.selected_run()

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
