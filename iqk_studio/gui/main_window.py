"""The main window: recipe editor | tabs (tensors, grids, evaluate, chart, sensitivity) | summary,
wired through one Session; menus, shortcuts, drag and drop, remembered settings."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
)

from iqk_studio.gui import desktop, import_dialogs
from iqk_studio.gui.actions import (
    QuantizeControl,
    export_command,
    fill_library_menu,
    import_command,
)
from iqk_studio.gui.chart_view import ChartView
from iqk_studio.gui.eval_view import EvalView
from iqk_studio.gui.grids_view import GridsView
from iqk_studio.gui.recipe_panel import RecipePanel
from iqk_studio.gui.results_model import ResultsModel
from iqk_studio.gui.sensitivity_view import SensitivityView
from iqk_studio.gui.session import Session, Snapshot
from iqk_studio.gui.summary import SummaryPanel, size_line
from iqk_studio.gui.tensors_view import TensorsView

RECIPE_FILTER = "Recipe (*.recipe);;Text (*.txt);;All (*)"


class MainWindow(QMainWindow):
    def __init__(self, settings=None, ask_to_save: bool = False, results: ResultsModel = None):
        """settings: a QSettings to restore from and save to (None: nothing is remembered);
        ask_to_save: ask before closing with unsaved recipe changes (the app does; tests not);
        results: the results list (the app's is over the results store; default: in memory)."""
        super().__init__()
        pg.setConfigOptions(background="w", foreground="k", antialias=True)
        self.setWindowTitle("iqk-studio")
        self.resize(1400, 860)
        self.settings, self.ask_to_save = settings, ask_to_save
        self.session = Session(self)
        self.results = results or ResultsModel(parent=self)
        s = self.session

        self.recipe_panel = RecipePanel(s)
        self.tensors_view = TensorsView(s)
        self.grids_view = GridsView()
        self.eval_view = EvalView(s, self.results)
        self.chart_view = ChartView(self.results)
        self.sensitivity_view = SensitivityView(s)
        self.sensitivity_view.text_source = lambda: self.eval_view.settings.text.text().strip()
        self.sensitivity_view.record = lambda job, spec: self.results.source.record(
            job, spec, on_error=self.eval_view.store_problem.emit)
        self.summary = SummaryPanel()
        self.summary.prediction.store = self.cost_store
        self.tabs = QTabWidget()
        for w, name in ((self.tensors_view, "Tensors"), (self.grids_view, "Grids"),
                        (self.eval_view, "Evaluate"), (self.chart_view, "Size/quality"),
                        (self.sensitivity_view, "Sensitivity")):
            self.tabs.addTab(w, name)
        self.split = QSplitter()
        self.split.addWidget(self.recipe_panel)
        self.split.addWidget(self.tabs)
        self.split.addWidget(self.summary)
        for i, stretch in enumerate((1, 4, 1)):  # a smaller window shrinks all three
            self.split.setStretchFactor(i, stretch)
        self.split.setSizes([320, 820, 220])
        self.recipe_panel.setMinimumWidth(180)
        self.tabs.setMinimumWidth(420)
        self.setCentralWidget(self.split)
        self.quantize_control = QuantizeControl(self)
        self._optimize = None  # the optimizer's dialog, once opened

        s.plan_changed.connect(self._plan_changed)
        s.stale_changed.connect(self._stale)
        s.message.connect(self.statusBar().showMessage)
        self.results.message.connect(lambda m: self.statusBar().showMessage(m, 15000))
        s.undo_stack.cleanChanged.connect(self._title)
        self.recipe_panel.lint_clicked.connect(
            lambda lint: lint is not None and self.tensors_view.show_tensors(lint.tensors))
        self.recipe_panel.editor.files_dropped.connect(self.open_files)
        self.tensors_view.table.selectionModel().currentRowChanged.connect(self._tensor_selected)
        self.chart_view.open_run.connect(self.eval_view.open_recipe)
        s.model_changed.connect(lambda m: self.chart_view.set_model(
            m.metadata if m is not None else None))
        s.model_changed.connect(lambda m: self.summary.prediction.set_model(
            s.model_path if m is not None else None))
        for panel in (self.eval_view.panel, self.sensitivity_view.panel):
            panel.compiling.connect(lambda m: self.statusBar().showMessage(m, 0))
            panel.done.connect(lambda _: self.statusBar().clearMessage())
        self.setAcceptDrops(True)
        self._menus()
        self.statusBar().showMessage("open a GGUF model (File > Open, or drop it on the window)")
        if settings is not None:
            desktop.restore(self, settings)
        warning = getattr(self.results.source, "warning", "")
        if warning:  # said once here; the results list keeps a red "not saved" with the reason
            self.statusBar().showMessage(warning, 30000)

    # --- menus -------------------------------------------------------------------------------
    def _menus(self) -> None:
        m = self.menuBar().addMenu("&File")
        self._action(m, "&Open model...", self.open_dialog, QKeySequence.Open)
        self.recent_menu = m.addMenu("Open &recent")
        desktop.fill_recent(self)
        m.addSeparator()
        self._action(m, "&Load recipe...", self.load_recipe_dialog, "Ctrl+L")
        self._action(m, "&Save recipe", self.save_recipe, QKeySequence.Save)
        self._action(m, "Save recipe &as...", self.save_recipe_dialog, QKeySequence.SaveAs)
        m.addSeparator()
        self._action(m, "Import &log file...", self.import_log_dialog)
        self._action(m, "Import &points (CSV)...", self.import_points_dialog)
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence.Quit)
        e = self.menuBar().addMenu("&Edit")
        undo = self.session.undo_stack.createUndoAction(self, "&Undo")
        undo.setShortcut(QKeySequence.Undo)
        redo = self.session.undo_stack.createRedoAction(self, "&Redo")
        redo.setShortcut(QKeySequence.Redo)
        e.addAction(undo)
        e.addAction(redo)
        self.undo_action, self.redo_action = undo, redo
        e.addSeparator()
        self._action(e, "&Paste log...", lambda: import_dialogs.paste_log(self), "Ctrl+Shift+V")
        im = self.eval_view.list.import_menu
        im.addAction("Paste a log...", lambda: import_dialogs.paste_log(self))
        im.addAction("Log file...", self.import_log_dialog)
        im.addAction("Points from CSV (name, GiB, PPL[, err])...", self.import_points_dialog)
        r = self.menuBar().addMenu("&Recipe")
        self._action(r, "Export &ik_llama.cpp command...", lambda: export_command(self, False))
        self._action(r, "Export &mainline llama.cpp command...", lambda: export_command(self, True))
        self._action(r, "&Import command or custom= block...", lambda: import_command(self))
        fill_library_menu(self, r.addMenu("Published &recipes"))
        run = self.menuBar().addMenu("&Run")
        self._action(run, "&Evaluate", self.run_evaluation, "F5")
        self._action(run, "&Cancel running jobs", self.cancel_jobs, "Shift+F5")
        self._action(run, "&Quantize to GGUF...", self.quantize_control.start_dialog, "Ctrl+Shift+Q")
        self._action(run, "Compare &importance modes...", self.compare_importance)
        self._action(run, "&Optimize for a size budget...", self.optimize_dialog)
        h = self.menuBar().addMenu("&Help")
        self._action(h, "&About iqk-studio", lambda: desktop.about(self))

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    # --- model -------------------------------------------------------------------------------
    @property
    def cost_store(self):
        """Where the optimizer's measurements are kept and read: the results list's store
        when it is a file, else the user's default store (None)."""
        src = self.results.source
        return src.store.path if getattr(src, "persistent", False) else None

    @property
    def model(self):
        return self.session.model

    @property
    def plan(self):
        return self.session.snapshot.plan

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open GGUF", desktop.last_dir(self),
                                              "GGUF (*.gguf);;All (*)")
        if path:
            self.open_model(path)

    def open_model(self, path) -> bool:
        err = self.session.open_model(path)
        if err:
            QMessageBox.critical(self, "Cannot open model", err)
            return False
        m = self.session.model
        self.setWindowTitle(f"iqk-studio \u2014 {Path(path).name}")
        self._title()
        self.statusBar().showMessage(f"opened {path}: {len(m.tensors)} tensors, {m.arch}", 10000)
        desktop.add_recent(self, str(path))
        return True

    def open_files(self, paths) -> None:
        """Dropped files: a .gguf opens as the model, a .csv adds third-party points, a
        llama-perplexity log is imported, anything else loads as a recipe."""
        from iqk_studio.external.logimport import parse_log

        for p in paths:
            low = str(p).lower()
            if not p:
                continue
            if low.endswith(".gguf"):
                self.open_model(p)
            elif low.endswith(".csv"):
                import_dialogs.import_points_csv(self, p)
            elif low.endswith(".recipe"):
                self._load_recipe_or_say(p)
            else:
                try:
                    text = import_dialogs.read_text(p)
                    parse_log(text)
                except (OSError, ValueError):
                    self._load_recipe_or_say(p)
                else:
                    import_dialogs.import_log_file(self, p, text)

    def _load_recipe_or_say(self, path) -> None:
        err = self.session.load_recipe_file(path)
        if err:
            self.statusBar().showMessage(f"not a recipe or a llama-perplexity log: {err}", 10000)

    def import_log_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a llama-perplexity log",
                                              desktop.last_dir(self),
                                              "Logs (*.log *.txt *.md);;All (*)")
        if path:
            import_dialogs.import_log_file(self, path)

    def import_points_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import points: name, GiB, PPL[, PPL err]",
                                              desktop.last_dir(self), "CSV (*.csv);;All (*)")
        if path:
            import_dialogs.import_points_csv(self, path)

    def dragEnterEvent(self, e) -> None:  # noqa: N802 (Qt API)
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802
        self.open_files([u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()])

    # --- plan ----------------------------------------------------------------------------------
    def _plan_changed(self, snap: Snapshot) -> None:
        if snap.plan is not None:
            self.summary.show_plan(snap.plan)
            self.statusBar().showMessage(f"{size_line(snap.plan)} \u2014 planned "
                                         f"{len(snap.plan.entries)} tensors in "
                                         f"{snap.plan_ms:.1f} ms")
        self._stale()

    def _stale(self, *_) -> None:
        s = self.session
        why = ("the recipe has an error: these are the numbers of the last valid recipe"
               if s.snapshot.plan is None and not s.pending else "updating...")
        self.summary.set_stale(s.stale, why)

    def _tensor_selected(self, current, _previous=None) -> None:
        tv = self.tensors_view
        if self.session.model is None or not current.isValid():
            return
        name = tv.table_model.name_at(tv.proxy.mapToSource(current).row())
        self.grids_view.set_tensor(self.session.model, name)

    # --- recipe files --------------------------------------------------------------------------
    def load_recipe_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load recipe", desktop.last_dir(self),
                                              RECIPE_FILTER)
        if path:
            err = self.session.load_recipe_file(path)
            if err:
                QMessageBox.critical(self, "Cannot load recipe", err)

    def save_recipe(self) -> bool:
        path = self.session.recipe_path
        return self._save_to(path) if path else self.save_recipe_dialog()

    def save_recipe_dialog(self) -> bool:
        name = (self.session.recipe_name or "recipe") + ".recipe"
        path, _ = QFileDialog.getSaveFileName(self, "Save recipe",
                                              str(Path(desktop.last_dir(self)) / name),
                                              RECIPE_FILTER)
        if not path:
            return False
        if not Path(path).suffix:
            path += ".recipe"
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        err = self.session.save_recipe_file(path)
        if err:
            QMessageBox.critical(self, "Cannot save recipe", err)
            return False
        self.statusBar().showMessage(f"saved {path}", 5000)
        return True

    def _title(self, clean: bool | None = None) -> None:
        if clean is not None:
            self._clean = clean
        name = Path(self.session.model_path).name if self.session.model_path else ""
        dirty = "" if getattr(self, "_clean", True) else " *"
        self.setWindowTitle(f"iqk-studio \u2014 {name}{dirty}" if name else f"iqk-studio{dirty}")

    # --- jobs ----------------------------------------------------------------------------------
    def run_evaluation(self) -> bool:
        self.tabs.setCurrentWidget(self.eval_view)
        return self.eval_view.start()

    def cancel_jobs(self) -> None:
        for r in self.runners():
            r.cancel()

    def compare_importance(self) -> None:
        """The recipe with each imatrix, default weights and w = 1 (a dialog; runs to the list)."""
        from iqk_studio.gui.importance_dialog import open_dialog

        dlg = open_dialog(self)
        if dlg is not None:
            dlg.exec()

    def optimize_dialog(self):
        """The optimizer's dialog (modeless; the one running is raised instead of a new one)."""
        from iqk_studio.gui.optimize_dialog import open_dialog

        dlg = self._optimize
        if dlg is not None and dlg.runner.busy:
            dlg.raise_()
            return dlg
        if dlg is not None:
            dlg.deleteLater()
        self._optimize = dlg = open_dialog(self)
        if dlg is not None:
            dlg.show()
        return dlg

    def runners(self):
        extra = (self._optimize.runner,) if self._optimize is not None else ()
        return (self.eval_view.panel.runner, self.quantize_control.runner,
                self.grids_view.runner, self.grids_view.stats_view.runner,
                self.sensitivity_view.panel.runner) + extra

    def shutdown(self) -> None:
        """Cancel running jobs and wait for their threads (a cancelled quantize removes its
        temp file), then release the model's memory maps."""
        for r in self.runners():
            r.cancel()
        for r in self.runners():
            r.wait(60000)
        self.session.close_model()
        self.eval_view.list.timer.stop()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if self.ask_to_save and not self.session.undo_stack.isClean():
            answer = QMessageBox.question(
                self, "Unsaved recipe", "The recipe has unsaved changes. Save them first?",
                QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
            if answer == QMessageBox.Cancel or (answer == QMessageBox.Save
                                                and not self.save_recipe()):
                event.ignore()
                return
        if self.settings is not None:
            desktop.save(self, self.settings)
        self.shutdown()
        super().closeEvent(event)

