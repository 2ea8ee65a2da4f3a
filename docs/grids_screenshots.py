"""Screenshots of the Grids tab for docs/: the study's value-grid plot and a tensor's iq4k variant /
fp4 fit statistics, taken from the real window (see shared/docs/gui-testing.md):

    Xvfb :97 -screen 0 1920x1080x24 &
    DISPLAY=:97 .venv/bin/python docs/grids_screenshots.py [MODEL] [TENSOR] [--model-stats]

MODEL defaults to the demo model, TENSOR to blk.0.ffn_down.weight. Writes docs/grids-values.png
and docs/grids-variants.png; with ImageMagick at /usr/bin/convert they are reduced to 64 colours.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from PySide6.QtWidgets import QApplication

from iqk_studio.demo import resolve_model_arg
from iqk_studio.gui.main_window import MainWindow

DOCS = Path(__file__).resolve().parent
CONVERT = Path("/usr/bin/convert")  # another `convert` may come first on PATH


def settle(app, seconds: float = 0.5, until=None, timeout: float = 600.0) -> None:
    """Process events for `seconds`, or until `until()` is true (at most `timeout`)."""
    end = time.monotonic() + (timeout if until else seconds)
    while time.monotonic() < end:
        app.processEvents()
        if until is not None and until():
            break
        time.sleep(0.02)
    for _ in range(10):
        app.processEvents()


def shoot(app, win, name: str) -> Path:
    settle(app)
    path = DOCS / name
    win.grab().save(str(path), "PNG")
    if CONVERT.exists():
        subprocess.run([str(CONVERT), str(path), "-strip", "-colors", "64", str(path)], check=True)
    print(f"{path}: {path.stat().st_size // 1024} KiB")
    return path


def select_tensor(win, name: str) -> None:
    tv = win.tensors_view
    for r in range(tv.proxy.rowCount()):
        idx = tv.proxy.index(r, 0)
        if tv.table_model.name_at(tv.proxy.mapToSource(idx).row()) == name:
            tv.table.setCurrentIndex(idx)
            return
    raise SystemExit(f"no tensor named {name}")


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    model = str(resolve_model_arg(args[0] if args else "demo"))
    tensor = args[1] if len(args) > 1 else "blk.0.ffn_down.weight"
    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = MainWindow()
    win.resize(1880, 960)
    win.show()
    if not win.open_model(model):
        return 1
    settle(app, 1.0)
    select_tensor(win, tensor)
    gv = win.grids_view
    win.tabs.setCurrentWidget(gv)
    gv.tabs.setCurrentWidget(gv.grid_plot)
    shoot(app, win, "grids-values.png")
    stats = gv.stats_view
    gv.tabs.setCurrentWidget(stats)
    settle(app, until=lambda: stats.stats is not None)
    if "--model-stats" in argv:
        stats.analyse_model()
        settle(app, until=lambda: not stats.runner.busy, timeout=3600)
    shoot(app, win, "grids-variants.png")
    win.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
