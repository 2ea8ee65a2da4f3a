"""The real llama.cpp / ik_llama.cpp binaries of the build folder in $IQK_LLAMA_BIN, on the demo
model and the quantizer's test inputs (a few chunks each); skipped, saying so, when it is unset."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from conftest import shared_path

from iqk_studio.jobs.events import Chunk, Finished, KldChunk, RunInfo, TensorDone

BIN = os.environ.get("IQK_LLAMA_BIN")
pytestmark = pytest.mark.skipif(not BIN, reason="IQK_LLAMA_BIN is not set (a llama.cpp / "
                                "ik_llama.cpp build folder): real-binary tests skipped")


@pytest.fixture(scope="module")
def demo():
    from iqk_studio.demo import demo_model_path

    try:
        return demo_model_path()
    except (ImportError, FileNotFoundError, OSError) as e:
        pytest.skip(f"demo model not installed: {e}")


def _tool(name):
    from iqk_studio.external.binaries import BinaryNotFound, detect

    try:
        return detect(name)
    except BinaryNotFound as e:
        pytest.skip(str(e))


def test_perplexity_4_chunks_match_the_reference_log(demo):
    from iqk_studio.external.runs import perplexity_run

    b = _tool("llama-perplexity")
    assert b.flavour in ("ik_llama.cpp", "llama.cpp") and b.build is not None
    evs = list(perplexity_run(b, demo, shared_path("data", "wiki.test.raw"), 512, 4,
                              ["-t", "2"]))
    assert isinstance(evs[-1], Finished), evs[-1]
    info = next(e for e in evs if isinstance(e, RunInfo))
    assert info.engine == b.flavour and info.facts["n_chunks"] == 4
    got = [e.ppl for e in evs if isinstance(e, Chunk)]
    ref = [11.0817, 14.5590, 15.3357, 15.7654]  # shared/refs/ppl/gemma3-270m-q4_k_m.wiki.c512.log
    assert got == pytest.approx(ref, rel=2e-3)
    assert evs[-1].result.ppl == got[-1]


def test_cancel_a_real_run(demo):
    from iqk_studio.external.runs import perplexity_run

    job = perplexity_run(_tool("llama-perplexity"), demo, shared_path("data", "wiki.test.raw"),
                         512, -1, ["-t", "2"], grace=5.0)
    started = next(job)  # Progress "llama-perplexity: started (pid N)"
    pid = int(re.search(r"pid (\d+)", started.message).group(1))
    next(e for e in job if isinstance(e, Chunk))
    t0 = time.monotonic()
    job.close()
    assert time.monotonic() - t0 < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_quantize_matches_the_reference_output(tmp_path):
    from iqk_studio.external.runs import quantize_run

    b = _tool("llama-quantize")
    if b.flavour != "ik_llama.cpp":
        pytest.skip("the reference outputs are ik_llama.cpp's")
    src = shared_path("refs", "quant", "inputs.gguf")
    out = tmp_path / "q4_K.gguf"
    evs = list(quantize_run(b, ["--custom-q", ".*=q4_K"], src, out, "Q8_0", 1))
    assert isinstance(evs[-1], Finished), evs[-1]
    assert len([e for e in evs if isinstance(e, TensorDone)]) == 13
    assert out.read_bytes() == shared_path("refs", "quant", "out", "q4_K.gguf").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q4_K.gguf"]


def test_imatrix_and_kld_on_the_demo_model(demo, tmp_path):
    from iqk_studio.external.runs import imatrix_run, kld_run, save_base_run

    text = shared_path("data", "wiki.test.raw")
    evs = list(imatrix_run(_tool("llama-imatrix"), demo, text, tmp_path / "im.dat", 512, 2,
                           ["-t", "2"]))
    assert isinstance(evs[-1], Finished), evs[-1]
    assert evs[-1].result is not None and (tmp_path / "im.dat").exists()
    b = _tool("llama-perplexity")
    base = tmp_path / "base.kld"
    evs = list(save_base_run(b, demo, text, base, 512, 2, ["-t", "2"]))
    assert isinstance(evs[-1], Finished) and base.exists(), evs[-1]
    evs = list(kld_run(b, demo, base, 512, 2, ["-t", "2"]))
    rows = [e for e in evs if isinstance(e, KldChunk)]
    assert len(rows) == 2 and isinstance(evs[-1], Finished), evs[-1]
    s = evs[-1].result.stats  # the same model against itself
    assert abs(s.kld) < 1e-4 and s.same_top > 0.99 and s.ppl == pytest.approx(s.ppl_base, rel=1e-5)
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["base.kld", "im.dat"]
