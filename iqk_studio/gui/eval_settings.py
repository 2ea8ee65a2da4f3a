"""What an evaluation runs on: the text (wiki.test.raw found when it is nearby), the file as it is
or the recipe, perplexity or KLD against a base model, the weighting, n_ctx and chunks — with an
estimate of the chunks available and the time they take — and which engine runs it: the built-in
one or the user's llama-perplexity (build folder or file, flavour detected, extra arguments)."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from iqk_studio.gui.external_settings import ExternalSettings
from iqk_studio.gui.job_panel import fmt_seconds
from iqk_studio.gui.session import Session
from iqk_studio.jobs import token_cache
from iqk_studio.jobs.evaluate import EvalSpec

TARGETS = ("the open file as it is", "the recipe, quantized in memory")
METRICS = ("perplexity", "KL-divergence vs a base model")
WEIGHTS = (("imatrix", "imatrix (@imatrix)"), ("default", "no imatrix (default)"),
           ("uniform", "w = 1 (uniform)"))
DEFAULT_CHUNKS = 8
ENGINES = ("built-in", "your llama-perplexity")
TEXT_NAMES = ("wiki.test.raw", "wikitext-2-raw/wiki.test.raw")


def find_text(near: str | None = None) -> str:
    """A wiki.test.raw next to the model, in the working folder, home or Downloads ('' if none);
    we do not ship it (CC BY-SA / GFDL), we point at it."""
    dirs = [Path.cwd()]
    if near:
        dirs += [Path(near).resolve().parent, Path(near).resolve().parent.parent]
    home = Path.home()
    dirs += [home, home / "Downloads", home / "data", home / "datasets"]
    for d in dirs:
        for name in TEXT_NAMES:
            if (d / name).is_file():
                return str(d / name)
    return ""


def _browse_row(edit: QLineEdit, slot) -> QHBoxLayout:
    b = QPushButton("...")
    b.setMaximumWidth(32)
    b.clicked.connect(slot)
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit, 1)
    row.addWidget(b)
    return row


class EvalSettings(QWidget):
    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.engine = QComboBox()
        self.engine.addItems(ENGINES)
        self.engine.setToolTip("the built-in engine (small models, recipes in memory), or your "
                               "own llama-perplexity build for a GGUF file (big models, GPU)")
        self.external = ExternalSettings()
        self.text = QLineEdit()
        self.text.setPlaceholderText("evaluation text, e.g. wiki.test.raw")
        self.target = QComboBox()
        self.target.addItems(TARGETS)
        self.metric = QComboBox()
        self.metric.addItems(METRICS)
        self.base = QLineEdit()
        self.base.setPlaceholderText("base model (empty: the open file)")
        self.weights = QComboBox()
        for key, label in WEIGHTS:
            self.weights.addItem(label, key)
        self.weights.setToolTip("how the recipe's types weigh each value when quantizing in "
                                "memory: the imatrix, llama-quantize's default, or w = 1")
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(16, 32768)
        self.n_ctx.setValue(512)
        self.chunks = QSpinBox()
        self.chunks.setRange(0, 100000)
        self.chunks.setSpecialValueText("all")
        self.chunks.setValue(DEFAULT_CHUNKS)
        self.estimate = QLabel("")
        g = QGridLayout(self)
        g.setContentsMargins(0, 0, 0, 0)
        g.addWidget(QLabel("text"), 0, 0)
        g.addLayout(_browse_row(self.text, self._browse_text), 0, 1, 1, 3)
        g.addWidget(QLabel("evaluate"), 1, 0)
        g.addWidget(self.target, 1, 1)
        g.addWidget(QLabel("weights"), 1, 2)
        g.addWidget(self.weights, 1, 3)
        g.addWidget(QLabel("measure"), 2, 0)
        g.addWidget(self.metric, 2, 1)
        g.addLayout(_browse_row(self.base, self._browse_base), 2, 2, 1, 2)
        g.addWidget(QLabel("n_ctx"), 3, 0)
        ctx = QHBoxLayout()
        ctx.addWidget(self.n_ctx)
        ctx.addWidget(QLabel("chunks"))
        ctx.addWidget(self.chunks)
        ctx.addWidget(self.estimate, 1)
        g.addLayout(ctx, 3, 1)
        g.addWidget(QLabel("engine"), 3, 2)
        g.addWidget(self.engine, 3, 3)
        g.addWidget(self.external, 4, 0, 1, 4)
        g.setColumnStretch(1, 1)
        g.setColumnStretch(3, 1)
        self._speed: dict[str, float] = {}  # model path -> tokens/s measured this session
        self._tok_keys: dict[str, str] = {}
        self._shas: dict[tuple, str] = {}
        for w in (self.text.textChanged, self.n_ctx.valueChanged, self.chunks.valueChanged):
            w.connect(self.update_estimate)
        self.metric.currentIndexChanged.connect(self._metric_changed)
        self.target.currentIndexChanged.connect(self._metric_changed)
        self.engine.currentIndexChanged.connect(self._engine_changed)
        session.model_changed.connect(self._model_changed)
        session.plan_changed.connect(self._follow_imatrix)
        self._had_imatrix = False
        self.weights.setCurrentIndex(1)
        self._metric_changed()
        self._engine_changed()

    # --- what to run ---------------------------------------------------------------------------
    def spec(self) -> tuple[EvalSpec | None, str]:
        """The run the settings describe, or (None, why not)."""
        s = self.session
        if s.model_path is None:
            return None, "open a model first"
        text = self.text.text().strip()
        if not text:
            return None, "choose an evaluation text file (e.g. wiki.test.raw)"
        if not Path(text).is_file():
            return None, f"{text}: no such text file"
        plan = imatrix = None
        mode = self.weights.currentData()
        snap = s.flush()
        if self.target.currentIndex() == 1:
            why = snap.refusal()
            if why:
                return None, why
            plan = snap.plan
            if mode == "imatrix":
                if not snap.recipe.imatrix:
                    return None, ("the recipe has no @imatrix: choose one in the recipe panel, "
                                  "or weights 'no imatrix'")
                try:
                    imatrix = s.imatrix(snap.recipe)
                except (OSError, ValueError) as e:
                    return None, f"cannot read the imatrix: {e}"
        base = None
        if self.metric.currentIndex() == 1:
            base = self.base.text().strip() or (s.model_path if plan is not None else "")
            if not base:
                return None, ("choose the base model (or a base log-prob file saved by "
                              "llama-perplexity --kl-divergence-base) to compare the file with")
            if not Path(base).is_file():
                return None, f"{base}: no such base model"
        if self.is_external() and plan is not None:
            return None, ("llama-perplexity evaluates a GGUF file as it is: quantize the recipe "
                          "first (Run > Quantize), then open and measure the file")
        return EvalSpec(s.model_path, text, self.n_ctx.value(), self.chunks.value() or -1,
                        plan, mode, imatrix, base, snap.text, s.recipe_name), ""

    def is_external(self) -> bool:
        return self.engine.currentIndex() == 1

    def _metric_changed(self) -> None:
        kld = self.metric.currentIndex() == 1
        self.base.setEnabled(kld)
        self.weights.setEnabled(self.target.currentIndex() == 1)

    def _engine_changed(self) -> None:
        """An external tool measures the file as it is: the recipe target is put aside."""
        ext = self.is_external()
        self.external.setVisible(ext)
        if ext:
            self.target.setCurrentIndex(0)
            self.external.detect()
        self.target.setEnabled(not ext)
        self._metric_changed()

    def _follow_imatrix(self, snap) -> None:
        """Weights follow the recipe's @imatrix as it comes and goes (w = 1 stays as chosen)."""
        has = bool(snap.recipe is not None and snap.recipe.imatrix)
        if has != self._had_imatrix and self.weights.currentData() != "uniform":
            self.weights.setCurrentIndex(0 if has else 1)
        self._had_imatrix = has

    def _model_changed(self, model) -> None:
        """Evaluate the recipe by default on a float model, the file itself on a quantized one
        (re-quantizing a quantized file is rarely what is meant)."""
        quantized = any(t.qtype.is_quantized for t in model.tensors.values()) if model else True
        self.target.setCurrentIndex(0 if quantized or self.is_external() else 1)
        if not self.text.text().strip():
            self.text.setText(find_text(self.session.model_path))
        self.update_estimate()

    def _browse_text(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Evaluation text", self.text.text(),
                                              "Text (*.raw *.txt);;All (*)")
        if path:
            self.text.setText(path)

    def _browse_base(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Base model", "", "GGUF (*.gguf);;All (*)")
        if path:
            self.base.setText(path)

    # --- estimate ------------------------------------------------------------------------------
    def note_speed(self, tokens_per_second: float) -> None:
        if self.session.model_path and tokens_per_second > 0:
            self._speed[self.session.model_path] = tokens_per_second

    def n_tokens(self) -> int | None:
        """Token count of the text from the cache (None when not tokenized yet)."""
        s, text = self.session, self.text.text().strip()
        if s.model is None or not text or not os.path.isfile(text):
            return None
        st = os.stat(text)
        k = (text, st.st_mtime_ns, st.st_size)
        if k not in self._shas:
            self._shas[k] = token_cache.file_sha256(text)
        if s.model_path not in self._tok_keys:
            self._tok_keys[s.model_path] = token_cache.tokenizer_key(s.model.metadata)
        got = token_cache.lookup(token_cache.cache_path(self._shas[k],
                                                        self._tok_keys[s.model_path]))
        return None if got is None else int(got[0].size)

    def update_estimate(self) -> None:
        n_tok, n_ctx = self.n_tokens(), self.n_ctx.value()
        if n_tok is None:
            self.estimate.setText("")
            self.estimate.setToolTip("the text is tokenized at the first run (then cached)")
            return
        avail = n_tok // n_ctx
        use = min(self.chunks.value() or avail, avail)
        msg = f"of {avail}"
        speed = self._speed.get(self.session.model_path or "")
        if speed:
            msg += f", ~{fmt_seconds(use * n_ctx / speed)}"
        self.estimate.setText(msg)
        self.estimate.setToolTip(f"{n_tok:,} tokens: {avail} chunks of {n_ctx}"
                                 + (f"; {speed:.0f} tokens/s measured" if speed else ""))

    def remember(self) -> None:
        self.update_estimate()

    def state(self) -> dict:
        x = self.external
        return {"text": self.text.text(), "n_ctx": self.n_ctx.value(),
                "chunks": self.chunks.value(), "metric": self.metric.currentIndex(),
                "weights": self.weights.currentIndex(), "base": self.base.text(),
                "engine": self.engine.currentIndex(), "llama_bin": x.where.text(),
                "llama_args": x.args.text(), "stop_nan": int(x.stop_nan.isChecked())}

    def restore(self, st: dict) -> None:
        if st.get("text") and Path(str(st["text"])).is_file():
            self.text.setText(str(st["text"]))
        for key, w in (("n_ctx", self.n_ctx), ("chunks", self.chunks)):
            if key in st:
                w.setValue(int(st[key]))
        x = self.external
        x.where.setText(str(st.get("llama_bin") or ""))
        x.args.setText(str(st.get("llama_args") or ""))
        x.stop_nan.setChecked(str(st.get("stop_nan", "0")) in ("1", "true", "True"))
        for key, w in (("metric", self.metric), ("weights", self.weights),
                       ("engine", self.engine)):
            if key in st and 0 <= int(st[key]) < w.count():
                w.setCurrentIndex(int(st[key]))
        self.base.setText(str(st.get("base") or ""))
