"""The results store: runs and chunks round-trip, recording a job as it runs, damaged / newer /
foreign databases refused with one clear line, imported logs, the data folder."""

from __future__ import annotations

import math
import sqlite3
import threading

import pytest
from conftest import shared_path

from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, RunInfo
from iqk_studio.jobs.perplexity import PerplexityResult
from iqk_studio.results import (
    ChunkRow,
    RecordedJob,
    ResultsStore,
    RunSpec,
    StoreError,
    default_path,
    open_store,
)


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite3") as s:
        yield s


def test_default_path_follows_the_env(tmp_path, monkeypatch):
    monkeypatch.setenv("IQK_STUDIO_DATA", str(tmp_path / "d"))
    assert default_path() == tmp_path / "d" / "results.sqlite3"
    with open_store() as s:
        assert s.path.exists()
        journal = s._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_run_and_chunks_round_trip(store):
    spec = RunSpec("perplexity", model_path="/m/a.gguf", model_id="ab" * 32, n_ctx=512,
                   chunks=8, recipe="@base IQ4_KS\nffn_down=q6_K\n", plan_bytes=123456,
                   plan_bpw=4.25, command=("llama-perplexity", "-m", "a"), facts={"threads": 2})
    rid = store.start_run(spec)
    store.add_chunk(rid, ChunkRow(1, ppl=11.5, nll=2.44))
    store.add_chunk(rid, ChunkRow(2, ppl=12.0, ppl_err=math.nan, nll=2.5, seconds=1.5))
    (info,) = store.list_runs()
    assert (info.id, info.status, info.n_done, info.kind, info.chunks) == (rid, "running", 2,
                                                                            "perplexity", 8)
    store.finish_run(rid, "finished", "Final estimate: ...", final_ppl=12.0, final_ppl_err=0.5)
    run = store.get_run(rid)
    r = run.info
    assert (r.status, r.final_ppl, r.final_ppl_err, r.recipe, r.plan_bytes) == (
        "finished", 12.0, 0.5, spec.recipe, 123456)
    assert r.command == spec.command and r.facts == {"threads": 2} and r.finished >= r.created
    assert [c.ppl for c in run.chunks] == [11.5, 12.0] and run.chunks[1].seconds == 1.5
    assert math.isnan(run.chunks[1].ppl_err) and math.isnan(run.chunks[0].kld)
    store.rename_run(rid, "IQ4_KS + q6_K down")
    assert store.list_runs(search="q6_K down")[0].label == "IQ4_KS + q6_K down"
    assert store.list_runs(kind="kld") == []
    store.delete_run(rid)
    assert store.list_runs() == []
    with pytest.raises(StoreError, match=f"no run {rid}"):
        store.get_run(rid)


def test_chunks_are_visible_while_the_run_goes_on(store):
    """Another connection (the GUI, `results list`) sees each chunk as soon as it is added."""
    rid = store.start_run(RunSpec("perplexity"))
    other = ResultsStore(store.path)
    for i in range(1, 4):
        store.add_chunk(rid, ChunkRow(i, ppl=10.0 + i))
        assert len(other.get_run(rid).chunks) == i
    other.close()


def _job(events):
    yield from events


def test_recorded_job_passes_events_and_records(store):
    evs = [RunInfo("ik_llama.cpp", "build 4840 (8337e4cd3)", ("llama-perplexity", "-m", "x"),
                   {"kv_k": "q8_0", "kv_v": "f16", "n_ctx": 1024}),
           Chunk(1, 2, 2.4, 11.0, math.nan, 100.0, 5.0), Chunk(2, 2, 2.6, 12.0, 0.3, 100.0, 0.0),
           Finished("Final estimate: PPL over 2 chunks", PerplexityResult(12.0, 0.3, 2, 1024, 1000,
                                                                         (11.0, 12.0), 3.0))]
    job = RecordedJob(_job(evs), RunSpec("perplexity", source="external"), store)
    assert list(job) == evs
    r = store.get_run(job.run_id)
    assert (r.info.status, r.info.engine, r.info.engine_version, r.info.kv_type, r.info.n_ctx) \
        == ("finished", "ik_llama.cpp", "build 4840 (8337e4cd3)", "q8_0/f16", 1024)
    assert (r.info.final_ppl, r.info.final_ppl_err) == (12.0, 0.3)
    assert [c.nll for c in r.chunks] == [2.4, 2.6]


