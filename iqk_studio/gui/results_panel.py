"""The results list under the Evaluate tab's plot: the runs of the results store (of this model or
of all, by kind; earlier sessions and the CLI too), ticked runs drawn on the plot, the baseline,
open a run's recipe, delete (asks first), import a log or third-party points. Polls the store so
runs of other processes appear as they go."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from iqk_studio.gui.results_model import RCol, ResultsModel
from iqk_studio.gui.session import Session

POLL_MS = 3000  # how often the store is asked for runs of other processes
MODEL_FILTERS = ("this model", "all models")
KIND_FILTERS = (("PPL + KLD", ("perplexity", "kld")), ("perplexity", ("perplexity",)),
                ("KLD", ("kld",)), ("imatrix", ("imatrix",)))


class ResultsPanel(QWidget):
    open_run = Signal(object)  # Run: open its recipe

    def __init__(self, session: Session, results: ResultsModel, parent=None):
        super().__init__(parent)
        self.session, self.results = session, results
        self.table = QTableView()
        self.table.setModel(results)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeToContents)
        hh.setSectionResizeMode(RCol.NAME, QHeaderView.Interactive)
        hh.resizeSection(RCol.NAME, 260)
        self.table.setTextElideMode(Qt.ElideMiddle)  # "long-model-na…gguf (KLD log)"
        hh.setStretchLastSection(True)
        self.models = QComboBox()
        self.models.addItems(MODEL_FILTERS)
        self.models.setToolTip("this model: runs of the open file, runs that used it as the KLD "
                               "base, and runs of any model with the same general.name (its "
                               "quants); pasted logs that name no model are always listed")
        self.kinds = QComboBox()
        for label, _ in KIND_FILTERS:
            self.kinds.addItem(label)
        base_btn = QPushButton("Baseline")
        base_btn.setToolTip("use the selected run as the baseline: PPL vs base and the chart's "
                            "y axis divide by its PPL")
        open_btn = QPushButton("Open recipe")
        remove_btn = QPushButton("Delete")
        self.import_btn = QToolButton()
        self.import_btn.setText("Import")
        self.import_btn.setPopupMode(QToolButton.InstantPopup)
        self.import_menu = QMenu(self.import_btn)
        self.import_btn.setMenu(self.import_menu)
        self.where = QLabel("")  # the store's file, or why runs are kept in memory only
        self.where.setWordWrap(False)
        top = QHBoxLayout()
        top.addWidget(self.models)
        top.addWidget(self.kinds)
        top.addWidget(self.where, 1)
        for b in (base_btn, open_btn, remove_btn, self.import_btn):
            top.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.table)

        base_btn.clicked.connect(lambda: self._with_selected(
            lambda r: results.set_baseline(r.id)))
        open_btn.clicked.connect(lambda: self._with_selected(self.open_run.emit))
        remove_btn.clicked.connect(lambda: self._with_selected(self.delete))
        self.models.currentIndexChanged.connect(self._filter_changed)
        self.kinds.currentIndexChanged.connect(self._filter_changed)
        results.rowsInserted.connect(lambda *_: self.table.scrollToBottom())
        session.model_changed.connect(self._model_changed)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._poll)
        self.timer.start()
        self.show_source()
        self._filter_changed()

    def show_source(self) -> None:
        src = self.results.source
        warning = getattr(src, "warning", "")
        if warning:
            self.where.setText("<span style='color:#c00'>not saved</span>")
            self.where.setToolTip(warning)
        else:
            self.where.setText("")
            self.where.setToolTip(f"results store: {getattr(src, 'location', '?')}")

    # --- filters -------------------------------------------------------------------------------
    def _filter_changed(self) -> None:
        self.results.set_filter(this_model=self.models.currentIndex() == 0,
                                kinds=KIND_FILTERS[self.kinds.currentIndex()][1])

    def _model_changed(self, model) -> None:
        """Runs of this model: by the header hash of the file and by its general.name."""
        from iqk_studio.results import model_id

        path = self.session.model_path
        name = model.metadata.get("general.name") if model is not None else None
        self.results.set_filter(model_id=model_id(path) if path else None,
                                model_name=str(name) if name else None)

    def _poll(self) -> None:
        if self.isVisible():
            self.results.refresh()

    def reveal(self, run) -> None:
        """Make sure a run just added is listed (the "this model" filter may hide a log of
        another model: then all models are shown) and select it."""
        if run.id not in {r.id for r in self.results.source.runs()}:
            self.models.setCurrentIndex(1)
            self.session.say("the imported run is of another model: showing all models")
        self.results.refresh()
        ids = [r.id for r in self.results.runs()]
        if run.id in ids:
            self.table.selectRow(ids.index(run.id))

    # --- actions -------------------------------------------------------------------------------
    def selected_run(self):
        rows = self.table.selectionModel().selectedRows()
        return self.results.run_at(rows[0].row()) if rows else None

    def _with_selected(self, fn) -> None:
        run = self.selected_run()
        if run is None:
            self.session.say("select a run in the list first")
            return
        fn(run)

    def delete(self, run) -> bool:
        """Delete a run from the store, after asking (never one that is still running)."""
        if run.status == "running":
            self.session.say(f"{run.name} is still running: cancel it first")
            return False
        kept = "the results store" if getattr(self.results.source, "persistent", False) \
            else "this session's results"
        answer = QMessageBox.question(
            self, "Delete run", f"Delete \u201c{run.name}\u201d and its per-chunk values from "
            f"{kept}? This cannot be undone.", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer != QMessageBox.Yes:
            return False
        return self.results.remove(run.id)

    # --- remembered ----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"models": self.models.currentIndex(), "kinds": self.kinds.currentIndex(),
                **self.results.state()}

    def restore(self, st: dict) -> None:
        for key, w in (("models", self.models), ("kinds", self.kinds)):
            if st.get(key) is not None and 0 <= int(st[key]) < w.count():
                w.setCurrentIndex(int(st[key]))
        self.results.restore_state(st)
