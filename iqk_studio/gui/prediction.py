"""A label for the recipe editor: the predicted KLD of the current plan from the optimizer's
cached measurements (optimize.predict.LivePredictor), updated on every re-plan. Blank when the
results store has nothing measured for the model; grey while the plan is stale.

    label = PredictionLabel()
    label.set_model(path)        # reads the results store once
    label.update_plan(plan)      # on every re-plan (about a millisecond)
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from iqk_studio.optimize.predict import LivePredictor, format_prediction

_TIP = ("Predicted mean KLD against the source model, from the measurements `optimize` kept in "
        "the results store (sum over tensor groups)")


class PredictionLabel(QLabel):
    def __init__(self, parent=None, store=None):
        super().__init__(parent)
        self.store = store  # a results store path (None: the user's)
        self.live: LivePredictor | None = None
        self._model = None
        self.setWordWrap(True)
        self.setToolTip(_TIP)
        self.setText("")

    def set_model(self, path) -> None:
        """Read the model's measurements (again: after an optimization added some)."""
        self._model = path
        self.live = LivePredictor.for_model(path, store=self.store) if path else None
        self.setText("" if self.live is None else format_prediction(None))
        if self.live is not None:
            k = self.live.key
            self.setToolTip(f"{_TIP}; {self.live.n_measured} KLD measurements on "
                            f"{k.chunks} chunk(s) of {k.n_ctx} tokens")
        else:
            self.setToolTip(_TIP)

    def reload(self) -> None:
        self.set_model(self._model)

    def update_plan(self, plan) -> None:
        if self.live is None or plan is None:
            self.setText("")
            return
        self.setText(format_prediction(self.live.predict(plan)))

    def set_stale(self, stale: bool) -> None:
        self.setStyleSheet("color: #999" if stale else "")
