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
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.events import Failed, Finished, Progress, TensorDone
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
    r = win.recipe_panel.recipe()
    if r is None:
        return None
    src = str(win.model_path) if win.model_path else "MODEL.gguf"
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
    win.recipe_panel.set_recipe(r)
    if lints:
        win.statusBar().showMessage("; ".join(w.message for w in lints), 10000)
    return True


def fill_library_menu(win, menu) -> None:
    for name in library.names():
        a = menu.addAction(name)
        a.triggered.connect(lambda _=False, n=name: win.recipe_panel.set_recipe(
            library.load_named(n)))


class QuantizeControl:
    """Runs the quantize job for the current plan; a progress bar and Cancel in the status bar."""

    def __init__(self, win):
        self.win = win
        self.runner = JobRunner(win)
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(320)
        self.bar.hide()
        self.cancel = QPushButton("Cancel")
        self.cancel.hide()
        win.statusBar().addPermanentWidget(self.bar)
        win.statusBar().addPermanentWidget(self.cancel)
        self.cancel.clicked.connect(self.runner.cancel)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(lambda m: QMessageBox.critical(win, "Quantize failed", m))
        self.runner.done.connect(self._on_done)
        self._count = 0

    def start_dialog(self) -> None:
        w = self.win
        if w.model is None or w.plan is None:
            return
        if w.plan.errors:
            QMessageBox.warning(w, "Cannot quantize", "\n".join(e.message for e in w.plan.errors))
            return
        out, _ = QFileDialog.getSaveFileName(w, "Write quantized GGUF", "", "GGUF (*.gguf)")
        if out:
            self.start(out)

    def start(self, out: str) -> bool:
        from iqk_studio.gguf.imatrix import load_imatrix
        from iqk_studio.gguf.types import parse_ftype
        from iqk_studio.jobs.quantize import plan_targets, quantize_model
        w = self.win
        r = w.recipe_panel.recipe()
        imatrix = None
        if r.imatrix:
            try:
                imatrix = load_imatrix(r.imatrix)
            except (OSError, ValueError) as e:
                QMessageBox.critical(w, "Cannot read imatrix", str(e))
                return False
        plan, path = w.plan, str(w.model_path)
        self._count = len(plan.entries)
        ok = self.runner.start(lambda: quantize_model(
            path, plan_targets(plan), out, imatrix, allow_requantize=r.allow_requantize,
            ftype=parse_ftype(r.base), imatrix_path=r.imatrix))
        if ok:
            self.bar.setRange(0, self._count)
            self.bar.setValue(0)
            self.bar.show()
            self.cancel.show()
        return ok

    def _on_event(self, ev) -> None:
        if isinstance(ev, TensorDone):
            self.bar.setValue(ev.index)
            self.bar.setFormat(f"{ev.index}/{ev.count} {ev.name}")
        elif isinstance(ev, Progress) and ev.message:
            self.win.statusBar().showMessage(ev.message, 2000)
        elif isinstance(ev, Finished):
            self.win.statusBar().showMessage(ev.message or "quantized", 15000)
        elif isinstance(ev, Failed):
            QMessageBox.critical(self.win, "Quantize failed", ev.message)

    def _on_done(self, cancelled: bool) -> None:
        self.bar.hide()
        self.cancel.hide()
        if cancelled:
            self.win.statusBar().showMessage("quantization cancelled; no file was written", 10000)
