"""KL-divergence job: self-comparison, a naive float64 reference on tiny models, the base-file
round trip, and llama-perplexity's printed formats."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine_tiny import N_VOCAB, reference_logits, write_tiny

from iqk_studio.engine.forward import Forward
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Finished, KldChunk
from iqk_studio.jobs.kld import format_chunk, kld_job, model_base, run_kld, save_base_job
from iqk_studio.jobs.kld_stats import BaseFileReader, median, percentile

N_CTX = 16


def tiny_pair(tmp_path, arch="qwen2", scale=0.0):
    spec, t = write_tiny(tmp_path / "base.gguf", arch)
    t2 = {k: v.copy() for k, v in t.items()}
    rng = np.random.default_rng(5)
    for k, v in t2.items():
        if k.endswith("attn_q.weight") or k.endswith("ffn_up.weight"):
            v += (scale * rng.standard_normal(v.shape) * np.abs(v).mean()).astype(np.float32)
    write_tiny(tmp_path / "q.gguf", arch, t2)
    return spec, t, t2


def run(tmp_path, tokens, chunks=-1):
    with open_model(tmp_path / "base.gguf") as b, open_model(tmp_path / "q.gguf") as q:
        bfw, qfw = Forward.from_model(b, kv_f16=False), Forward.from_model(q, kv_f16=False)
        base = model_base(bfw, tokens, N_CTX, True, 1)
        evs = list(run_kld(qfw, tokens, base, N_CTX, chunks, base_steps=bfw.cfg.n_layer + 1))
    return [e for e in evs if isinstance(e, KldChunk)], [e for e in evs if isinstance(e, Finished)]


def test_kld_of_model_against_itself_is_zero(tmp_path):
    tiny_pair(tmp_path, scale=0.0)
    tokens = np.random.default_rng(1).integers(2, N_VOCAB, 8 * N_CTX + 3)
    chunks, fin = run(tmp_path, tokens)
    assert len(chunks) == 8
    s = fin[0].result.stats
    assert s.same_top == 1.0 and s.count == 8 * 7
    assert abs(s.kld) < 1e-5 and fin[0].result.kld_max < 1e-4  # 16-bit base log-probs
    assert abs(s.ln_ratio) < 1e-4 and s.rms_dp < 1e-4


def test_kld_matches_naive_reference(tmp_path):
    spec, tb, tq = tiny_pair(tmp_path, scale=0.6)
    tokens = np.random.default_rng(2).integers(2, N_VOCAB, 3 * N_CTX)
    klds, same, nll_q = [], [], []
    for i in range(3):
        win = tokens[i * N_CTX:(i + 1) * N_CTX].copy()
        win[0] = 1
        lb = reference_logits(spec, tb, win)[N_CTX // 2:N_CTX - 1]
        lq = reference_logits(spec, tq, win)[N_CTX // 2:N_CTX - 1]
        lpb = lb - lb.max(1, keepdims=True)
        lpb -= np.log(np.exp(lpb).sum(1, keepdims=True))
        lpq = lq - lq.max(1, keepdims=True)
        lpq -= np.log(np.exp(lpq).sum(1, keepdims=True))
        klds += list((np.exp(lpb) * (lpb - lpq)).sum(1))
        same += list(lb.argmax(1) == lq.argmax(1))
        nll_q += list(-lpq[np.arange(7), tokens[i * N_CTX + N_CTX // 2 + 1:(i + 1) * N_CTX]])
    chunks, fin = run(tmp_path, tokens)
    s = fin[0].result.stats
    assert np.mean(klds) > 0.05  # the perturbation is visible
    assert s.kld == pytest.approx(np.mean(klds), rel=1e-3, abs=1e-4)
    assert s.same_top == pytest.approx(np.mean(same))
    assert s.ppl == pytest.approx(np.exp(np.mean(nll_q)), rel=1e-4)
    assert chunks[-1].kld == pytest.approx(s.kld) and chunks[-1].index == 3


def test_base_file_round_trip(tmp_path):
    tiny_pair(tmp_path, "llama", scale=0.4)
    rng = np.random.default_rng(3)
    # the tiny vocabularies have no tokenizer: write the base file from token ids directly
    tokens = rng.integers(2, N_VOCAB, 4 * N_CTX)
    chunks, fin = run(tmp_path, tokens)
    with open_model(tmp_path / "base.gguf") as b:
        from iqk_studio.jobs.kld_stats import BaseFileWriter

        bfw = Forward.from_model(b, kv_f16=False)
        w = BaseFileWriter(tmp_path / "b.kld", N_CTX, N_VOCAB, tokens)
        src = model_base(bfw, tokens, N_CTX, True, 1, w)
        for i in range(4):
            g = src(i, 0, 1)
            while True:
                try:
                    next(g)
                except StopIteration:
                    break
        w.close()
    r = BaseFileReader(tmp_path / "b.kld")
    assert (r.n_ctx, r.n_vocab, r.n_chunk, r.complete_chunks) == (N_CTX, N_VOCAB, 4, 4)
    np.testing.assert_array_equal(r.tokens, tokens)
    evs = list(kld_job(tmp_path / "b.kld", tmp_path / "q.gguf"))
    fin2 = [e for e in evs if isinstance(e, Finished)][0]
    # kld_job's forward rounds K/V to f16 like the reference; the run above did not
    assert fin2.result.stats.kld == pytest.approx(fin[0].result.stats.kld, rel=2e-2)


def test_save_base_job_refuses_short_text(tmp_path, shared):
    model = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    short = tmp_path / "s.txt"
    short.write_text("just a few words\n")
    with pytest.raises(ValueError, match="you need at least"):
        list(save_base_job(model, short, tmp_path / "o.kld"))
    assert not (tmp_path / "o.kld").exists()


def test_percentile_and_median_follow_reference():
    v = np.sort(np.array([0.5, -1.0, 2.0, 3.5, 0.25], np.float32))
    assert percentile(v, 0.5) == pytest.approx(0.5)
    assert percentile(v, 0.9) == pytest.approx(0.4 * 2.0 + 0.6 * 3.5, rel=1e-6)
    assert percentile(v, 0.0) == -1.0 and percentile(v, 1.0) == 3.5
    assert median(v) == 0.5 and median(v[:4]) == pytest.approx(0.375)


def test_chunk_line_format_matches_reference_log(shared):
    log = shared("refs", "ppl", "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log")
    line = [x for x in log.read_text(encoding="utf-8").splitlines() if x.startswith("   1  ")][0]
    ev = KldChunk(1, 8, 11.0817, 2.3795, 0.0, -0.00346, 0.00526, 0.00191, 0.00026, 0.01227,
                  0.00180, 0.98431, 0.00780, 0.0, 0.0)
    assert format_chunk(ev) == line


def test_chunk_kld_over_vocabulary_slices_and_nan():
    """chunk_kld: the rows of a chunk scored in blocks of positions equal one kld_rows call over
    all of them; a NaN anywhere in the model's output gives None (the job then fails)."""
    from iqk_studio.engine.scoring import base_rows, kld_rows
    from iqk_studio.jobs.kld_stats import chunk_kld

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(10, 17)).astype(np.float32)
    targets = rng.integers(0, 17, 10)
    base, _ = base_rows(rng.normal(size=(10, 17)).astype(np.float32), targets)

    class Fw:  # iter_logits yields (first row, logits of a block of rows) as Forward does
        def __init__(self, lg):
            self.lg = lg

        def iter_logits(self, h):
            for r0 in range(0, len(self.lg), 4):
                yield r0, self.lg[r0:r0 + 4]

    rows = chunk_kld(Fw(logits), None, base, targets)
    whole = kld_rows(logits, base, targets)
    assert [len(r.kld) for r in rows] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([r.kld for r in rows]), whole.kld)
    np.testing.assert_array_equal(np.concatenate([r.nll for r in rows]), whole.nll)
    bad = logits.copy()
    bad[9, 3] = np.nan
    assert chunk_kld(Fw(bad), None, base, targets) is None
