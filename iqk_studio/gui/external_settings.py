"""The user's llama-perplexity for the Evaluate tab: where it is, its flavour and build (detected
on a thread with --version / --help), extra arguments passed untouched, stop at a NaN chunk."""

from __future__ import annotations

import shlex
import threading

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QToolButton,
    QWidget,
)

TOOL = "llama-perplexity"


class ExternalSettings(QWidget):
    """The user's llama-perplexity: where it is (a build folder or the file; empty: $IQK_LLAMA_BIN,
    then PATH), its flavour and build as detected (in the background), extra arguments passed
    untouched, and whether a NaN chunk stops the run."""

    detected = Signal(str, object)  # where, Binary or an error message

    def __init__(self, parent=None):
        super().__init__(parent)
        self.where = QLineEdit()
        self.where.setPlaceholderText("build folder or llama-perplexity file (empty: "
                                      "$IQK_LLAMA_BIN, then PATH)")
        browse = QToolButton()
        browse.setText("...")
        menu = QMenu(browse)
        menu.addAction("Build folder...", self._browse_folder)
        menu.addAction("llama-perplexity file...", self._browse_file)
        browse.setMenu(menu)
        browse.setPopupMode(QToolButton.InstantPopup)
        self.flavour = QLabel("")
        self.args = QLineEdit()
        self.args.setPlaceholderText("extra arguments, passed as typed: -ngl 99 -fa -fmoe "
                                     "-ctk q8_0 -ot exps=CPU -t 32")
        self.stop_nan = QCheckBox("stop at a NaN chunk")
        self.stop_nan.setToolTip("stop the tool at the first chunk whose perplexity is NaN or "
                                 "Inf (unticked: the chunk is flagged and you choose)")
        g = QGridLayout(self)
        g.setContentsMargins(0, 0, 0, 0)
        g.addWidget(QLabel("binary"), 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.where, 1)
        row.addWidget(browse)
        g.addLayout(row, 0, 1)
        g.addWidget(self.flavour, 0, 2)
        g.addWidget(QLabel("arguments"), 1, 0)
        g.addWidget(self.args, 1, 1)
        g.addWidget(self.stop_nan, 1, 2)
        g.setColumnStretch(1, 1)
        self.binary = None  # external.binaries.Binary of where.text(), once detected
        self._checked = None  # the `where` the shown flavour belongs to
        self.where.editingFinished.connect(self.detect)
        self.detected.connect(self._on_detected)

    def extra_args(self) -> tuple[list[str] | None, str]:
        try:
            return shlex.split(self.args.text()), ""
        except ValueError as e:
            return None, f"extra arguments: {e}"

    def detect(self) -> None:
        """Ask the binary its flavour and build on a thread (--version, --help)."""
        where = self.where.text().strip()
        if where == self._checked:
            return
        self._checked, self.binary = where, None
        self.flavour.setText("checking...")

        def work():
            from iqk_studio.external.binaries import BinaryNotFound, detect

            try:
                got = detect(TOOL, where or None)
            except (BinaryNotFound, OSError) as e:
                got = str(e)
            try:
                self.detected.emit(where, got)
            except RuntimeError:  # the window closed meanwhile
                pass

        threading.Thread(target=work, name="detect-llama", daemon=True).start()

    def _on_detected(self, where: str, got) -> None:
        if where != self.where.text().strip():
            return  # an older path's answer
        from iqk_studio.gui.external_eval import describe

        if isinstance(got, str):
            self.binary = None
            self.flavour.setText("<span style='color:#c00'>not found</span>")
            self.flavour.setToolTip(got)
            return
        self.binary = got
        self.flavour.setText(describe(got) if got.flavour else
                             f"{describe(got)} (flavour unknown)")
        self.flavour.setToolTip(str(got.path))

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "llama.cpp / ik_llama.cpp build folder",
                                                self.where.text())
        if path:
            self.where.setText(path)
            self.detect()

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "llama-perplexity", self.where.text())
        if path:
            self.where.setText(path)
            self.detect()
