"""Runs recorded outside the window (the CLI, an earlier session) reach the chart: with no baseline
chosen, the newest finished perplexity run of a file as it is becomes the baseline (README
walk-through 2, command-line variant); CLI recipe runs are named after their base type."""

from iqk_studio.gui.results_model import ResultsModel
from iqk_studio.gui.store_source import StoreSource
from iqk_studio.results import ChunkRow, ResultsStore, RunSpec

MODEL, TEXT = "/m/model.gguf", "/t/wiki.test.raw"


def _add(s, status="finished", recipe=None, ppl=10.0, kind="perplexity"):
    rid = s.start_run(RunSpec(kind, model_path=MODEL, recipe=recipe, text_path=TEXT,
                              text_id="t", n_ctx=512, chunks=2,
                              plan_bytes=1000 if recipe else None,
                              plan_bpw=4.0 if recipe else None))
    for i in (1, 2):
        s.add_chunk(rid, ChunkRow(i, ppl, 0.1, nll=2.3 + 0.01 * i))
    s.finish_run(rid, status, final_ppl=ppl, final_ppl_err=0.1)
    return str(rid)


def test_newest_file_run_becomes_the_baseline(qapp, tmp_path):
    db = tmp_path / "results.sqlite3"
    with ResultsStore(db) as s:
        _add(s)
        newest = _add(s, ppl=10.5)
        _add(s, status="failed")  # not a baseline
        recipe = _add(s, recipe="@base IQ4_KS\n@allow-requantize\n", ppl=12.0)
    m = ResultsModel(StoreSource(ResultsStore(db)))
    assert m.baseline_id == newest
    run = m.run(recipe)
    assert run.name.endswith("+ IQ4_KS recipe")
    assert m.vs_base(run) is not None and m.vs_base(run).pct > 0


def test_no_file_run_no_baseline(qapp, tmp_path):
    db = tmp_path / "results.sqlite3"
    with ResultsStore(db) as s:
        _add(s, recipe="@base Q4_0\n")
    m = ResultsModel(StoreSource(ResultsStore(db)))
    assert m.baseline_id is None
