"""The recipe editor: base type, imatrix, `regex=type` rules and @headers as text. A view of the
session: every change goes through the session's undo stack, the lint comes from its snapshot."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.session import Session, Snapshot
from iqk_studio.quant.types import FTYPES
from iqk_studio.recipe.records import Lint

_SEVERITY_MARK = {"error": "\u2716", "warning": "\u26a0", "info": "\u2139"}
_ROLE_LINT = Qt.UserRole


def sorted_ftype_names() -> list[str]:
    """llama-quantize's type names, sorted as people look for them (Q2_K before Q10_X)."""
    import re

    def key(name: str):
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name.upper())]

    return sorted({f.name for f in FTYPES}, key=key)


class RecipeEditor(QPlainTextEdit):
    """Undo/redo go to the session's stack (the widget's own history is off); dropped files go
    to the window (opened as a model or a recipe), never into the text."""

    files_dropped = Signal(list)

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.setUndoRedoEnabled(False)

    def event(self, e) -> bool:
        if e.type() == QEvent.ShortcutOverride and (
                e.matches(QKeySequence.Undo) or e.matches(QKeySequence.Redo)):
            e.ignore()  # let the Edit menu's actions (the session's stack) have the key
            return False
        return super().event(e)

    def keyPressEvent(self, e) -> None:  # noqa: N802 (Qt API)
        if e.matches(QKeySequence.Undo):
            self.session.undo_stack.undo()
        elif e.matches(QKeySequence.Redo):
            self.session.undo_stack.redo()
        else:
            super().keyPressEvent(e)

    def dragEnterEvent(self, e) -> None:  # noqa: N802
        if e.mimeData().hasUrls():
            e.acceptProposedAction()
        else:
            super().dragEnterEvent(e)

    def dragMoveEvent(self, e) -> None:  # noqa: N802
        if e.mimeData().hasUrls():
            e.acceptProposedAction()
        else:
            super().dragMoveEvent(e)

    def dropEvent(self, e) -> None:  # noqa: N802
        if e.mimeData().hasUrls():
            e.acceptProposedAction()
            self.files_dropped.emit([u.toLocalFile() for u in e.mimeData().urls()
                                     if u.isLocalFile()])
        else:
            super().dropEvent(e)


class TypeBox(QComboBox):
    """A sorted, searchable list of type names: type to filter (substring, any case)."""

    def __init__(self, names: list[str], parent=None):
        super().__init__(parent)
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.NoInsert)
        self.addItems(names)
        proxy = QSortFilterProxyModel(self)
        proxy.setSourceModel(self.model())
        proxy.setFilterCaseSensitivity(Qt.CaseInsensitive)
        comp = QCompleter(proxy, self)
        comp.setCompletionMode(QCompleter.UnfilteredPopupCompletion)
        comp.setCaseSensitivity(Qt.CaseInsensitive)
        self.setCompleter(comp)
        self.lineEdit().textEdited.connect(proxy.setFilterFixedString)
        self.lineEdit().installEventFilter(self)
        comp.activated.connect(lambda text: self.setCurrentIndex(self.findText(text)))

    def eventFilter(self, obj, e) -> bool:  # noqa: N802 (Qt API)
        if obj is self.lineEdit() and e.type() == QEvent.FocusIn:
            QTimer.singleShot(0, obj.selectAll)  # typing replaces the name: a search
        return super().eventFilter(obj, e)

    def set_current(self, name: str) -> None:
        idx = self.findText(name, Qt.MatchFixedString)  # case-insensitive
        self.blockSignals(True)
        if idx >= 0:
            self.setCurrentIndex(idx)
        else:
            self.setEditText(name)
        self.blockSignals(False)


