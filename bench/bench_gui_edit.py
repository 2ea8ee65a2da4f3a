"""What one recipe edit costs the window (re-plan + table + summary + lint + repaint), median of
many edits, on header-only skeletons of Qwen3-30B-A3B (579 tensors) and DeepSeek-V3 (1,147).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_gui_edit.py [--runs 40]

Baselines measured in the same run: plan() alone, and the old path that reset the table model
on every edit (which made the proxy re-sort every row). Targets: < 30 ms per edit on the
579-tensor model, < 60 ms on the 1,147-tensor one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_plan import edits  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from iqk_studio.gguf.skeleton import write_preset  # noqa: E402
from iqk_studio.gui.main_window import MainWindow  # noqa: E402
from iqk_studio.gui.tensor_table import Column  # noqa: E402
from iqk_studio.recipe import plan, textfile  # noqa: E402


def timed_edits(app, win, texts) -> float:
    """Median ms from a new recipe text to a repainted window: CPU time of this (the GUI)
    thread, which other processes sharing the cores do not inflate."""
    out = []
    for t in texts:
        t0 = time.thread_time()
        win.session.set_text(t, "edit")
        app.processEvents()
        out.append(time.thread_time() - t0)
    return statistics.median(out) * 1e3


def bench(app, name: str, path: Path, runs: int, sort_col: Column) -> tuple[float, float]:
    win = MainWindow()
    win.resize(1400, 860)
    win.show()
    assert win.open_model(str(path)), path
    win.tabs.setCurrentWidget(win.tensors_view)
    win.tensors_view.table.sortByColumn(sort_col, Qt.AscendingOrder)
    texts = [textfile.dumps(r) for r in edits(runs)]
    app.processEvents()
    timed_edits(app, win, texts[:3])  # warm caches
    new = timed_edits(app, win, texts)
    tm = win.tensors_view.table_model
    tm.set_plan = tm.reset  # the old path: a model reset on every edit
    old = timed_edits(app, win, texts)
    t = []
    for r in edits(runs):
        t0 = time.thread_time()
        plan(win.session.model, r)
        t.append(time.thread_time() - t0)
    alone = statistics.median(t) * 1e3
    n = len(win.session.snapshot.plan.entries)
    print(f"{name:<14} {n:>5} tensors, sorted by {sort_col.name.lower():<5}: CPU per edit "
          f"{new:6.1f} ms (in place)  {old:6.1f} ms (reset, old)  plan() alone {alone:5.1f} ms"
          f"  -> {old / new:4.1f}x faster")
    win.session.close_model()
    win.close()
    return new, old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])
    res = {}
    with tempfile.TemporaryDirectory() as d:
        for preset, label in (("qwen3-30b-a3b", "Qwen3-30B-A3B"), ("deepseek-v3", "DeepSeek-V3")):
            path = write_preset(preset, Path(d) / f"{preset}.gguf")
            for col in (Column.NAME, Column.BYTES):
                res[(label, col)] = bench(app, label, path, args.runs, col)
    ok = {True: "ok", False: "MISSED"}
    q = max(res[("Qwen3-30B-A3B", c)][0] for c in (Column.NAME, Column.BYTES))
    d = max(res[("DeepSeek-V3", c)][0] for c in (Column.NAME, Column.BYTES))
    print(f"targets: < 30 ms on 579 tensors ({ok[q < 30]}, worst {q:.1f} ms), "
          f"< 60 ms on 1,147 ({ok[d < 60]}, worst {d:.1f} ms)")


if __name__ == "__main__":
    main()
