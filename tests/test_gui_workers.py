"""JobRunner: events arrive as signals, exceptions become messages, cancel stops between events."""

import time

import pytest

pytest.importorskip("PySide6")
from iqk_studio.gui.workers import JobRunner  # noqa: E402


def _job(n, fail_at=None, delay=0.0, closed=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad chunk {i}")
            time.sleep(delay)
            yield i
    finally:
        if closed is not None:
            closed.append(True)


def test_events_and_done(qtbot):
    r = JobRunner()
    got = []
    r.event.connect(got.append)
    with qtbot.waitSignal(r.done, timeout=5000) as blocker:
        r.start(lambda: _job(5))
    assert got == [0, 1, 2, 3, 4]
    assert blocker.args == [False]
    assert not r.busy


def test_exception_becomes_message(qtbot):
    r = JobRunner()
    msgs = []
    r.failed.connect(msgs.append)
    with qtbot.waitSignal(r.done, timeout=5000):
        r.start(lambda: _job(5, fail_at=2))
    assert msgs == ["ValueError: bad chunk 2"]


def test_cancel_stops_and_closes_job(qtbot):
    r = JobRunner()
    got, closed = [], []
    r.event.connect(got.append)
    r.event.connect(lambda ev: r.cancel() if ev == 1 else None)
    with qtbot.waitSignal(r.done, timeout=5000) as blocker:
        r.start(lambda: _job(1000, delay=0.01, closed=closed))
    assert blocker.args == [True]
    assert len(got) < 1000
    assert closed == [True]


def test_one_job_at_a_time(qtbot):
    r = JobRunner()
    assert r.start(lambda: _job(3, delay=0.05))
    assert not r.start(lambda: _job(3))
    with qtbot.waitSignal(r.done, timeout=5000):
        pass


def test_wait_returns_without_the_event_loop():
    r = JobRunner()
    r.start(lambda: _job(3, delay=0.01))
    assert r.wait(5000)


def test_cancel_after_the_last_event_is_not_a_cancel(qtbot):
    from iqk_studio.gui.workers import JobWorker

    w = JobWorker(lambda: _job(2))
    got = []
    w.event.connect(lambda ev: w.cancel() if ev == 1 else None)
    w.done.connect(got.append)
    w.run()  # on this thread: the slots run synchronously
    assert got == [False]
    w2 = JobWorker(lambda: _job(5))
    w2.event.connect(lambda ev: w2.cancel() if ev == 1 else None)
    w2.done.connect(got.append)
    w2.run()
    assert got == [False, True]