def test_recorded_job_is_final_in_the_store_when_the_end_arrives(store):
    """Finished / Failed are recorded before they are passed on: the window receives them on
    another thread and reads the run's final values at once (it read an unfinished run, and
    overwrote the tool's full KLD statistics, when the job wrote only after the consumer's next
    call)."""
    fin = Finished("Final estimate: PPL over 2 chunks",
                   PerplexityResult(12.0, 0.3, 2, 1024, 1000, (11.0, 12.0), 3.0))
    job = RecordedJob(_job([Chunk(1, 2, 2.4, 11.0, 0.1, 100.0, 5.0), fin]),
                      RunSpec("perplexity"), store)
    assert next(job).index == 1 and next(job) is fin  # the generator is now paused at the end
    r = store.get_run(job.run_id).info
    assert (r.status, r.final_ppl, r.final_ppl_err) == ("finished", 12.0, 0.3)
    assert list(job) == [] and store.get_run(job.run_id).info.status == "finished"
    job = RecordedJob(_job([Chunk(1, 9, 2.4, 11.0, 0.1, 1.0, 1.0), Failed("chunk 2: NaN")]),
                      RunSpec("perplexity"), store)
    assert isinstance(next(job), Chunk) and isinstance(next(job), Failed)
    r = store.get_run(job.run_id).info
    assert (r.status, r.message, r.final_ppl) == ("failed", "chunk 2: NaN", 11.0)
    job.close()
    assert store.get_run(job.run_id).info.status == "failed"  # closing after the end changes nothing


def test_recorded_job_failed_and_cancelled(store):
    job = RecordedJob(_job([Chunk(1, 9, 2.4, 11.0, 0.1, 1.0, 1.0), Failed("chunk 2: NaN")]),
                      RunSpec("perplexity"), store)
    list(job)
    r = store.get_run(job.run_id).info
    assert (r.status, r.message, r.final_ppl, r.n_done) == ("failed", "chunk 2: NaN", 11.0, 1)
    job = RecordedJob(_job([Chunk(i, 9, 2.4, 11.0, 0.1, 1.0, 1.0) for i in range(1, 9)]),
                      RunSpec("perplexity"), store)
    for ev in job:
        if ev.index == 3:
            break
    job.close()
    r = store.get_run(job.run_id).info
    assert (r.status, r.n_done) == ("cancelled", 3)


def test_recorded_kld_job(store):
    row = KldChunk(1, 1, 11.08, 2.38, 11.12, -0.00346, 0.00526, 0.00191, 0.00026, 0.01227,
                   0.0018, 0.98431, 0.0078, 100.0, 0.0)
    job = RecordedJob(_job([row, Finished("", None)]), RunSpec("kld"), store)
    list(job)
    run = store.get_run(job.run_id)
    assert (run.info.final_kld, run.info.same_top) == (0.00191, 0.98431)
    c = run.chunks[0]
    assert (c.kld, c.rms_dp, c.same_top_err, c.ppl_base) == (0.00191, 0.01227, 0.0078, 11.12)


def test_store_writes_from_another_thread(store):
    """The GUI's worker thread records while the GUI thread reads."""
    rid = store.start_run(RunSpec("perplexity"))
    t = threading.Thread(target=lambda: [store.add_chunk(rid, ChunkRow(i, ppl=1.0))
                                         for i in range(1, 51)])
    t.start()
    while t.is_alive():
        store.list_runs()
    t.join()
    assert len(store.get_run(rid).chunks) == 50


def test_damaged_newer_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a results database, or damaged"):
        ResultsStore(bad)
    newer = tmp_path / "newer.sqlite3"
    ResultsStore(newer).close()
    db = sqlite3.connect(newer)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer iqk-studio .*schema 99.* up to 2"):
        ResultsStore(newer)
    foreign = tmp_path / "foreign.sqlite3"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not an iqk-studio results store"):
        ResultsStore(foreign)


