"""The one adapter that runs a job generator in a QThread and turns its events into Qt signals."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal


class JobWorker(QObject):
    """Iterates `make_job()` on a worker thread; checks the cancel flag between events.

    Signals: event(object) for every yielded record, failed(str) for an exception (one line for the
    user; the traceback goes to `details`), done(bool stopped_early) at the end.
    """

    event = Signal(object)
    failed = Signal(str)
    done = Signal(bool)

    def __init__(self, make_job: Callable[[], Iterator]):
        super().__init__()
        self._make_job = make_job
        self._cancel = threading.Event()
        self.details = ""

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:
        job = None
        stopped = False  # True only when the job was stopped before its end
        try:
            job = self._make_job()
            for ev in job:
                if self._cancel.is_set():
                    stopped = True
                    break
                self.event.emit(ev)
        except Exception as e:  # reported to the user as a message, never a crash
            self.details = traceback.format_exc()
            self.failed.emit(f"{type(e).__name__}: {e}")
        finally:
            if job is not None and hasattr(job, "close"):
                job.close()  # runs the job's cleanup (temp files) on cancel
            self.done.emit(stopped)  # a cancel that came after the last event changed nothing
            thread = QThread.currentThread()
            app = QCoreApplication.instance()
            if app is None or thread is not app.thread():
                thread.quit()  # so JobRunner.wait() returns without the GUI loop


class JobRunner(QObject):
    """Owns one worker thread at a time (one compute job of a kind runs at a time)."""

    event = Signal(object)
    failed = Signal(str)
    done = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: JobWorker | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, make_job: Callable[[], Iterator]) -> bool:
        if self.busy:
            return False
        self._thread = QThread()
        self._worker = JobWorker(make_job)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.event.connect(self.event)
        self._worker.failed.connect(self.failed)
        self._worker.done.connect(self._on_done)
        self._thread.start()
        return True

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def wait(self, ms: int = 30000) -> bool:
        return self._thread.wait(ms) if self._thread is not None else True

    def _on_done(self, stopped: bool) -> None:
        # Keep both references until the thread has ended: dropping the worker here while its
        # run() is still unwinding on the worker thread would delete a QObject under it (the
        # last reference then goes away on the wrong thread). After wait() the worker and the
        # thread are released here, on the GUI thread, with nothing left running in them.
        thread, worker = self._thread, self._worker
        self._thread = None
        self._worker = None
        if thread is not None:
            thread.quit()
            thread.wait()
        del worker, thread
        self.done.emit(stopped)
