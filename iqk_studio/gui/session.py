"""The session: the open model, the recipe text with its one undo stack, and the snapshot of
(recipe, plan, lint) computed from that exact text. Views read it and listen to its signals
instead of writing into each other."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from iqk_studio.gguf.reader import GGUFError, open_model
from iqk_studio.quant.types import FTYPE_BY_ID
from iqk_studio.recipe import model_view, plan, textfile
from iqk_studio.recipe.records import Lint, Plan, Recipe

DEBOUNCE_MS = 120  # re-plan this long after the last keystroke
MERGE_S = 1.5  # keystrokes closer than this are one undo step


@dataclass(frozen=True)
class Snapshot:
    """One recipe text and everything computed from it; never a plan of another text."""

    text: str
    recipe: Recipe | None = None
    plan: Plan | None = None
    lints: tuple[Lint, ...] = ()
    error: str = ""  # why there is no plan: a syntax error, an unknown base type, no model
    plan_ms: float = 0.0

    @property
    def errors(self) -> tuple[Lint, ...]:
        return tuple(w for w in self.lints if w.severity == "error")

    def refusal(self) -> str:
        """Why this recipe cannot be evaluated or quantized ('' when it can)."""
        if self.error:
            return self.error
        if self.plan is None:
            return "open a model first"
        if self.errors:
            return "the recipe has errors: " + self.errors[0].message
        return ""


def set_header(text: str, key: str, value: str | None) -> str:
    """The recipe text with its `@key` line replaced (added after the comments at the top when
    missing; removed when value is None). Other lines are kept as typed."""
    lines = text.splitlines()
    idx = next((i for i, ln in enumerate(lines) if ln.strip().split(" ", 1)[0] == f"@{key}"),
               None)
    if value is None:
        if idx is not None:
            del lines[idx]
    elif idx is not None:
        lines[idx] = f"@{key} {value}"
    else:
        at = 0
        while at < len(lines) and lines[at].lstrip().startswith("#"):
            at += 1
        if key != "base":
            at = max((i + 1 for i, ln in enumerate(lines) if ln.strip().startswith("@")),
                     default=at)
        lines.insert(at, f"@{key} {value}")
    return "\n".join(lines) + "\n"


def insert_rule_first(text: str, rule: str) -> str:
    """The recipe text with a rule line put before its first rule (first match wins)."""
    lines = text.splitlines()
    at = next((i for i, ln in enumerate(lines)
               if ln.strip() and not ln.strip().startswith(("#", "@"))), len(lines))
    lines.insert(at, rule)
    return "\n".join(lines) + "\n"


class TextChange(QUndoCommand):
    """One change of the recipe text; consecutive keystrokes merge into one step."""

    TYPING = 1

    def __init__(self, session: Session, before: str, after: str, label: str, typing: bool):
        super().__init__(label)
        self.session, self.before, self.after, self.typing = session, before, after, typing
        self.when = time.monotonic()

    def id(self) -> int:  # Qt API: commands with the same id may merge
        return self.TYPING if self.typing else -1

    def mergeWith(self, other) -> bool:  # noqa: N802 (Qt API)
        if not (other.typing and other.when - self.when < MERGE_S):
            return False
        self.after, self.when = other.after, other.when
        return True

    def redo(self) -> None:
        self.session._apply(self.after, immediate=not self.typing)

    def undo(self) -> None:
        self.session._apply(self.before, immediate=True)


class Session(QObject):
    model_changed = Signal(object)  # GGUFModel or None
    plan_changed = Signal(object)  # Snapshot
    text_changed = Signal(str)  # the recipe text, after any change (typed, undone, loaded)
    stale_changed = Signal(bool)  # True while the shown numbers are not those of the text
    message = Signal(str, int)  # status-bar text, milliseconds (0 = until replaced)
    recipe_name_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = None
        self.model_path: str | None = None
        self.undo_stack = QUndoStack(self)
        self.text = ""
        self.recipe_name = ""
        self.recipe_path: str | None = None  # the file "Save" writes to (None: ask)
        self.snapshot = Snapshot("", error="no recipe yet")
        self.shown_plan: Plan | None = None  # the last plan computed (may be older than text)
        self.stale = False
        self._imatrix_cache: tuple | None = None  # ((path, mtime, size), Imatrix)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.replan)

    # --- model -------------------------------------------------------------------------------
    def open_model(self, path) -> str:
        """Open a GGUF (closing the previous one); returns an error message or ''."""
        try:
            model = open_model(path)
        except (GGUFError, OSError, ValueError) as e:
            return str(e)
        if self.model is not None:
            self.model.close()
        self.model, self.model_path = model, str(path)
        model_view(model)
        self.model_changed.emit(model)
        if not self.text.strip():
            self.set_recipe(starting_recipe(model), "starting recipe", clean=True)
        else:
            self.replan()
        return ""

    def close_model(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = self.model_path = None

    # --- recipe text (every change goes through the undo stack) ------------------------------
    def typed(self, text: str) -> None:
        """The user typed in the editor (the text is already there)."""
        if text != self.text:
            self.undo_stack.push(TextChange(self, self.text, text, "typing", typing=True))

    def set_text(self, text: str, label: str, name: str | None = None,
                 clean: bool = False) -> None:
        """Replace the recipe text as one undoable step (load, import, set type, ...)."""
        if name is not None:  # another document: Save asks where
            self.recipe_path = None
            if name != self.recipe_name:
                self.recipe_name = name
                self.recipe_name_changed.emit(name)
        if text != self.text:
            self.undo_stack.push(TextChange(self, self.text, text, label, typing=False))
        else:
            self.replan()
        if clean:
            self.undo_stack.setClean()

    def set_recipe(self, recipe: Recipe, label: str, name: str | None = None,
                   clean: bool = False) -> None:
        self.set_text(textfile.dumps(recipe), label, name, clean)

    def set_header(self, key: str, value: str | None, label: str) -> None:
        self.set_text(set_header(self.text, key, value), label)

    def load_recipe_file(self, path, library: bool = False) -> str:
        """Load a recipe file as typed (comments kept); returns an error message or ''.
        A library recipe is not the file Save writes to."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            textfile.loads(text, str(p))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            return str(e)
        self.set_text(text if text.endswith("\n") else text + "\n", f"load {p.name}",
                      name=p.stem, clean=not library)
        self.recipe_path = None if library else str(p)
        return ""

    def save_recipe_file(self, path) -> str:
        """Write the text as shown, atomically; returns an error message or ''."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        try:
            tmp.write_text(self.text, encoding="utf-8")
            os.replace(tmp, p)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            return str(e)
        self.undo_stack.setClean()
        self.recipe_path = str(p)
        if p.stem != self.recipe_name:
            self.recipe_name = p.stem
            self.recipe_name_changed.emit(p.stem)
        return ""

    def _apply(self, text: str, immediate: bool) -> None:
        self.text = text
        self.text_changed.emit(text)
        if immediate:
            self.replan()
        else:
            self._set_stale(True)  # until the debounced re-plan: the numbers are not the text's
            self._timer.start()

    @property
    def pending(self) -> bool:
        """An edit is waiting for its re-plan (typing)."""
        return self._timer.isActive()

    def flush(self) -> Snapshot:
        """The snapshot of the current text (re-planned now if an edit is pending)."""
        if self._timer.isActive() or self.snapshot.text != self.text:
            self.replan()
        return self.snapshot

    # --- snapshot ----------------------------------------------------------------------------
    def replan(self) -> None:
        self._timer.stop()
        snap = self._compute(self.text)
        self.snapshot = snap
        if snap.plan is not None:
            self.shown_plan = snap.plan
        self._set_stale(snap.plan is None and self.shown_plan is not None)
        self.plan_changed.emit(snap)

    def _compute(self, text: str) -> Snapshot:
        try:
            recipe = textfile.loads(text, "recipe")
        except ValueError as e:
            return Snapshot(text, error=str(e), lints=(Lint("syntax", "error", str(e)),))
        if self.model is None:
            return Snapshot(text, recipe, error="open a model first")
        extra, names = self._imatrix_lints(recipe)
        t0 = time.perf_counter()
        try:
            p = plan(self.model, recipe, names)
        except (KeyError, ValueError) as e:
            msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
            return Snapshot(text, recipe, error=msg, lints=extra + (Lint("plan", "error", msg),))
        return Snapshot(text, recipe, p, extra + p.warnings, "",
                        (time.perf_counter() - t0) * 1000)

    def _imatrix_lints(self, recipe: Recipe) -> tuple[tuple[Lint, ...], object]:
        """An @imatrix that cannot be read is an error of the recipe; a readable one gives the
        plan its entry names (so the imatrix rules apply per tensor, as llama-quantize does)."""
        if not recipe.imatrix:
            return (), None
        try:
            im = self.imatrix(recipe)
        except (OSError, ValueError) as e:
            return (Lint("imatrix-missing", "error", f"cannot read the imatrix: {e}",
                         "@imatrix"),), None
        return (), im.values.keys()

    def imatrix(self, recipe: Recipe | None = None):
        """The recipe's imatrix, loaded once per file version (None without @imatrix)."""
        recipe = recipe or self.snapshot.recipe
        if recipe is None or not recipe.imatrix:
            return None
        from iqk_studio.gguf.imatrix import load_imatrix

        p = Path(recipe.imatrix).expanduser()
        st = p.stat()  # OSError when missing: the caller reports it
        key = (str(p), st.st_mtime_ns, st.st_size)
        if self._imatrix_cache is None or self._imatrix_cache[0] != key:
            self._imatrix_cache = (key, load_imatrix(p))
        return self._imatrix_cache[1]

    def _set_stale(self, stale: bool) -> None:
        if stale != self.stale:
            self.stale = stale
            self.stale_changed.emit(stale)

    def say(self, text: str, ms: int = 5000) -> None:
        self.message.emit(text, ms)


def starting_recipe(model) -> Recipe:
    """The file's own ftype as base (Q8_0 for float files); for an already quantized file,
    --allow-requantize, without which llama-quantize refuses."""
    ft = FTYPE_BY_ID.get(int(model.metadata.get("general.file_type", -1)) & ~1024)
    quantized_source = any(t.qtype.is_quantized for t in model.tensors.values())
    base = "Q8_0" if ft is None or ft.name in ("F32", "F16", "BF16") else ft.name
    return Recipe(base=base, allow_requantize=quantized_source)
