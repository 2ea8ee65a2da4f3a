"""Live prediction for the editor: the predicted KLD of any plan of a model from the optimizer's
cached measurements (results store), answered in about a millisecond per re-plan.

    live = LivePredictor.for_model(model_path)      # None when nothing was measured for it
    live.predict(plan)                              # -> Prediction(kld, covered, groups, missing)
"""

from __future__ import annotations

from iqk_studio.optimize.costs import CostTable, Prediction, table_from_rows
from iqk_studio.optimize.space import group_of


class LivePredictor:
    """A model's cost table (the measurement set with most KLD values), loaded once."""

    def __init__(self, table: CostTable, key, n_measured: int):
        self.table = table
        self.key = key  # results.CostKey: text, n_ctx, chunks, imatrix it was measured with
        self.n_measured = n_measured

    @classmethod
    def for_model(cls, model_path, store=None, text_id: str | None = None) -> LivePredictor | None:
        """From the store (a path, a ResultsStore, or None for the default); None when the
        store has no measurements of this model (or of it on text_id, when given)."""
        from iqk_studio.gguf.reader import open_model
        from iqk_studio.results.recording import model_id
        from iqk_studio.results.store import ResultsStore, StoreError

        mid = model_id(model_path)
        if mid is None:
            return None
        try:
            st = store if isinstance(store, ResultsStore) else ResultsStore(store)
        except (StoreError, OSError):
            return None
        try:
            keys = [k for k in st.cost_keys(mid) if text_id is None or k[0].text_id == text_id]
            if not keys or keys[0][1] == 0:
                return None
            key, n, _ = keys[0]
            rows = st.get_costs(key)
        finally:
            if st is not store:
                st.close()
        with open_model(model_path) as m:
            sources = {n: t.qtype.name for n, t in m.tensors.items()}
            groups: dict[str, list[str]] = {}
            for name in m.tensors:
                groups.setdefault(group_of(name), []).append(name)
        return cls(table_from_rows(rows, sources, groups), key, n)

    def predict(self, plan) -> Prediction:
        return self.table.predict(plan)


def format_prediction(p: Prediction | None) -> str:
    """One line for a status bar: 'predicted KLD 0.0123' (+ coverage when incomplete)."""
    if p is None:
        return "predicted KLD: no measurements (run optimize)"
    if p.groups == 0:
        return "predicted KLD 0 (nothing quantized)"
    s = f"predicted KLD {p.kld:.4f}"
    if p.missing:
        s += f" ({p.covered}/{p.groups} groups measured)"
    return s
