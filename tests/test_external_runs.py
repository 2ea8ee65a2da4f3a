"""External runs end to end with a stand-in binary (tests/fake_llama.py) that replays real logs
from ../shared/refs: streaming, arguments, cancel (SIGTERM, then SIGKILL), crash, NaN, outputs."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import shared_path

from iqk_studio.external.binaries import BinaryNotFound, detect, locate
from iqk_studio.external.runs import (
    imatrix_run,
    kld_run,
    perplexity_run,
    quantize_run,
)
from iqk_studio.jobs.events import (
    Chunk,
    Failed,
    Finished,
    KldChunk,
    Progress,
    RunInfo,
    TensorDone,
)

FAKE = Path(__file__).with_name("fake_llama.py")
TOOLS = ("llama-perplexity", "llama-quantize", "llama-imatrix")


def make_fake_bin(folder: Path) -> Path:
    """A build folder whose bin/ holds the stand-in under the three tool names."""
    bindir = folder / "build" / "bin"
    bindir.mkdir(parents=True)
    for tool in TOOLS:
        p = bindir / tool
        p.write_text(f"#!{sys.executable}\nimport os, runpy\n"
                     f"os.environ['FAKE_TOOL'] = os.path.basename(__file__)\n"
                     f"runpy.run_path({str(FAKE)!r}, run_name='__main__')\n")
        p.chmod(0o755)
    return folder


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """(build folder, setenv) with FAKE_DELAY 0 by default."""
    root = make_fake_bin(tmp_path / "llama")
    monkeypatch.setenv("FAKE_DELAY", "0")
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "pid"))
    return root, monkeypatch.setenv


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _ppl_log(name="tiny/tiny-qwen2.wiki.c512.4chunks.log") -> Path:
    return shared_path("refs", "ppl", name)


def test_locate_and_detect(fake, tmp_path, monkeypatch):
    root, setenv = fake
    exe = root / "build" / "bin" / "llama-perplexity"
    assert locate("llama-perplexity", root) == exe.resolve()  # a build folder
    assert locate("llama-perplexity", exe) == exe.resolve()  # the file itself
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BinaryNotFound, match="no llama-perplexity in .*empty/build/bin"):
        locate("llama-perplexity", empty)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(BinaryNotFound, match="is not an executable file"):
        locate("llama-perplexity", empty / "notes.txt")
    with pytest.raises(BinaryNotFound, match="no such file, folder or command"):
        locate("llama-perplexity", "no-such-llama-tool")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("IQK_LLAMA_BIN", raising=False)
    with pytest.raises(BinaryNotFound, match="IQK_LLAMA_BIN"):
        locate("llama-perplexity")
    monkeypatch.setenv("IQK_LLAMA_BIN", str(root))
    b = detect("llama-perplexity")
    assert (b.flavour, b.build, b.commit, b.version) == ("ik_llama.cpp", 4840, "8337e4cd3",
                                                         "build 4840 (8337e4cd3)")
    setenv("FAKE_FLAVOUR", "mainline")
    assert detect("llama-perplexity").flavour == "llama.cpp"
    assert detect("llama-quantize").flavour == "llama.cpp"
    setenv("FAKE_FLAVOUR", "ik")
    assert detect("llama-quantize").flavour == "ik_llama.cpp"


def test_perplexity_streams_and_finishes(fake, tmp_path):
    root, setenv = fake
    log = _ppl_log("gemma3-270m-q4_k_m.wiki.c512.log")
    setenv("FAKE_LOG", str(log))
    setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    extra = ["-ngl", "99", "-ot", "exps=CPU", "--odd arg", ""]
    evs = list(perplexity_run(detect("llama-perplexity", root), "m.gguf", "wiki.txt", 512, 8,
                              extra))
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["-m", "m.gguf", "-f", "wiki.txt", "-c", "512", "--chunks", "8"] + extra
    chunks = [e for e in evs if isinstance(e, Chunk)]
    assert len(chunks) == 570 and chunks[0].ppl == 11.0817 and chunks[-1].ppl == 18.8097
    info = next(e for e in evs if isinstance(e, RunInfo))
    assert evs.index(info) < evs.index(chunks[0])
    assert (info.engine, info.version) == ("ik_llama.cpp", "build 4840 (8337e4cd3)")
    assert info.facts["kv_k"] == "f16" and info.command[1:3] == ("-m", "m.gguf")
    fin = evs[-1]
    assert isinstance(fin, Finished)
    assert fin.message == "Final estimate: PPL over 570 chunks for n_ctx=512 = 18.8097 +/- 0.15237"
    assert (fin.result.ppl, fin.result.n_chunks, fin.result.chunk_ppl[1]) == (18.8097, 570,
                                                                              14.5590)


def test_values_arrive_while_the_tool_runs(fake, tmp_path):
    """Chunks 1-2 are events while the tool is still busy with chunk 3; closing the job (cancel)
    sends SIGTERM to the process group."""
    root, setenv = fake
    setenv("FAKE_LOG", str(_ppl_log()))
    setenv("FAKE_STALL_AT", "3")
    job = perplexity_run(detect("llama-perplexity", root), "m", "t", 512, grace=5.0)
    seen = []
    for ev in job:
        if isinstance(ev, Chunk):
            seen.append(ev.ppl)
        if len(seen) == 2 and isinstance(ev, Progress):
            break  # a heartbeat after chunk 2: the tool is alive and stalled
    pid = int((tmp_path / "pid").read_text())
    assert seen == [1698244.6159, 1850640.3023] and _alive(pid)
    t0 = time.monotonic()
    job.close()
    assert not _alive(pid) and time.monotonic() - t0 < 4


def test_cancel_kills_a_tool_that_ignores_sigterm(fake, tmp_path):
    root, setenv = fake
    setenv("FAKE_LOG", str(_ppl_log()))
    setenv("FAKE_STALL_AT", "2")
    setenv("FAKE_IGNORE_TERM", "1")
    job = perplexity_run(detect("llama-perplexity", root), "m", "t", 512, grace=0.5)
    next(ev for ev in job if isinstance(ev, Chunk))
    pid = int((tmp_path / "pid").read_text())
    t0 = time.monotonic()
    job.close()
    assert time.monotonic() - t0 >= 0.5  # SIGTERM was ignored for the grace period
    assert not _alive(pid)


def test_nan_chunk_stops_the_run(fake, tmp_path):
    root, setenv = fake
    setenv("FAKE_LOG", str(_ppl_log()))
    setenv("FAKE_NAN_AT", "3")
    b = detect("llama-perplexity", root)
    evs = list(perplexity_run(b, "m", "t", 512, stop_on_nan=True))
    chunks = [e for e in evs if isinstance(e, Chunk)]
    assert [c.index for c in chunks] == [1, 2, 3] and chunks[2].ppl != chunks[2].ppl
    assert isinstance(evs[-1], Failed) and evs[-1].message.startswith("chunk 3: the perplexity")
    assert not _alive(int((tmp_path / "pid").read_text()))
    # without the option the run goes on, the NaN chunks flagged by their value
    evs = list(perplexity_run(b, "m", "t", 512))
    assert [c.ppl != c.ppl for c in evs if isinstance(c, Chunk)] == [False, False, True, True]


def test_non_zero_exit_and_crash_are_failures(fake, tmp_path):
    root, setenv = fake
    logs = shared_path("refs", "quant", "logs")
    b = detect("llama-quantize", root)
    out = tmp_path / "out" / "model.gguf"
    out.parent.mkdir()
    setenv("FAKE_LOG", str(logs / "iq1_kt.log"))
    setenv("FAKE_EXIT", "1")
    evs = list(quantize_run(b, ["--custom-q", ".*=iq1_kt"], "in.gguf", out, "Q8_0"))
    assert isinstance(evs[-1], Failed)
    msg = evs[-1].message
    assert msg.startswith("llama-quantize failed (exit status 1): main: failed to quantize")
    assert "Missing importance matrix for tensor blk.0.attn_q.weight" in msg
    assert [e.name for e in evs if isinstance(e, TensorDone)] == ["token_embd.weight",
                                                                 "blk.0.attn_norm.weight"]
    setenv("FAKE_LOG", str(logs / "iq1_s.log"))
    setenv("FAKE_EXIT", "abort")
    evs = list(quantize_run(b, [], "in.gguf", out, "Q8_0"))
    assert evs[-1].message.startswith("llama-quantize failed (killed by SIGABRT)")
    assert "GGML_ASSERT(imatrix != NULL) failed" in evs[-1].message
    assert list(out.parent.iterdir()) == []  # the half-written output was removed


def test_quantize_writes_its_output_atomically(fake, tmp_path):
    root, setenv = fake
    setenv("FAKE_LOG", str(shared_path("refs", "quant", "logs", "q4_K.log")))
    setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    out = tmp_path / "out" / "q4.gguf"
    out.parent.mkdir()
    evs = list(quantize_run(detect("llama-quantize", root), ["--custom-q", ".*=q4_K"],
                            "in.gguf", out, "Q8_0", 2, ["--pure"]))
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:4] == ["--custom-q", ".*=q4_K", "--pure", "in.gguf"]
    assert argv[5:] == ["Q8_0", "2"] and ".partial-" in argv[4]  # a temporary name...
    assert [p.name for p in out.parent.iterdir()] == ["q4.gguf"]  # ...renamed at the end
    done = [e for e in evs if isinstance(e, TensorDone)]
    assert len(done) == 13 and done[0].bytes == 64 * 576
    r = evs[-1].result
    assert (r.path, r.n_tensors, r.n_quantized) == (out, 13, 10)
    assert r.seconds == pytest.approx(0.04361)
    assert round(r.bytes / 2**20, 2) == 0.35


def test_cancelled_quantize_leaves_nothing(fake, tmp_path):
    root, setenv = fake
    setenv("FAKE_LOG", str(shared_path("refs", "quant", "logs", "q4_K.log")))
    setenv("FAKE_STALL_AT", "5")
    out = tmp_path / "out" / "q4.gguf"
    out.parent.mkdir()
    job = quantize_run(detect("llama-quantize", root), [], "in.gguf", out, "Q8_0")
    n = 0
    for ev in job:
        n += isinstance(ev, TensorDone)
        if n == 4 and isinstance(ev, Progress):
            break
    assert len(list(out.parent.iterdir())) == 1  # the partial file while it runs
    job.close()
    assert list(out.parent.iterdir()) == []


def test_imatrix_run_reads_its_output_back(fake, tmp_path):
    root, setenv = fake
    setenv("FAKE_LOG", str(_ppl_log("gemma3-270m-f32.imatrix.log")))
    setenv("FAKE_OUTPUT_SRC", str(shared_path("refs", "ppl", "gemma3-270m-f32.wiki8.imatrix.dat")))
    out = tmp_path / "im.dat"
    evs = list(imatrix_run(detect("llama-imatrix", root), "m", "t", out, 512, 8))
    assert [e.ppl for e in evs if isinstance(e, Chunk)][-1] == 16.9846
    fin = evs[-1]
    assert fin.message.split("\n") == ["Final estimate: PPL = 16.9846 +/- 1.16435",
                                       f"save_imatrix: stored collected data after 8 chunks in "
                                       f"{out}"]
    assert fin.result is not None and len(fin.result.values) > 0
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".dat"] == ["im.dat"]


def test_kld_run_reproduces_the_statistics(fake, tmp_path):
    """The KldResult built from the tool's output prints exactly the tool's statistics."""
    from iqk_studio.jobs.kld import format_summary

    root, setenv = fake
    log = _ppl_log("gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log")
    setenv("FAKE_LOG", str(log))
    setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    evs = list(kld_run(detect("llama-perplexity", root), "q.gguf", "base.kld", 512, 8))
    assert json.loads((tmp_path / "argv.json").read_text())[-3:] == [
        "--kl-divergence-base", "base.kld", "--kl-divergence"]
    rows = [e for e in evs if isinstance(e, KldChunk)]
    assert len(rows) == 8 and rows[-1].kld == 0.00221
    text = log.read_text(encoding="utf-8")
    block = text[text.index("====== Perplexity"):].rstrip("\n")
    assert format_summary(evs[-1].result) == block


def test_missing_binary_is_a_failure(tmp_path):
    from iqk_studio.external.binaries import Binary

    b = Binary(tmp_path / "nope", "llama-perplexity")
    (ev,) = list(perplexity_run(b, "m", "t"))
    assert isinstance(ev, Failed) and "cannot run" in ev.message


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_sigterm_default_exit_is_reported(fake, tmp_path):
    from iqk_studio.external.process import describe_exit

    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_exit(3) == "exit status 3"
