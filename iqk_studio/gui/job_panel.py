"""The one job panel: Run / Cancel / progress / status over a JobRunner, used by every tab that runs
a job (evaluation, sensitivity, quantize)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.warmup import Compiling


def fmt_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class JobPanel(QWidget):
    """Starts one job at a time; resets its progress and status at every start.

    Signals: event(object) for every record the job yields, finished(object) with a Finished
    event's result, done(bool stopped early), compiling(str) when kernels are compiled (for the
    status bar). `run_clicked` is the Run button: the owner builds the job and calls start().
    """

    event = Signal(object)
    finished = Signal(object)
    done = Signal(bool)
    compiling = Signal(str)
    failed = Signal(str)  # an exception or a Failed event, as one line
    run_clicked = Signal()

    def __init__(self, run_text: str = "Run", parent=None, compact: bool = False):
        super().__init__(parent)
        self.run_btn = QPushButton(run_text)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.progress, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.status)
        if compact:  # in a status bar: no Run button, no status line, shown only while running
            self.run_btn.hide()
            self.status.hide()
            self.progress.setMaximumWidth(260)
            self.hide()
        self.compact = compact
        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(self._fail)
        self.runner.done.connect(self._on_done)
        self.run_btn.clicked.connect(self.run_clicked)
        self.cancel_btn.clicked.connect(self.runner.cancel)

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def cancel(self) -> None:
        self.runner.cancel()

    def set_status(self, text: str, error: bool = False) -> None:
        """One line in the panel (a long report stays in the tooltip, never pushes the plot)."""
        import html

        line = text.strip().splitlines()[0] if text.strip() else ""
        line = html.escape(line if len(line) <= 200 else line[:199] + "\u2026")
        self.status.setText(f"<span style='color:#c00'>{line}</span>" if error else line)
        self.status.setToolTip(text)

    def start(self, make_job: Callable[[], Iterator], message: str = "starting...") -> bool:
        if not self.runner.start(make_job):
            self.set_status("another job of this kind is running", error=True)
            return False
        self.progress.setRange(0, 0)  # busy until the first Progress with a total
        self.progress.setValue(0)
        self.progress.setFormat(message)
        self.set_status(message)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        if self.compact:
            self.show()
        return True

    def _on_event(self, ev) -> None:
        if isinstance(ev, Progress):
            if ev.total:
                self.progress.setRange(0, ev.total)
                self.progress.setValue(min(ev.done, ev.total))
            if ev.message:
                self.progress.setFormat(ev.message[:80])
                if not ev.total:
                    self.set_status(ev.message)
        elif isinstance(ev, Compiling):
            self.progress.setFormat(ev.message)
            self.set_status(ev.message)
            self.compiling.emit(ev.message)
        elif isinstance(ev, Failed):
            self._fail(ev.message)
        elif isinstance(ev, Finished):
            if ev.message:
                self.set_status(ev.message)
            self.finished.emit(ev.result)
        self.event.emit(ev)

    def _fail(self, message: str) -> None:
        self.set_status(message, error=True)
        self.failed.emit(message)

    def _on_done(self, stopped: bool) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        if stopped:
            self.progress.setFormat("cancelled")
            self.set_status(self.status.toolTip() + "  (cancelled)")
        elif self.progress.maximum():
            self.progress.setValue(self.progress.maximum())
        if self.compact:
            self.hide()
        self.done.emit(stopped)
