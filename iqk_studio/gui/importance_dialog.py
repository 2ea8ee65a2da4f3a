"""Run > Compare importance modes: the recipe quantized in memory with each imatrix, with the default
weights and with w = 1, evaluated over the same chunks -- the table of ik_llama.cpp discussion #359;
the runs go to the results list (and so to the size-vs-quality chart)."""

from __future__ import annotations

import math
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from iqk_studio.gui.workers import JobRunner
from iqk_studio.jobs.compare_importance import (
    ImportanceRow,
    ImportanceTable,
    compare_importance_job,
    importance_modes,
)
from iqk_studio.jobs.events import Failed, Finished, Progress


class ImportanceDialog(QDialog):
    results_ready = Signal(object)  # list of (name, RunResult): the base and each mode

    def __init__(self, model_path, plan, label: str, text: str = "", imatrix_paths=(),
                 recipe_text: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Compare importance modes \u2014 {label}")
        self.resize(760, 520)
        self.model_path, self.plan, self.label = model_path, plan, label
        self.recipe_text = recipe_text
        self.text = QLineEdit(text)
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_text)
        self.chunks = QSpinBox()
        self.chunks.setRange(1, 10000)
        self.chunks.setValue(4)
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(16, 32768)
        self.n_ctx.setValue(512)
        self.imatrix_list = QListWidget()
        self.imatrix_list.addItems([str(p) for p in imatrix_paths])
        add = QPushButton("Add imatrix...")
        add.clicked.connect(self._add_imatrix)
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: [self.imatrix_list.takeItem(self.imatrix_list.row(i))
                                        for i in self.imatrix_list.selectedItems()])
        self.use_base = QCheckBox("the unquantized model (for PPL/base - 1)")
        self.use_default = QCheckBox("no imatrix: the quantizers' default weights (w = x\u00b2 ...)")
        self.use_uniform = QCheckBox("no imatrix: w = 1")
        for c in (self.use_base, self.use_default, self.use_uniform):
            c.setChecked(True)
        self.run_btn = QPushButton("Run")
        self.run_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(lambda: self.runner.cancel())
        self.progress = QProgressBar()
        self.status = QLabel(f"{plan.total_bytes / 2**20:.2f} MiB, {plan.bpw:.4f} bpw")
        self.table = QTreeWidget()
        self.table.setRootIsDecorated(False)
        self.table.setHeaderLabels(["importance", "PPL", "\u00b1", "PPL/base - 1", "seconds"])
        self.runner = JobRunner(self)
        self.runner.event.connect(self._on_event)
        self.runner.failed.connect(lambda m: self.status.setText(f"failed: {m}"))
        self.runner.done.connect(self._done)
        self.result: ImportanceTable | None = None

        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.text, 1)
        row.addWidget(browse)
        form.addRow("text", row)
        form.addRow("chunks", self.chunks)
        form.addRow("n_ctx", self.n_ctx)
        ims = QHBoxLayout()
        ims.addWidget(self.imatrix_list, 1)
        col = QVBoxLayout()
        col.addWidget(add)
        col.addWidget(remove)
        col.addStretch(1)
        ims.addLayout(col)
        form.addRow("imatrix files", ims)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        for c in (self.use_base, self.use_default, self.use_uniform):
            lay.addWidget(c)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        buttons.addWidget(self.progress, 1)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.table, 1)

    def _browse_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Evaluation text", "", "Text (*.raw *.txt);;All (*)")
        if path:
            self.text.setText(path)

    def _add_imatrix(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add an imatrix", "",
                                              "imatrix (*.dat *.gguf);;All (*)")
        if path:
            self.imatrix_list.addItem(path)

    def start(self) -> bool:
        from iqk_studio.gguf.imatrix import load_imatrix

        text = self.text.text().strip()
        if not text or not Path(text).is_file():
            self.status.setText("choose an evaluation text file (e.g. wiki.test.raw)")
            return False
        try:
            ims = [(Path(p).name, load_imatrix(p)) for p in
                   (self.imatrix_list.item(i).text() for i in range(self.imatrix_list.count()))]
        except (OSError, ValueError) as e:
            QMessageBox.critical(self, "Cannot read imatrix", str(e))
            return False
        modes = importance_modes(ims, self.use_default.isChecked(), self.use_uniform.isChecked())
        if not modes:
            self.status.setText("choose at least one importance mode")
            return False
        self.table.clear()
        self.result = None
        args = (self.model_path, self.plan, text, modes, self.n_ctx.value(), self.chunks.value(),
                self.use_base.isChecked(), self.label, self.recipe_text)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        return self.runner.start(lambda: compare_importance_job(*args))

    def _on_event(self, ev) -> None:
        if isinstance(ev, Progress):
            if ev.total:
                self.progress.setMaximum(ev.total)
                self.progress.setValue(ev.done)
            self.status.setText(ev.message)
        elif isinstance(ev, ImportanceRow):
            self._add_row(ev.label, ev.ppl, ev.ppl_err, ev.quality_loss, ev.seconds, ev.note)
        elif isinstance(ev, Failed):
            self.status.setText(ev.message)
        elif isinstance(ev, Finished):
            self.result = ev.result
            if ev.result.base is not None:
                b = ev.result.base
                self._add_row("unquantized (the file as stored)", b.ppl, b.ppl_err, math.nan,
                              b.seconds, "", top=True)
            self.status.setText(ev.message)
            self.results_ready.emit(ev.result.results())

    def _add_row(self, label, ppl, err, loss, seconds, note, top=False) -> None:
        f = lambda v, spec: "-" if v != v else format(v, spec)  # noqa: E731 - nan -> "-"
        it = QTreeWidgetItem([label, f(ppl, ".4f"), f(err, ".4f"),
                              "" if loss != loss else f"{100 * loss:+.2f}%", f"{seconds:.0f}"])
        if note:
            for c in range(5):
                it.setToolTip(c, note)
        if top:
            self.table.insertTopLevelItem(0, it)
        else:
            self.table.addTopLevelItem(it)

    def _done(self, _stopped: bool) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)

    def reject(self) -> None:  # closing cancels a running job and waits for its thread
        self.runner.cancel()
        self.runner.wait(60000)
        super().reject()


def open_dialog(win) -> ImportanceDialog | None:
    """The dialog for the main window's current recipe; its runs go to the results list."""
    s = win.session
    snap = s.flush()
    why = snap.refusal()
    if why:
        QMessageBox.warning(win, "Cannot compare importance modes", why)
        return None
    r = snap.recipe
    ev = getattr(win, "eval_view", None)
    text = ev.settings.text.text().strip() if ev is not None else ""
    dlg = ImportanceDialog(s.model_path, snap.plan, s.recipe_name or "recipe", text,
                           [r.imatrix] if r.imatrix else [], snap.text, win)
    dlg.results_ready.connect(lambda runs: [win.results.add_result(res, name)
                                            for name, res in runs])
    return dlg