class RecipePanel(QWidget):
    lint_clicked = Signal(object)  # Lint

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.title = QLabel("recipe")
        self.title.setStyleSheet("font-weight: bold")
        self.title.setWordWrap(True)
        self.base = TypeBox(sorted_ftype_names())
        self.base.setToolTip("llama-quantize's type argument; type to search")
        self.imatrix = QLineEdit()
        self.imatrix.setPlaceholderText("no imatrix")
        self.imatrix.setReadOnly(True)
        im_browse = QPushButton("...")
        im_browse.setToolTip("choose the imatrix file (.dat or .gguf): sets the @imatrix line")
        im_browse.setMaximumWidth(32)
        im_clear = QPushButton("\u00d7")
        im_clear.setToolTip("no imatrix: removes the @imatrix line")
        im_clear.setMaximumWidth(28)
        self.editor = RecipeEditor(session)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.TypeWriter)
        self.editor.setFont(mono)
        self.editor.setPlaceholderText("# one rule per line, first match wins\n"
                                       "ffn_down_exps=iq4_ks\nexps=iq2_ks\n")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.lints = QListWidget()
        self.lints.setWordWrap(True)

        top = QHBoxLayout()
        top.addWidget(QLabel("base"))
        top.addWidget(self.base, 1)
        im = QHBoxLayout()
        im.addWidget(QLabel("imatrix"))
        im.addWidget(self.imatrix, 1)
        im.addWidget(im_browse)
        im.addWidget(im_clear)
        upper = QWidget()
        ul = QVBoxLayout(upper)
        ul.setContentsMargins(0, 0, 0, 0)
        ul.addWidget(self.title)
        ul.addLayout(top)
        ul.addLayout(im)
        hint = QLabel("rules (--custom-q, one per line) and @options")
        hint.setWordWrap(True)
        ul.addWidget(hint)
        ul.addWidget(self.editor, 1)
        ul.addWidget(self.status)
        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(QLabel("lint (double-click: its tensors)"))
        ll.addWidget(self.lints, 1)
        self.split = QSplitter(Qt.Vertical)
        self.split.addWidget(upper)
        self.split.addWidget(lower)
        self.split.setSizes([400, 160])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.split)

        self.editor.textChanged.connect(self._typed)
        self.base.activated.connect(lambda _: self._set_base(self.base.currentText()))
        self.base.lineEdit().returnPressed.connect(lambda: self._set_base(self.base.currentText()))
        im_browse.clicked.connect(self._browse_imatrix)
        im_clear.clicked.connect(lambda: session.set_header("imatrix", None, "no imatrix"))
        self.lints.itemActivated.connect(lambda it: self.lint_clicked.emit(it.data(_ROLE_LINT)))
        session.text_changed.connect(self._show_text)
        session.plan_changed.connect(self.show_snapshot)
        session.recipe_name_changed.connect(self._title)
        session.undo_stack.cleanChanged.connect(self._clean_changed)
        self._applying = False
        self._clean = True

    def _typed(self) -> None:
        if not self._applying:
            self.session.typed(self.editor.toPlainText())

    def _show_text(self, text: str) -> None:
        if self.editor.toPlainText() == text:
            return
        cur = self.editor.textCursor()
        pos, bar = cur.position(), self.editor.verticalScrollBar().value()
        self._applying = True
        try:
            self.editor.setPlainText(text)
        finally:
            self._applying = False
        cur = self.editor.textCursor()
        cur.setPosition(min(pos, len(text)))
        self.editor.setTextCursor(cur)
        self.editor.verticalScrollBar().setValue(bar)

    def _set_base(self, name: str) -> None:
        name = name.strip()
        idx = self.base.findText(name, Qt.MatchFixedString)
        if idx < 0:
            self.session.say(f"unknown base type {name!r}")
            return
        name = self.base.itemText(idx)
        r = self.session.snapshot.recipe
        if r is not None and r.base.upper() == name:
            return
        self.session.set_header("base", name, f"base type {name}")

    def _browse_imatrix(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "imatrix file", "",
                                              "imatrix (*.dat *.gguf *.imatrix);;All (*)")
        if path:
            self.session.set_header("imatrix", path, "imatrix")

    def _clean_changed(self, clean: bool) -> None:
        self._clean = clean
        self._title()

    def _title(self, *_) -> None:
        name = self.session.recipe_name or "new"
        dirty = "" if self._clean else "  (not saved)"
        self.title.setText(f"recipe: {name}{dirty}")

    def show_snapshot(self, snap: Snapshot) -> None:
        r = snap.recipe
        if r is not None:
            self.base.set_current(r.base.upper())
            self.imatrix.setText(r.imatrix or "")
            self.imatrix.setToolTip(r.imatrix or "")
        self.status.setText(f"<span style='color:#c00'>{snap.error}</span>" if snap.error else "")
        self.show_lints(snap.lints)
        self._title()

    def show_lints(self, lints: tuple[Lint, ...]) -> None:
        self.lints.clear()
        for w in lints:
            it = QListWidgetItem(f"{_SEVERITY_MARK.get(w.severity, '')} {w.message}"
                                 + (f"  [{w.where}]" if w.where else ""))
            it.setToolTip("\n".join(w.tensors[:20]) if w.tensors else w.message)
            it.setData(_ROLE_LINT, w)
            self.lints.addItem(it)
        if not lints:
            self.lints.addItem("no warnings")
