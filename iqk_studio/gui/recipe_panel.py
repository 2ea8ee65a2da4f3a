"""The recipe editor: base type, `regex=type` rules and @headers as text; emits a parsed Recipe."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.quant.types import FTYPES
from iqk_studio.recipe import textfile
from iqk_studio.recipe.records import Lint, Recipe

DEBOUNCE_MS = 120
_SEVERITY_MARK = {"error": "\u2716", "warning": "\u26a0", "info": "\u2139"}


class RecipePanel(QWidget):
    """Text is authoritative; the base-type combo rewrites the `@base` line."""

    recipe_changed = Signal(object)  # Recipe
    syntax_error = Signal(str)
    lint_clicked = Signal(object)  # Lint

    def __init__(self, parent=None):
        super().__init__(parent)
        self.base = QComboBox()
        self.base.setEditable(False)
        for f in FTYPES:
            self.base.addItem(f.name)
        self.editor = QPlainTextEdit()
        mono = QFont("monospace")
        mono.setStyleHint(QFont.TypeWriter)
        self.editor.setFont(mono)
        self.editor.setPlaceholderText("# one rule per line, first match wins\n"
                                       "ffn_down_exps=iq4_ks\nexps=iq2_ks\n")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.lints = QListWidget()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)

        top = QHBoxLayout()
        top.addWidget(QLabel("base type"))
        top.addWidget(self.base, 1)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(QLabel("rules (llama-quantize --custom-q, one per line) and @options"))
        lay.addWidget(self.editor, 3)
        lay.addWidget(self.status)
        lay.addWidget(QLabel("lint"))
        lay.addWidget(self.lints, 2)

        self.editor.textChanged.connect(self._timer.start)
        self._timer.timeout.connect(self._parse)
        self.base.currentTextChanged.connect(self._set_base_line)
        self.lints.itemActivated.connect(lambda it: self.lint_clicked.emit(it.data(0x0100)))
        self._last: Recipe | None = None

    def set_recipe(self, recipe: Recipe) -> None:
        self.editor.setPlainText(textfile.dumps(recipe))
        self._parse()

    def recipe(self) -> Recipe | None:
        return self._last

    def _parse(self) -> None:
        text = self.editor.toPlainText()
        try:
            r = textfile.loads(text, "editor")
        except ValueError as e:
            self.status.setText(f"<span style='color:#c00'>{e}</span>")
            self.syntax_error.emit(str(e))
            return
        self.status.setText("")
        if self.base.currentText() != r.base.upper():
            self.base.blockSignals(True)
            idx = self.base.findText(r.base.upper())
            if idx >= 0:
                self.base.setCurrentIndex(idx)
            self.base.blockSignals(False)
        self._last = r
        self.recipe_changed.emit(r)

    def _set_base_line(self, name: str) -> None:
        lines = self.editor.toPlainText().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("@base"):
                lines[i] = f"@base {name}"
                break
        else:
            lines.insert(0, f"@base {name}")
        self.editor.setPlainText("\n".join(lines) + "\n")

    def show_lints(self, lints: tuple[Lint, ...]) -> None:
        self.lints.clear()
        for w in lints:
            it = QListWidgetItem(f"{_SEVERITY_MARK.get(w.severity, '')} {w.message}"
                                 + (f"  [{w.where}]" if w.where else ""))
            it.setToolTip("\n".join(w.tensors[:20]) if w.tensors else w.message)
            it.setData(0x0100, w)
            self.lints.addItem(it)
        if not lints:
            self.lints.addItem("no warnings")
