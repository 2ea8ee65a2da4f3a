"""Size summary of a plan: totals (GiB, bpw), change since the last edit, classes, GPU/CPU split."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QScrollArea, QVBoxLayout, QWidget

from iqk_studio.gui.prediction import PredictionLabel
from iqk_studio.recipe.records import Plan

CLASS_LABELS = {
    "attention": "attention", "ffn": "dense FFN", "experts_gate": "experts gate",
    "experts_up": "experts up", "experts_gate_up": "experts gate+up",
    "experts_down": "experts down", "shared_experts": "shared experts", "router": "router",
    "embeddings": "embeddings", "output": "output", "norms_other": "norms / other",
}
_TOTAL_STYLE = "font-size: 14pt; font-weight: bold"


def gib(n: int) -> str:
    return f"{n / 2**30:.3f} GiB"


def size(n: int, mib: bool) -> str:
    return f"{n / 2**20:.3f} MiB" if mib else gib(n)


def size_line(plan: Plan) -> str:
    """llama.cpp's 'model size' form: MiB below 1 GiB, else GiB, with BPW."""
    if plan.total_bytes < 2**30:
        return f"{plan.total_bytes / 2**20:.3f} MiB ({plan.bpw:.3f} BPW)"
    return f"{plan.gib:.3f} GiB ({plan.bpw:.3f} BPW)"


def _label() -> QLabel:
    lab = QLabel("-")
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return lab


class SummaryPanel(QScrollArea):
    """Totals of the shown plan; marked stale while they are not those of the recipe text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        inner = QWidget()
        self.setWidget(inner)
        self.total = QLabel("-")
        self.total.setStyleSheet(_TOTAL_STYLE)
        self.total.setWordWrap(True)
        self.state = QLabel("")
        self.state.setWordWrap(True)
        self.prediction = PredictionLabel()  # the optimizer's predicted KLD (blank: unmeasured)
        self.delta, self.bytes, self.source, self.devices = (_label() for _ in range(4))
        self.delta.setText("")
        self.errors = QLabel("")
        self.errors.setWordWrap(True)
        totals = QFormLayout()
        totals.setRowWrapPolicy(QFormLayout.WrapLongRows)
        totals.addRow("change", self.delta)
        totals.addRow("bytes", self.bytes)
        totals.addRow("source", self.source)
        totals.addRow("placement", self.devices)
        self._class_labels = {k: QLabel("-") for k in CLASS_LABELS}
        classes = QFormLayout()
        for k, lab in CLASS_LABELS.items():
            classes.addRow(lab, self._class_labels[k])
        box = QGroupBox("by tensor class")
        box.setLayout(classes)
        lay = QVBoxLayout(inner)
        lay.addWidget(QLabel("model size"))
        lay.addWidget(self.total)
        lay.addWidget(self.prediction)
        lay.addWidget(self.state)
        lay.addLayout(totals)
        lay.addWidget(self.errors)
        lay.addWidget(box)
        lay.addStretch(1)
        self._previous: int | None = None
        self.stale = False

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """Never narrower than its contents (a splitter then shrinks the tabs instead)."""
        w = (self.widget().minimumSizeHint().width() + 2 * self.frameWidth()
             + self.verticalScrollBar().sizeHint().width())
        return QSize(w, super().minimumSizeHint().height())

    def set_stale(self, stale: bool, why: str = "") -> None:
        """Grey the numbers and say why while they are not those of the recipe text."""
        self.stale = stale
        self.total.setStyleSheet(_TOTAL_STYLE + ("; color: #999" if stale else ""))
        self.prediction.set_stale(stale)
        self.state.setText(f"<span style='color:#b60'>\u23f3 {why}</span>" if stale else "")

    def show_plan(self, plan: Plan | None) -> None:
        if plan is None:
            self.total.setText("-")
            self.prediction.update_plan(None)
            return
        mib = plan.total_bytes < 2**30
        self.total.setText(size_line(plan))
        self.prediction.update_plan(plan)
        if self._previous is not None and self._previous != plan.total_bytes:
            d = plan.total_bytes - self._previous
            sign = "+" if d > 0 else "\u2212"
            self.delta.setText(f"{sign}{size(abs(d), mib)} ({sign}{abs(d):,} bytes)")
        elif self._previous is None:
            self.delta.setText("")
        self._previous = plan.total_bytes
        self.bytes.setText(f"{plan.total_bytes:,}")
        ratio = plan.total_bytes / max(plan.source_bytes, 1)
        self.source.setText(f"{size(plan.source_bytes, mib)} (new: {ratio:.1%} of it)")
        dev = ", ".join(f"{k} {size(v, mib)}" for k, v in sorted(plan.by_device.items()))
        self.devices.setText(dev or "-")
        errs = plan.errors
        self.errors.setText(
            f"<span style='color:#c00'>{len(errs)} error(s): llama-quantize would refuse or "
            f"abort (see lint)</span>" if errs else "")
        for k, lab in self._class_labels.items():
            v = plan.by_class.get(k, 0)
            lab.setText(size(v, mib) if v else "-")
