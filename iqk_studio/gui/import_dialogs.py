"""Bringing in what others published: a llama-perplexity / KLD log pasted or dropped (parsed by
external.logimport, as `import-log`), asking for the model size when the log states none, and
third-party points from a CSV file (name, GiB, PPL[, PPL err]). Each lands in the results list
(and the store) and, when its size is known, on the size-vs-quality chart."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QVBoxLayout,
)

from iqk_studio.external.logimport import ImportedLog, parse_log

MAX_LOG_BYTES = 32 << 20  # a dropped file bigger than this is not a log


def log_size_gib(log: ImportedLog) -> float | None:
    """The model size the log's header states ("model size = 235.165 MiB"), in GiB."""
    size, unit = log.facts.get("model_size"), log.facts.get("model_size_unit")
    if not size:
        return None
    return float(size) / (1 if unit == "GiB" else 1024)


def log_summary(log: ImportedLog) -> str:
    parts = [f"{log.kind} log", f"{len(log.chunks)} chunks" + (f" of {log.n_ctx}" if log.n_ctx
                                                                else "")]
    if log.final:
        parts.append(f"final PPL {log.final[0]:.4f}" + (
            f" \u00b1 {log.final[1]:.5f}" if math.isfinite(log.final[1]) else ""))
    if log.kld and "kld" in log.kld:
        parts.append(f"mean KLD {log.kld['kld']:.6f}")
    if log.model:
        parts.append(f"model {Path(log.model).name}")
    gib = log_size_gib(log)
    parts.append(f"size {gib:.4f} GiB (from the log)" if gib else "size not stated")
    return ", ".join(parts)


def default_name(log: ImportedLog) -> str:
    who = Path(log.model).name if log.model else "pasted"
    return f"{who} ({'KLD ' if log.kind == 'kld' else ''}log)"


