"""Run > Optimize for a size budget: the optimizer (iqk_studio.optimize) from a dialog -- budget
(total GiB, bpw, or GPU GiB + CPU GiB under placement rules), text, n_ctx, chunks, candidate
types -- run in the background in a job panel (progress, elapsed time, Cancel: measurements
already made stay in the results store, as with the CLI). Its recipe is loaded into the editor
as one undoable step, and predicted vs measured KLD are shown."""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from iqk_studio.gui.eval_settings import _browse_row, find_text
from iqk_studio.gui.job_panel import JobPanel, fmt_seconds
from iqk_studio.jobs.events import Finished, Progress
from iqk_studio.jobs.warmup import warm_types
from iqk_studio.optimize.job import Budget, Measured, OptimizeResult, optimize_job
from iqk_studio.optimize.space import DEFAULT_TYPES
from iqk_studio.quant.types import BY_NAME
from iqk_studio.recipe.records import Placement

KINDS = ("total size (GiB)", "bits per weight", "GPU GiB + CPU GiB (placement rules)")
TOTAL, BPW, SPLIT = range(3)


def parse_placement(text: str) -> tuple[Placement, ...]:
    """`regex=DEVICE[,regex=DEVICE...]` as --placement takes it (a bare regex goes to CPU)."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        pat, _, dev = item.rpartition("=") if "=" in item else (item, "", "CPU")
        if not pat.strip():
            raise ValueError(f"bad placement {item!r} (expected regex=DEVICE)")
        out.append(Placement(pat.strip(), dev.strip() or "CPU"))
    return tuple(out)


def parse_types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.replace(" ", ",").split(",") if t.strip())
    bad = [t for t in types if t not in BY_NAME]
    if bad:
        raise ValueError(f"unknown type {bad[0]!r} (types are spelled as llama-quantize does, "
                         "e.g. q4_K, iq4_xs)")
    if not types:
        raise ValueError("give at least one candidate type")
    return types


def gui_optimize_job(model_path, text, budget, types, n_ctx, chunks, imatrix, store, placement):
    """Kernels of the candidate types compiled first (announced), then the optimization."""
    yield from warm_types(types)
    yield from optimize_job(model_path, text, budget, types, n_ctx, chunks, imatrix,
                            store=store, placement=placement)


class OptimizeDialog(QDialog):
    """Modeless: the editor stays usable while it runs. `result_ready(OptimizeResult, str)`:
    the result and a comment line describing the run (for the top of the recipe)."""

    result_ready = Signal(object, str)

    def __init__(self, model_path: str, n_elements: int, quantized: bool,
                 text: str = "", n_ctx: int = 512, placement: str = "", imatrix: str = "",
                 store=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Optimize for a size budget \u2014 {Path(model_path).name}")
        self.resize(720, 560)
        self.model_path, self.n_elements, self.store = model_path, n_elements, store
        self.kind = QComboBox()
        self.kind.addItems(KINDS)
        self.value = QDoubleSpinBox()
        self.value.setDecimals(3)
        self.gpu, self.cpu = QDoubleSpinBox(), QDoubleSpinBox()
        for w in (self.gpu, self.cpu):
            w.setDecimals(4)
            w.setRange(0.0, 100000.0)
            w.setSuffix(" GiB")
        self.placement = QLineEdit(placement)
        self.placement.setPlaceholderText("regex=DEVICE, ... (e.g. exps=CPU): the rest on GPU")
        self.placement.setToolTip("written into the recipe as @placement; with a GPU + CPU "
                                  "budget it decides which budget each tensor counts against")
        self.text = QLineEdit(text or find_text(model_path))
        self.text.setPlaceholderText("text the losses are measured on, e.g. wiki.test.raw")
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(16, 32768)
        self.n_ctx.setValue(n_ctx)
        self.chunks = QSpinBox()
        self.chunks.setRange(1, 10000)
        self.chunks.setValue(1)
        self.chunks.setToolTip("chunks every measurement runs over (2 halves the sampling "
                               "variance at twice the time)")
        self.types = QLineEdit(",".join(DEFAULT_TYPES))
        self.types.setToolTip("the types the optimizer chooses from, comma-separated; a type a "
                              "tensor cannot take falls back as llama-quantize would")
        self.imatrix = QLineEdit(imatrix)
        self.imatrix.setPlaceholderText("optional: imatrix to quantize with (written into the "
                                        "recipe)")
        self.note = QLabel(
            "<span style='color:#b60'>The open file is quantized: the recipe requantizes it "
            "(@allow-requantize). Optimize from the F32/BF16/F16 file when you have it.</span>"
            if quantized else "")
        self.note.setWordWrap(True)
        self.panel = JobPanel("Optimize")
        self.runner = self.panel.runner
        self.measured = QLabel("")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.table = QTreeWidget()
        self.table.setRootIsDecorated(False)
        self.table.setHeaderLabels(["candidate", "bytes", "bpw", "predicted KLD",
                                    "measured KLD", ""])
        self.result: OptimizeResult | None = None
        self._t0 = 0.0
        self._n_new = self._n_cached = 0
        self._notes: list[str] = []

        form = QFormLayout()
        form.addRow("budget", self.kind)
        form.addRow("value", self.value)
        form.addRow("GPU", self.gpu)
        form.addRow("CPU", self.cpu)
        form.addRow("placement", self.placement)
        form.addRow("text", _browse_row(self.text, self._browse_text))
        form.addRow("n_ctx", self.n_ctx)
        form.addRow("chunks", self.chunks)
        form.addRow("types", self.types)
        form.addRow("imatrix", _browse_row(self.imatrix, self._browse_imatrix))
        self.form = form
        lay = QVBoxLayout(self)
        lay.addWidget(self.note)
        lay.addLayout(form)
        lay.addWidget(self.panel)
        lay.addWidget(self.measured)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.panel.run_clicked.connect(self.start)
        self.panel.event.connect(self._on_event)
        self.panel.done.connect(self._done)
        self._kind_changed()

    # --- inputs ------------------------------------------------------------------------------
    def _kind_changed(self, *_) -> None:
        k = self.kind.currentIndex()
        split = k == SPLIT
        for w in (self.gpu, self.cpu):
            self.form.setRowVisible(w, split)
        self.form.setRowVisible(self.value, not split)
        gib_45 = self.n_elements * 4.5 / 8 / 2**30  # 4.5 bpw as a first guess
        if k == TOTAL:
            self.value.setRange(0.0, 100000.0)
            self.value.setSuffix(" GiB")
            self.value.setSingleStep(0.1)
            self.value.setDecimals(4 if gib_45 < 1 else 3)
            self.value.setValue(max(round(gib_45, 4), 0.0001))
        elif k == BPW:
            self.value.setRange(0.5, 32.0)
            self.value.setSuffix(" bpw")
            self.value.setSingleStep(0.1)
            self.value.setValue(4.5)

    def _browse_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Text the losses are measured on", "",
                                              "Text (*.raw *.txt);;All (*)")
        if path:
            self.text.setText(path)

    def _browse_imatrix(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "imatrix", "",
                                              "imatrix (*.dat *.gguf);;All (*)")
        if path:
            self.imatrix.setText(path)

    def budget(self) -> tuple[Budget, tuple[Placement, ...], str]:
        """(budget, placement, its description); ValueError with one line when invalid."""
        k = self.kind.currentIndex()
        if k == SPLIT:
            place = parse_placement(self.placement.text())
            if not place:
                raise ValueError("a GPU + CPU budget needs placement rules (which tensors go "
                                 "to the CPU, e.g. exps=CPU)")
            g, c = self.gpu.value(), self.cpu.value()
            if g <= 0 and c <= 0:
                raise ValueError("give a GPU or a CPU budget above 0")
            return (Budget(gpu=int(g * 2**30), cpu=int(c * 2**30)), place,
                    f"GPU {g:g} GiB + CPU {c:g} GiB")
        place = parse_placement(self.placement.text())  # kept in the recipe
        v = self.value.value()
        if v <= 0:
            raise ValueError("the budget must be above 0")
        if k == TOTAL:
            return Budget(total=int(v * 2**30)), place, f"{v:g} GiB"
        return Budget(total=int(v * self.n_elements / 8)), place, f"{v:g} bpw"

    # --- run ---------------------------------------------------------------------------------
    def start(self) -> bool:
        try:
            budget, place, what = self.budget()
            types = parse_types(self.types.text())
            text = self.text.text().strip()
            if not text or not Path(text).is_file():
                raise ValueError("choose the text the losses are measured on (e.g. "
                                 "wiki.test.raw)")
            imatrix = self.imatrix.text().strip() or None
            if imatrix and not Path(imatrix).is_file():
                raise ValueError(f"no imatrix file {imatrix}")
        except ValueError as e:
            self.panel.set_status(str(e), error=True)
            return False
        n_ctx, chunks = self.n_ctx.value(), self.chunks.value()
        self._describe = (f"iqk-studio optimize: {what} on {Path(text).name} ({chunks} chunk(s) "
                          f"of {n_ctx}), types {','.join(types)}")
        self.table.clear()
        self.summary.setText("")
        self.measured.setText("")
        self.result = None
        self._n_new = self._n_cached = 0
        self._notes = []
        self._t0 = time.monotonic()
        args = (self.model_path, text, budget, types, n_ctx, chunks, imatrix, self.store, place)
        return self.panel.start(lambda: gui_optimize_job(*args), "optimizing...")

    def _on_event(self, ev) -> None:
        elapsed = fmt_seconds(time.monotonic() - self._t0)
        if isinstance(ev, Measured):
            if ev.cached:
                self._n_cached += 1
            else:
                self._n_new += 1
            self.measured.setText(f"KLD measured: {self._n_new} new, {self._n_cached} from the "
                                  f"store; last {ev.group} at {ev.key}: {ev.kld:.5f} "
                                  f"(\u00b1{ev.kld_err:.5f})")
        elif isinstance(ev, Progress):
            if ev.message:
                self.panel.progress.setFormat(f"{ev.message[:60]}  ({elapsed})")
            if not ev.total and ("cannot" in ev.message or "unavailable" in ev.message):
                self._notes.append(ev.message)
        elif isinstance(ev, Finished) and isinstance(ev.result, OptimizeResult):
            self.result = ev.result
            self._show(ev.result, elapsed)
            self.result_ready.emit(ev.result, self.comment())

    def comment(self) -> str:
        r = self.result
        p = r.predicted
        line = f"# {self._describe}\n# predicted KLD {p['kld']:.5f}"
        if p.get("measured_kld") is not None:
            line += f", measured {p['measured_kld']:.5f}"
        return line + "\n"

    def _show(self, r: OptimizeResult, elapsed: str) -> None:
        p, pl = r.predicted, r.plan
        kld = "KLD" if p["unit"].startswith("mean KLD") else "cost"
        meas = p.get("measured_kld")
        line = (f"Loaded into the editor (Edit > Undo takes it back): {pl.bpw:.3f} bpw, "
                f"{pl.total_bytes:,} bytes; predicted {kld} {p['kld']:.5f}")
        if meas is not None:
            line += (f", measured {meas:.5f} \u00b1 {p.get('measured_kld_err') or 0:.5f} on "
                     f"{p['chunks']} chunk(s) of {p['n_ctx']}")
        line += f"; {p['measurements']} KLD measurements, {elapsed}."
        if kld != "KLD":
            line += (" The built-in engine cannot run this model: the costs are its "
                     "quantization error (imatrix-weighted when one is given), not a KLD.")
        self.summary.setText(line)
        bpw = lambda b: 8 * b / max(self.n_elements, 1)  # noqa: E731
        for k, c in enumerate(r.candidates, 1):
            m = "-" if not math.isfinite(c.measured) else f"{c.measured:.5f}"
            self.table.addTopLevelItem(QTreeWidgetItem(
                [str(k), f"{c.total_bytes:,}", f"{bpw(c.total_bytes):.3f}",
                 f"{c.predicted:.5f}", m, "chosen" if c.recipe == r.recipe else ""]))
        for i in range(5):
            self.table.resizeColumnToContents(i)

    def _done(self, stopped: bool) -> None:
        if not stopped and self.result is not None:
            self.panel.progress.setFormat(
                f"done in {fmt_seconds(time.monotonic() - self._t0)}")
        if self._notes:
            self.measured.setText("; ".join(self._notes[-1:]) + (
                "\n" + self.measured.text() if self.measured.text() else ""))
        if stopped:
            self.panel.set_status(
                f"cancelled: {self._n_new} new KLD measurement(s) and every quantization error "
                "computed so far are kept in the results store; the next run starts from them")

    def reject(self) -> None:  # closing cancels a running job and waits for its thread
        self.runner.cancel()
        self.runner.wait(60000)
        super().reject()


def open_dialog(win) -> OptimizeDialog | None:
    """The dialog for the main window's model, prefilled from the Evaluate tab (text, n_ctx)
    and the recipe (placement, imatrix); its result goes into the editor as one undo step."""
    s = win.session
    if s.model is None:
        QMessageBox.warning(win, "Cannot optimize", "open a model first")
        return None
    snap = s.flush()
    r = snap.recipe
    m = s.model
    ev = win.eval_view.settings
    dlg = OptimizeDialog(
        s.model_path, m.n_elements, any(t.qtype.is_quantized for t in m.tensors.values()), ev.text.text().strip(), ev.n_ctx.value(),
        ", ".join(str(p) for p in r.placement) if r is not None else "",
        (r.imatrix or "") if r is not None else "", win.cost_store, win)
    dlg.result_ready.connect(lambda res, comment: load_result(win, res, comment, dlg))
    return dlg


def load_result(win, result: OptimizeResult, comment: str, dlg=None) -> None:
    """The optimizer's recipe in the editor as one undoable step; the prediction re-read.
    Not when another model was opened meanwhile (the dialog says so)."""
    from iqk_studio.recipe.textfile import dumps

    if dlg is not None and win.session.model_path != dlg.model_path:
        dlg.summary.setText(f"Not loaded: the editor now has {win.session.model_path}; this "
                            f"recipe is for {dlg.model_path} (open it again and re-run: the "
                            "measurements are in the store, it takes seconds).")
        return
    win.summary.prediction.reload()  # the measurements this run added
    bpw = result.plan.bpw
    win.session.set_text(comment + dumps(result.recipe), "optimize",
                         name=f"{Path(win.session.model_path).stem}-opt-{bpw:.2f}bpw")
    win.statusBar().showMessage(f"optimized recipe loaded: {result.plan.bpw:.3f} bpw, predicted "
                                f"KLD {result.predicted['kld']:.5f}", 15000)
