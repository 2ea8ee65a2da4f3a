"""`iqk-studio [MODEL]`: start the desktop app, optionally on a model (`demo` = the demo model).

Kernels are not compiled at start-up: each type's kernels compile on first use (announced in the
status bar, cached on disk by numba)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqk-studio", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="GGUF file (first split part), or `demo`")
    parser.add_argument("--recipe", help="recipe file to load")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore the remembered model, recipe and window layout")
    parser.add_argument("--self-test", nargs="?", const="", metavar="DIR",
                        help="check this install: open, plan, evaluate and quantize a tiny model "
                        "made on the spot (in DIR, else a temporary folder) in a window that "
                        "remembers nothing; exit status 0 when every step passes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from PySide6.QtCore import QSettings
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from iqk_studio import resources_dir
    from iqk_studio.gui import desktop
    from iqk_studio.gui.main_window import MainWindow
    from iqk_studio.gui.results_model import ResultsModel
    from iqk_studio.gui.store_source import StoreSource

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("iqk-studio")
    app.setOrganizationName("iqk-studio")
    app.setWindowIcon(QIcon(str(resources_dir() / "icons" / "iqk-studio.png")))
    if args.self_test is not None:
        from iqk_studio.gui import selftest

        return selftest.main(args.self_test or None)
    settings = QSettings()
    if args.fresh:
        settings.clear()
    # every run is kept in the results store (or in memory, saying why, when it cannot be opened)
    win = MainWindow(settings=settings, ask_to_save=True,
                     results=ResultsModel(StoreSource.open()))
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
    elif not args.recipe:
        desktop.restore_session(win, settings)
    if args.recipe:
        err = win.session.load_recipe_file(args.recipe)
        if err:
            print(f"iqk-studio: cannot load recipe: {err}", file=sys.stderr)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