class LogImportDialog(QDialog):
    """A text box for the log, what was read from it, its name and size (asked when absent)."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle("Import a llama-perplexity log")
        self.resize(860, 520)
        self.edit = QPlainTextEdit(text)
        self.edit.setPlaceholderText("paste a llama-perplexity or KLD log here (as posted in a "
                                     "forum or a model card: quotes, wrapping and a missing "
                                     "header are fine)")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.name = QLineEdit()
        self.size = QDoubleSpinBox()
        self.size.setRange(0.0, 100000.0)
        self.size.setDecimals(4)
        self.size.setSuffix(" GiB")
        self.size.setSpecialValueText("unknown (not on the chart)")
        form = QFormLayout()
        form.addRow("name", self.name)
        form.addRow("model size", self.size)
        self.box = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.box.button(QDialogButtonBox.Ok).setText("Import")
        lay = QVBoxLayout(self)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.info)
        lay.addLayout(form)
        lay.addWidget(self.box)
        self.box.accepted.connect(self.accept)
        self.box.rejected.connect(self.reject)
        self.log: ImportedLog | None = None
        self._auto_name = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.parse)
        self.edit.textChanged.connect(self._timer.start)
        self.parse()

    def parse(self) -> None:
        """Read the text again: what it holds, the name and size it suggests."""
        text = self.edit.toPlainText()
        try:
            self.log = parse_log(text) if text.strip() else None
            why = "" if self.log is not None else "paste a log"
        except ValueError as e:
            self.log, why = None, str(e)
        ok = self.box.button(QDialogButtonBox.Ok)
        ok.setEnabled(self.log is not None)
        if self.log is None:
            self.info.setText(why)
            return
        self.info.setText(log_summary(self.log))
        if not self.name.text().strip() or self.name.text() == self._auto_name:
            self._auto_name = default_name(self.log)
            self.name.setText(self._auto_name)
        gib = log_size_gib(self.log)
        if gib:
            self.size.setValue(gib)
        elif not self.size.value():
            self.size.setFocus()
            self.info.setText(self.info.text() + ": give the model size in GiB to place it on "
                              "the size-vs-quality chart")

    def size_bytes(self) -> int | None:
        """The size the user gave, when the log states none."""
        if self.log is None or log_size_gib(self.log) or not self.size.value():
            return None
        return int(round(self.size.value() * 2**30))


def import_log(win, log: ImportedLog, name: str, source_path: str | None,
               size_bytes: int | None):
    run = win.results.add_imported(log, name, source_path, size_bytes)
    win.eval_view.list.reveal(run)
    where = "" if run.result.total_bytes else " (no size: not on the chart)"
    win.statusBar().showMessage(f"imported {run.name}: {log_summary(log)}{where}", 10000)
    return run


def paste_log(win, text: str | None = None):
    """Edit > Paste log: the dialog, filled with the clipboard when it holds a log."""
    if text is None:
        clip = QGuiApplication.clipboard().text()
        try:
            parse_log(clip)
            text = clip
        except ValueError:
            text = ""
    dlg = LogImportDialog(text, win)
    if dlg.exec() != QDialog.Accepted or dlg.log is None:
        return None
    return import_log(win, dlg.log, dlg.name.text().strip(), None, dlg.size_bytes())


def read_text(path) -> str:
    p = Path(path)
    if p.stat().st_size > MAX_LOG_BYTES:
        raise ValueError(f"{p.name} is {p.stat().st_size >> 20} MiB: too big for a log")
    return p.read_text(encoding="utf-8", errors="replace")


def import_log_file(win, path, text: str | None = None):
    """A log file (dropped or chosen): imported at once when it states the model size, else the
    dialog asks for it."""
    try:
        text = read_text(path) if text is None else text
        log = parse_log(text)
    except (OSError, ValueError) as e:
        QMessageBox.warning(win, "Cannot import log", f"{Path(path).name}: {e}")
        return None
    if log_size_gib(log):
        return import_log(win, log, default_name(log), str(path), None)
    dlg = LogImportDialog(text, win)
    dlg.setWindowTitle(f"Import {Path(path).name}: the model size?")
    if dlg.exec() != QDialog.Accepted or dlg.log is None:
        return None
    return import_log(win, dlg.log, dlg.name.text().strip(), str(path), dlg.size_bytes())


# --- third-party points ----------------------------------------------------------------------
def parse_points(text: str, where: str = "points") -> list[tuple[str, float, float, float]]:
    """(name, GiB, PPL, PPL err or nan) per row of `name, GiB, PPL[, PPL err]`; a header row
    naming `name`, `GiB`, `PPL` (and `PPL err`) may put the columns in any order (the chart's
    own CSV export reads back). ValueError with the line for a bad row."""
    rows = [r for r in csv.reader(io.StringIO(text))]
    cols = (0, 1, 2, 3)
    start = 0
    if rows and rows[0] and not _is_number(rows[0][1] if len(rows[0]) > 1 else ""):
        head = [re.sub(r"[^a-z0-9]+", "_", h.lower()).strip("_") for h in rows[0]]
        if "gib" in head and "ppl" in head:
            cols = (head.index("name") if "name" in head else 0, head.index("gib"),
                    head.index("ppl"), head.index("ppl_err") if "ppl_err" in head else -1)
        start = 1
    out = []
    for n, row in enumerate(rows[start:], start + 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            name = row[cols[0]].strip()
            gib, ppl = float(row[cols[1]]), float(row[cols[2]])
            err = float(row[cols[3]]) if 0 <= cols[3] < len(row) and row[cols[3]].strip() \
                else math.nan
        except (IndexError, ValueError):
            raise ValueError(f"{where} line {n}: expected name, GiB, PPL[, PPL err], got "
                             f"{','.join(row)!r}") from None
        if not (gib > 0 and ppl > 0 and math.isfinite(gib) and math.isfinite(ppl)):
            raise ValueError(f"{where} line {n}: size and PPL must be positive numbers")
        out.append((name or f"point {len(out) + 1}", gib, ppl, err))
    if not out:
        raise ValueError(f"{where}: no points (rows of name, GiB, PPL[, PPL err])")
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def point_log(name: str, gib: float, ppl: float, err: float, path: str) -> ImportedLog:
    """A third-party point as an imported result with no chunks (its final PPL and size)."""
    return ImportedLog("perplexity", (), (ppl, err), None, None, None,
                       {"model_size": gib, "model_size_unit": "GiB", "points_file": path,
                        "point_name": name})


def import_points_csv(win, path) -> int:
    """Every row of a CSV file as a point of the results list and the chart; the count."""
    try:
        points = parse_points(read_text(path), Path(path).name)
    except (OSError, ValueError) as e:
        QMessageBox.warning(win, "Cannot import points", str(e))
        return 0
    run = None
    for name, gib, ppl, err in points:
        run = win.results.add_imported(point_log(name, gib, ppl, err, str(path)), name,
                                       str(path))
    win.eval_view.list.reveal(run)
    win.statusBar().showMessage(f"imported {len(points)} points from {Path(path).name} (the "
                                "chart's PPL axis, or set one of them as the baseline)", 10000)
    return len(points)
