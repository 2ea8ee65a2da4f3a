"""Parsers of llama-perplexity / llama-imatrix / llama-quantize output on every real log in
../shared/refs (values read off the logs by eye), fed in odd-sized pieces as a pipe delivers them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from conftest import shared_path

from iqk_studio.external.pplparse import PplLogParser
from iqk_studio.external.quantparse import QuantizeLogParser
from iqk_studio.jobs.events import Chunk, KldChunk, TensorDone


def _feed(parser, text: str, step: int = 37) -> list:
    out = []
    for i in range(0, len(text), step):
        out += parser.feed(text[i:i + step])
    return out + parser.close()


def _ppl(name: str, step: int = 37):
    text = shared_path("refs", "ppl", name).read_text(encoding="utf-8")
    p = PplLogParser()
    return p, _feed(p, text, step)


def test_perplexity_log_q4_k_m():
    p, evs = _ppl("gemma3-270m-q4_k_m.wiki.c512.log")
    chunks = [e for e in evs if isinstance(e, Chunk)]
    assert len(chunks) == 570 and [c.index for c in chunks] == list(range(1, 571))
    assert (chunks[0].ppl, chunks[1].ppl, chunks[12].ppl, chunks[-1].ppl) == (
        11.0817, 14.5590, 22.1891, 18.8097)
    assert all(c.count == 570 for c in chunks)
    assert p.final == (18.8097, 0.15237)
    f = p.facts
    assert (f["n_chunks"], f["n_ctx"], f["n_seq"], f["batch_size"]) == (570, 512, 4, 2048)
    assert (f["build"], f["commit"], f["flavour"]) == (4840, "8337e4cd3", "ik_llama.cpp")
    assert f["model_path"] == "gemma-3-270m-q4_k_m.gguf" and f["model_name"] == "Gemma 3 270m"
    assert (f["model_size"], f["bpw"], f["ftype"]) == (235.165, 7.358, "Q4_K - Medium")
    assert p.kv_type == "f16" and f["threads"] == 2 and f["seconds_per_pass"] == 4.21
    assert p.eta_seconds() == 600.0
    # per-chunk NLL from the running values: chunk 1's is ln of its PPL; chunk 2's makes the
    # running mean ln(PPL_2)
    assert chunks[0].nll == pytest.approx(math.log(11.0817))
    assert (chunks[0].nll + chunks[1].nll) / 2 == pytest.approx(math.log(14.5590))
    # speed from `seconds per pass` (no clock): 4 chunks of 512 per 4.21 s
    assert chunks[0].tokens_per_second == pytest.approx(4 * 512 / 4.21)


def test_perplexity_log_f32_and_tiny():
    p, _ = _ppl("gemma3-270m-f32.wiki.c512.log")
    assert len(p.chunks) == 570 and p.chunks[0] == 11.1201 and p.final == (18.7648, 0.15198)
    assert p.facts["ftype"] == "all F32" and p.facts["bpw"] == 32.0
    p, _ = _ppl("tiny/tiny-qwen2.wiki.c512.4chunks.log")
    assert p.chunks == [1698244.6159, 1850640.3023, 1689331.3652, 1551375.1756]
    assert p.final == (1551375.1756, 127470.91373) and p.facts["arch"] == "qwen2"
    p, _ = _ppl("tiny/tiny-qwen3moe.wiki.c512.4chunks.log")
    assert p.chunks == [1022598.6482, 1011510.5488, 887045.2623, 889529.7246]
    assert p.final == (889529.7246, 67082.70398) and p.facts["model_name"] == "tiny random qwen3moe"


def test_imatrix_log_short_final_line():
    p, evs = _ppl("gemma3-270m-f32.imatrix.log")
    assert [e.ppl for e in evs if isinstance(e, Chunk)][-1] == 16.9846 and len(p.chunks) == 8
    assert p.final == (16.9846, 1.16435)  # "Final estimate: PPL = X +/- Y"
    assert p.facts["n_chunks"] == 8 and p.facts["batch_size"] == 512 and p.n_ctx == 512
    assert p.facts["saved_to"] == "gemma3-270m-f32.wiki8.imatrix.dat"
    assert p.facts["tool"] == "compute_imatrix" and p.facts["flavour"] == "ik_llama.cpp"


def test_kld_log_table_and_statistics():
    p, evs = _ppl("gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log")
    rows = [e for e in evs if isinstance(e, KldChunk)]
    assert [r.index for r in rows] == list(range(1, 9))
    r = rows[0]
    assert (r.ppl, r.ppl_err, r.ln_ratio, r.ln_ratio_err, r.kld, r.kld_err) == (
        11.0817, 2.3795, -0.00346, 0.00526, 0.00191, 0.00026)
    assert (r.rms_dp, r.rms_dp_err, r.same_top, r.same_top_err) == pytest.approx(
        (0.01227, 0.00180, 0.98431, 0.00780))
    assert r.ppl_base == pytest.approx(11.0817 / math.exp(-0.00346))
    assert (rows[-1].ppl, rows[-1].kld, rows[-1].same_top) == pytest.approx((16.9922, 0.00221,
                                                                             0.97353))
    s = p.kld_stats
    assert (s["ppl"], s["ppl_err"], s["ppl_base"], s["ppl_base_err"]) == (
        16.992179, 1.163063, 16.984599, 1.164348)
    assert s["cor"] == pytest.approx(0.9997) and s["ppl_diff"] == 0.007579
    assert (s["kld"], s["kld_err"], s["kld_max"], s["kld_p99.9"], s["kld_median"],
            s["kld_p0.1"], s["kld_min"]) == (0.002215, 0.000139, 0.237536, 0.062968, 0.001562,
                                             -0.0, -0.000003)
    assert (s["mean_dp"], s["dp_max"], s["dp_p75.0"], s["dp_min"]) == pytest.approx(
        (-0.00034, 0.15359, 0.00204, -0.25988))
    assert (s["rms_dp"], s["rms_dp_err"], s["same_top"], s["same_top_err"]) == pytest.approx(
        (0.01241, 0.00148, 0.97353, 0.00356))
    assert p.final is None and p.facts["seconds_per_pass"] == 2.09


def test_values_arrive_without_newline():
    """Each `[i]x,` is an event as soon as its comma arrives, not at the end of the line."""
    p = PplLogParser(512)
    p.feed("perplexity: calculating perplexity over 3 chunks, n_ctx=512, batch_size=512, "
           "n_seq=1\n")
    assert p.feed("[1]11.08") == []
    (c,) = p.feed("17,[2]14.5")
    assert (c.index, c.count, c.ppl) == (1, 3, 11.0817)
    (c,) = p.feed("590,")
    assert c.ppl == 14.559
    evs = p.feed("[3]-nan,\nFinal estimate: PPL = nan +/- nan")
    assert math.isnan(evs[0].ppl) and p.final is None
    p.close()
    assert math.isnan(p.final[0])


def test_mainline_spelling_and_markers():
    text = ("build: 6500 (abc1234) with cc (GCC) 13.2 for x86_64-linux-gnu\n"
            "print_info: file format = GGUF V3 (latest)\n"
            "print_info: file type   = Q4_K - Medium\n"
            "perplexity: calculating perplexity over 2 chunks, n_ctx=256, batch_size=2048, "
            "n_seq=8\nperplexity: 1.50 seconds per pass - ETA 1 hours 2.50 minutes\n"
            "[1]5.1234,[2]6.0000,\nFinal estimate: PPL = 6.0000 +/- 0.12345\n")
    p = PplLogParser()
    _feed(p, text, 5)
    f = p.facts
    assert (f["build"], f["commit"], f["flavour"], f["ftype"]) == (6500, "abc1234", "llama.cpp",
                                                                   "Q4_K - Medium")
    assert p.final == (6.0, 0.12345) and p.chunks == [5.1234, 6.0] and p.n_ctx == 256
    assert p.eta_seconds() == 3600 + 150


@pytest.mark.parametrize("step", [1, 4096])
def test_piece_size_does_not_matter(step):
    _, whole = _ppl("gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log", 10**9)
    _, small = _ppl("gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log", step)
    assert small == whole


# ---------------------------------------------------------------------- llama-quantize

def _quant_logs() -> list[Path]:
    base = shared_path("refs")
    return sorted((base / "quant" / "logs").glob("*.log")) + sorted(
        (base / "plans").glob("*.log"))


def _qparse(path: Path):
    p = QuantizeLogParser()
    return p, _feed(p, path.read_text(), 53)


def test_every_quantize_log():
    """Finished logs: one TensorDone per tensor, and the exact sizes computed from each line's
    shape and type round to the totals the log prints; failed runs are recognised as such."""
    logs = _quant_logs()
    assert len(logs) >= 80
    failed = []
    for path in logs:
        p, evs = _qparse(path)
        if not p.finished:
            failed.append(path.name)
            assert re.search(r"failed|GGML_ASSERT|Inferior", "\n".join(p.tail)), path.name
            continue
        assert [e.index for e in evs] == list(range(1, evs[-1].count + 1)), path.name
        assert all(t.exact for t in p.tensors), path.name
        assert round(p.quant_bytes() / 2**20, 2) == p.totals["quant_mib"], path.name
        assert round(p.source_bytes() / 2**20, 2) == p.totals["model_mib"], path.name
    # the runs that need an imatrix and were started without one
    assert failed == ["iq1_kt.log", "iq1_m.log", "iq1_s.log", "iq2_kt.log", "iq2_s.log",
                      "iq2_xs.log", "iq2_xxs.log"]


def test_quantize_log_values():
    p, evs = _qparse(shared_path("refs", "quant", "logs", "q4_K.log"))
    assert evs[0] == TensorDone(1, 13, "token_embd.weight", "q4_K", 64 * 576, 0.0)
    assert evs[1] == TensorDone(2, 13, "blk.0.attn_norm.weight", "f32", 4096, 0.0)
    assert p.totals == {"model_mib": 2.39, "quant_mib": 0.35, "quantize_ms": 43.61}
    assert p.facts["model_out"] == "out/q4_K.gguf" and p.facts["build"] == 4840
    # a fallback type and other threads' messages inside the tensor's lines
    p, evs = _qparse(shared_path("refs", "plans", "gemma3-270m_custom1.log"))
    assert evs[1] == TensorDone(2, 236, "token_embd.weight", "q5_0", 262144 * 440, 0.0)
    assert (evs[2].name, evs[2].qtype) == ("blk.0.attn_k.weight", "iq4_nl")
    p, evs = _qparse(shared_path("refs", "plans", "qwen3moe-skeleton_IQ2_KS.log"))
    assert len(evs) == 579 and evs[-1] == TensorDone(579, 579, "output.weight", "q5_K",
                                                     151936 * 1408, 0.0)
    assert p.totals["quant_mib"] == 8530.25 and p.seconds() == pytest.approx(12.89499)


def test_speed_and_eta_count_passes_of_n_seq_chunks():
    t = [0.0]
    p = PplLogParser(clock=lambda: t[0])
    t[0] = 100.0  # model loading does not count
    p.feed("perplexity: calculating perplexity over 8 chunks, n_ctx=512, batch_size=2048, "
           "n_seq=4\n")
    t[0] = 110.0
    first = p.feed("[1]11.0,[2]12.0,[3]13.0,[4]14.0,")
    assert [(c.tokens_per_second, c.eta_seconds) for c in first] == [(4 * 512 / 10, 10.0)] * 4
    t[0] = 130.0
    (c5,) = p.feed("[5]15.0,")
    assert (c5.tokens_per_second, c5.eta_seconds) == (8 * 512 / 30, 0.0)
