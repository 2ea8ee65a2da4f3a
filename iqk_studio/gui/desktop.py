"""Desktop conventions: remembered settings (QSettings: geometry, splitters, last model, recipe,
text, n_ctx, chunks), recent files, Help > About with versions."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QMessageBox

MAX_RECENT = 8


def _list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def recent(win) -> list[str]:
    return _list(win.settings.value("recent_models")) if win.settings is not None else []


def add_recent(win, path: str) -> None:
    if win.settings is None:
        return
    path = str(Path(path).resolve())
    items = [path] + [p for p in recent(win) if p != path]
    win.settings.setValue("recent_models", items[:MAX_RECENT])
    win.settings.setValue("last_dir", str(Path(path).parent))
    fill_recent(win)


def fill_recent(win) -> None:
    menu = win.recent_menu
    menu.clear()
    items = [p for p in recent(win) if Path(p).exists()]
    for p in items:
        a = menu.addAction(Path(p).name)
        a.setToolTip(p)
        a.triggered.connect(lambda _=False, path=p: win.open_model(path))
    menu.setEnabled(bool(items))


def last_dir(win) -> str:
    return str(win.settings.value("last_dir", "")) if win.settings is not None else ""


def save(win, settings) -> None:
    settings.setValue("geometry", win.saveGeometry())
    settings.setValue("window_state", win.saveState())
    settings.setValue("main_split", win.split.saveState())
    settings.setValue("recipe_split", win.recipe_panel.split.saveState())
    settings.setValue("eval_split", win.eval_view.split.saveState())
    settings.setValue("last_model", win.session.model_path or "")
    settings.setValue("recipe_text", win.session.text)
    settings.setValue("recipe_name", win.session.recipe_name)
    settings.setValue("recipe_path", win.session.recipe_path or "")
    settings.setValue("recipe_clean", win.session.undo_stack.isClean())
    for k, v in win.eval_view.settings.state().items():
        settings.setValue(f"eval/{k}", v)
    settings.setValue("tab", win.tabs.currentIndex())
    if getattr(win.results.source, "persistent", False):  # ids of this store's runs
        for k, v in win.eval_view.list.state().items():
            settings.setValue(f"results/{k}", v)
    settings.sync()


def restore(win, settings) -> None:
    """Window layout and evaluation settings (the model and recipe: see restore_session)."""
    for key, fn in (("geometry", win.restoreGeometry), ("window_state", win.restoreState),
                    ("main_split", win.split.restoreState),
                    ("recipe_split", win.recipe_panel.split.restoreState),
                    ("eval_split", win.eval_view.split.restoreState)):
        v = settings.value(key)
        if isinstance(v, QByteArray) and not v.isEmpty():
            fn(v)
    st = {}
    for k in ("text", "n_ctx", "chunks", "metric", "weights", "base", "engine", "llama_bin",
              "llama_args", "stop_nan"):
        v = settings.value(f"eval/{k}")
        if v is not None:
            st[k] = v
    win.eval_view.settings.restore(st)
    if getattr(win.results.source, "persistent", False):
        rs = {k: settings.value(f"results/{k}") for k in ("models", "kinds", "baseline")}
        rs["shown"] = _list(settings.value("results/shown"))
        win.eval_view.list.restore(rs)
    tab = settings.value("tab")
    if tab is not None and 0 <= int(tab) < win.tabs.count():
        win.tabs.setCurrentIndex(int(tab))


def restore_session(win, settings) -> None:
    """Reopen the last model and the recipe as it was left (at start-up, when none is given)."""
    text = str(settings.value("recipe_text") or "")
    if text.strip():
        path = str(settings.value("recipe_path") or "") or None
        win.session.set_text(text, "restore", name=str(settings.value("recipe_name") or ""),
                             clean=str(settings.value("recipe_clean")).lower() == "true")
        win.session.recipe_path = path
    last = str(settings.value("last_model") or "")
    if last and Path(last).is_file():
        win.open_model(last)


def versions() -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for dist in ("iqk-studio", "numpy", "numba", "gguf", "PySide6-Essentials", "pyqtgraph",
                 "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    from PySide6 import QtCore

    out["Qt"] = QtCore.qVersion()
    return out


def about_text() -> str:
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in versions().items())
    return ("<b>iqk-studio</b> — design, size, quantize and evaluate GGUF quantization mixes "
            "for llama.cpp and ik_llama.cpp (exact against ik_llama.cpp 8337e4cd3)."
            f"<table>{rows}</table>")


def about(win) -> None:
    QMessageBox.about(win, "About iqk-studio", about_text())
