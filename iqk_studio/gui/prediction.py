"""A label for the recipe editor: the predicted KLD of the current plan from the optimizer's
cached measurements (optimize.predict.LivePredictor), updated on every re-plan.

    label = PredictionLabel()
    label.set_model(path)        # reads the results store once
    label.update_plan(plan)      # on every re-plan (about a millisecond)
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from iqk_studio.optimize.predict import LivePredictor, format_prediction


class PredictionLabel(QLabel):
    def __init__(self, parent=None, store=None):
        super().__init__(parent)
        self._store = store  # a results store path (None: the user's)
        self.live: LivePredictor | None = None
        self.setToolTip("Predicted mean KLD against the source model, from the measurements "
                        "`optimize` kept in the results store (sum over tensor groups)")
        self.setText("")

    def set_model(self, path) -> None:
        self.live = LivePredictor.for_model(path, store=self._store) if path else None
        self.setText("" if self.live is None else format_prediction(None))

    def update_plan(self, plan) -> None:
        if self.live is None:
            self.setText("")
            return
        self.setText(format_prediction(self.live.predict(plan)))
