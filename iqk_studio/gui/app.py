"""`iqk-studio [MODEL]`: start the desktop app, optionally on a model (`demo` = the demo model)."""

from __future__ import annotations

import argparse
import sys
import threading


def warm_kernels(stop: threading.Event | None = None) -> int:
    """Compile (or load from cache) every registered kernel on a tiny input; returns the count."""
    import numpy as np

    from iqk_studio.quant import api, registry
    from iqk_studio.quant.types import by_name
    n = 0
    x = np.linspace(-1, 1, 256, dtype=np.float32)[None, :]
    for name in sorted(registry.quantizers()):
        if stop is not None and stop.is_set():
            break
        t = by_name(name)
        if 256 % t.block:
            continue
        try:
            raw = api.quantize(x, name)
            api.dequantize(raw, name, 256)
            n += 1
        except Exception:  # a broken kernel shows up when used, with its own message
            continue
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iqk-studio", description=__doc__)
    parser.add_argument("model", nargs="?", help="GGUF file (first split part), or `demo`")
    parser.add_argument("--recipe", help="recipe file to load")
    args = parser.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from iqk_studio.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("iqk-studio")
    win = MainWindow()
    app.aboutToQuit.connect(win.shutdown)
    win.show()
    if args.model:
        from iqk_studio.demo import resolve_model_arg
        try:
            path = resolve_model_arg(args.model)
        except FileNotFoundError as e:
            print(f"iqk-studio: {e}", file=sys.stderr)
            return 1
        win.open_model(str(path))
    if args.recipe:
        from iqk_studio.recipe import textfile
        try:
            win.recipe_panel.set_recipe(textfile.load(args.recipe))
        except (OSError, ValueError) as e:
            print(f"iqk-studio: cannot load recipe: {e}", file=sys.stderr)
    stop = threading.Event()
    win.statusBar().showMessage("Compiling kernels...", 5000)
    threading.Thread(target=warm_kernels, args=(stop,), daemon=True, name="warm-kernels").start()
    rc = app.exec()
    stop.set()
    return rc


if __name__ == "__main__":
    sys.exit(main())