def test_imported_logs(store):
    from iqk_studio.external.logimport import read_log

    ppl = read_log(shared_path("refs", "ppl", "gemma3-270m-q4_k_m.wiki.c512.log"))
    rid = store.add_imported(ppl, "published Q4_K_M", "card.txt")
    run = store.get_run(rid)
    r = run.info
    assert (r.status, r.source, r.kind, r.n_done, r.chunks, r.n_ctx) == (
        "imported", "imported", "perplexity", 570, 570, 512)
    assert (r.final_ppl, r.final_ppl_err, r.engine, r.engine_version, r.kv_type) == (
        18.8097, 0.15237, "ik_llama.cpp", "build 4840 (8337e4cd3)", "f16")
    assert r.plan_bytes == round(235.165 * 2**20) and r.plan_bpw == 7.358
    assert run.chunks[0].nll == pytest.approx(math.log(11.0817))
    assert r.facts["log_file"] == "card.txt" and r.label == "published Q4_K_M"
    kld = read_log(shared_path("refs", "ppl", "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log"))
    run = store.get_run(store.add_imported(kld))
    assert (run.info.kind, run.info.final_kld, run.info.final_kld_err) == ("kld", 0.002215,
                                                                            0.000139)
    assert run.info.summary["kld_p99.9"] == 0.062968 and run.chunks[-1].kld == 0.00221


def test_recorded_sensitivity_groups(store):
    from iqk_studio.jobs.sensitivity import Sensitivity

    evs = [Sensitivity(1, 2, "attn_v", 4096, 1024, 0.0125, 0.001, 0.002, 0.97, 1.5),
           Sensitivity(2, 2, "ffn_down", 8192, 2048, 0.031, 0.002, 0.004, 0.95, 2.5),
           Finished("2 groups tested over 2 chunks of 512", None)]
    job = RecordedJob(_job(evs), RunSpec("sensitivity"), store)
    assert list(job) == evs
    run = store.get_run(job.run_id)
    assert run.info.status == "finished" and run.info.n_done == 2 and run.chunks == ()
    g = run.groups[1]
    assert (g.index, g.label, g.bytes_before, g.bytes_after, g.kld, g.same_top) == (
        2, "ffn_down", 8192, 2048, 0.031, 0.95)


def test_costs_merge_and_key(tmp_path):
    from iqk_studio.results import CostKey, CostRow

    key = CostKey("m", "t", 512, 2, "", "v1")
    with open_store(tmp_path / "r.sqlite3") as s:
        s.put_costs(key, [CostRow("blk.0.attn_v", "q4_0", kld=0.01, kld_err=0.001, bytes=10)])
        s.put_costs(key, [CostRow("blk.0.attn_v", "q4_0", err=3.5, bytes=10),
                          CostRow("token_embd", "q8_0", kld=0.002, bytes=99)])
        s.put_costs(CostKey("m", "t", 512, 4, "", "v1"), [CostRow("x", "q4_0", kld=1.0)])
        rows = {(r.group, r.type): r for r in s.get_costs(key)}
    assert set(rows) == {("blk.0.attn_v", "q4_0"), ("token_embd", "q8_0")}
    r = rows[("blk.0.attn_v", "q4_0")]
    assert (r.kld, r.kld_err, r.err, r.bytes) == (0.01, 0.001, 3.5, 10)
    assert math.isnan(rows[("token_embd", "q8_0")].err)


def test_version_1_file_gains_the_costs_table(tmp_path):
    p = tmp_path / "old.sqlite3"
    with open_store(p):
        pass
    db = sqlite3.connect(p)
    db.execute("DROP TABLE costs")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    from iqk_studio.results import CostKey, CostRow

    with open_store(p) as s:
        s.put_costs(CostKey("m", "t", 512, 1), [CostRow("g", "q4_0", kld=0.5)])
        assert s.get_costs(CostKey("m", "t", 512, 1))[0].kld == 0.5
