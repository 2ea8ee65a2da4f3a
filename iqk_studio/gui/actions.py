"""Recipe menu (export / import / library) and the quantize job with progress and cancel."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QVBoxLayout,
)

from iqk_studio.gui.job_panel import JobPanel
from iqk_studio.jobs.events import Finished, Progress, TensorDone
from iqk_studio.jobs.warmup import warm_types
from iqk_studio.recipe import cmdline, library


class TextDialog(QDialog):
    """Shows (read-only) or asks for (editable) a block of text, with Copy."""

    def __init__(self, title: str, text: str = "", note: str = "", editable: bool = False,
                 parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(900, 420)
        self.edit = QPlainTextEdit(text)
        self.edit.setReadOnly(not editable)
        lay = QVBoxLayout(self)
        if note:
            lab = QLabel(note)
            lab.setWordWrap(True)
            lay.addWidget(lab)
        lay.addWidget(self.edit)
        box = QDialogButtonBox(QDialogButtonBox.Ok | (QDialogButtonBox.Cancel if editable
                                                      else QDialogButtonBox.NoButton))
        copy = box.addButton("Copy", QDialogButtonBox.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.edit.toPlainText()))
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay.addWidget(box)


def export_command(win, mainline: bool) -> str | None:
    snap = win.session.flush()
    r = snap.recipe
    if r is None:
        QMessageBox.warning(win, "Cannot export", snap.error or "no recipe")
        return None
    src = str(win.session.model_path) if win.session.model_path else "MODEL.gguf"
    out = str(Path(src).with_name(Path(src).stem + f"-{r.base}.gguf"))
    try:
        if mainline:
            text, lints = cmdline.export_mainline(r, src, out)
            note = "\n".join(str(w) for w in lints)
        else:
            text, note = cmdline.export_ik(r, src, out), ""
    except ValueError as e:
        QMessageBox.warning(win, "Cannot export", str(e))
        return None
    extra = cmdline.placement_args(r)
    if extra:
        note = (note + "\n" if note else "") + f"run the model with: {extra}"
    TextDialog("llama.cpp command" if mainline else "ik_llama.cpp command", text, note,
               parent=win).exec()
    return text


def import_command(win) -> bool:
    dlg = TextDialog("Import a llama-quantize command or a custom= block",
                     note="Paste a complete llama-quantize command line (ik_llama.cpp or mainline) "
                     "or a bash custom=\"...\" block from a model card.", editable=True,
                     parent=win)
    if dlg.exec() != QDialog.Accepted:
        return False
    try:
        r, lints = cmdline.import_text(dlg.edit.toPlainText())
    except ValueError as e:
        QMessageBox.warning(win, "Cannot import", str(e))
        return False
    win.session.set_recipe(r, "import command", name="imported")
    if lints:
        win.statusBar().showMessage("; ".join(w.message for w in lints), 10000)
    return True


def fill_library_menu(win, menu) -> None:
    for name in library.names():
        a = menu.addAction(name)
        a.triggered.connect(lambda _=False, n=name: _load_library(win, n))


def _load_library(win, name: str) -> None:
    err = win.session.load_recipe_file(library.recipes_dir() / f"{name}.recipe", library=True)
    if err:
        QMessageBox.critical(win, "Cannot load recipe", err)


def quantize_job(path, plan, out, imatrix, recipe):
    """Compile the plan's types on first use (announced), then quantize."""
    from iqk_studio.gguf.types import parse_ftype
    from iqk_studio.jobs.quantize import plan_targets, quantize_model

    yield from warm_types({e.type for e in plan.entries if e.type != e.source_type})
    yield from quantize_model(path, plan_targets(plan), out, imatrix,
                              allow_requantize=recipe.allow_requantize,
                              ftype=parse_ftype(recipe.base), imatrix_path=recipe.imatrix)


class QuantizeControl:
    """Runs the quantize job for the recipe shown; a compact job panel in the status bar."""

    def __init__(self, win):
        self.win = win
        self.panel = JobPanel(compact=True)
        win.statusBar().addPermanentWidget(self.panel)
        self.runner = self.panel.runner
        self.panel.event.connect(self._on_event)
        self.panel.done.connect(self._on_done)
        self.panel.compiling.connect(lambda m: win.statusBar().showMessage(m, 0))
        self.panel.failed.connect(lambda m: QMessageBox.critical(win, "Quantize failed", m))

    def start_dialog(self) -> None:
        w = self.win
        why = w.session.flush().refusal()
        if why:
            QMessageBox.warning(w, "Cannot quantize", why)
            return
        out, _ = QFileDialog.getSaveFileName(w, "Write quantized GGUF", "", "GGUF (*.gguf)")
        if out:
            self.start(out)

    def start(self, out: str) -> bool:
        w = self.win
        snap = w.session.flush()
        why = snap.refusal()
        if why:
            w.statusBar().showMessage(f"cannot quantize: {why}", 10000)
            return False
        try:
            imatrix = w.session.imatrix(snap.recipe)
        except (OSError, ValueError) as e:
            QMessageBox.critical(w, "Cannot read imatrix", str(e))
            return False
        plan, path, recipe = snap.plan, str(w.session.model_path), snap.recipe
        return self.panel.start(lambda: quantize_job(path, plan, out, imatrix, recipe),
                                "quantizing...")

    def _on_event(self, ev) -> None:
        if isinstance(ev, TensorDone):
            self.panel.progress.setRange(0, ev.count)
            self.panel.progress.setValue(ev.index)
            self.panel.progress.setFormat(f"{ev.index}/{ev.count} {ev.name}")
        elif isinstance(ev, Progress) and ev.message:
            self.win.statusBar().showMessage(ev.message, 2000)
        elif isinstance(ev, Finished):
            self.win.statusBar().showMessage(ev.message or "quantized", 15000)

    def _on_done(self, cancelled: bool) -> None:
        if cancelled:
            self.win.statusBar().showMessage("quantization cancelled; no file was written", 10000)
