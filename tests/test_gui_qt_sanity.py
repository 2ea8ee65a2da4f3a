"""Guards against a Qt binding that corrupts Python refcounts (PySide6 6.12.0 over-releases True in
pyqtgraph's setData, which crashes the app after some thousand plot updates)."""

import gc
import sys

import numpy as np
import pytest

pytest.importorskip("PySide6")
import pyqtgraph as pg


def test_plot_updates_keep_true_alive(qtbot):
    w = pg.PlotWidget()
    qtbot.addWidget(w)
    curve = w.plot([0.0, 1.0], [0.0, 1.0])
    # garbage of earlier tests (e.g. lists of bools) must not be freed inside the measurement
    gc.collect()
    gc.disable()
    try:
        before = sys.getrefcount(True)
        for i in range(500):
            curve.setData(np.arange(3.0), np.arange(3.0) + i)
            w.setYRange(0, i + 3)
        drift = before - sys.getrefcount(True)
    finally:
        gc.enable()
    assert drift < 100, f"True lost {drift} references in 500 plot updates: broken Qt binding"
