"""iqk-studio-cli with --llama-* (the stand-in binary), import-log and results: what is printed,
what reaches the tool, what the results store keeps (also when the app is killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import shared_path
from test_external_runs import make_fake_bin

from iqk_studio.cli import main
from iqk_studio.results import ResultsStore, file_id, model_id


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh results store and the stand-in build folder."""
    monkeypatch.setenv("IQK_STUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FAKE_DELAY", "0")
    return make_fake_bin(tmp_path / "llama"), monkeypatch.setenv


def _store(tmp_path):
    return ResultsStore(tmp_path / "data" / "results.sqlite3")


def test_perplexity_with_llama_perplexity(env, tmp_path, capsys):
    root, setenv = env
    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = shared_path("data", "wiki.test.raw")
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")))
    setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    rc = main(["perplexity", str(model), "-f", str(text), "-c", "512", "--chunks", "4",
               "--llama-perplexity", str(root), "--", "-ngl", "99", "-fa", "-ot", "exps=CPU"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out == ["[1]1698244.6159,[2]1850640.3023,[3]1689331.3652,[4]1551375.1756,",
                   "Final estimate: PPL over 4 chunks for n_ctx=512 = 1551375.1756 +/- "
                   "127470.91373"]
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "-m", str(model), "-f", str(text), "-c", "512", "--chunks", "4", "-ngl", "99", "-fa",
        "-ot", "exps=CPU"]
    with _store(tmp_path) as s:
        (r,) = s.list_runs()
        run = s.get_run(r.id)
    assert (r.kind, r.source, r.status, r.n_done, r.chunks, r.n_ctx) == (
        "perplexity", "external", "finished", 4, 4, 512)
    assert (r.engine, r.engine_version, r.kv_type) == ("ik_llama.cpp", "build 4840 (8337e4cd3)",
                                                       "f16")
    assert (r.model_id, r.text_id) == (model_id(model), file_id(text)) and r.model_id
    assert r.final_ppl == 1551375.1756 and run.chunks[3].ppl == 1551375.1756
    assert list(r.command[1:]) == json.loads((tmp_path / "argv.json").read_text())
    # results list / show / export
    assert main(["results", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["id"] == r.id and listed["final_ppl_err"] == 127470.91373
    assert main(["results", "show", str(r.id)]) == 0
    shown = capsys.readouterr().out
    assert "ik_llama.cpp build 4840 (8337e4cd3)" in shown and "1551375.1756" in shown
    assert main(["results", "export", str(r.id), "--csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0].startswith("chunk,ppl,ppl_err,nll") and csv_lines[4].startswith(
        "4,1551375.1756,")


def test_extra_args_need_an_external_tool(env, tmp_path, capsys):
    text = tmp_path / "x.txt"
    text.write_text("some text\n")
    assert main(["perplexity", "demo", "-f", str(text), "--", "-ngl", "99"]) == 1
    assert "add --llama-perplexity" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", "demo", "--", "-x"])


def test_missing_binary_is_one_line(env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("IQK_LLAMA_BIN", raising=False)
    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = shared_path("data", "wiki.test.raw")
    assert main(["perplexity", str(model), "-f", str(text), "--llama-perplexity"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("iqk-studio-cli: error: llama-perplexity not found") and "\n" not in err


def test_failed_external_run(env, tmp_path, capsys):
    root, setenv = env
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")))
    setenv("FAKE_NAN_AT", "2")
    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    rc = main(["perplexity", str(model), "-f", str(shared_path("data", "wiki.test.raw")),
               "--llama-perplexity", str(root), "--stop-on-nan"])
    cap = capsys.readouterr()
    assert rc == 1 and cap.out.startswith("[1]1698244.6159,[2]nan,")
    assert "error: chunk 2: the perplexity is nan" in cap.err
    with _store(tmp_path) as s:
        (r,) = s.list_runs()
    assert (r.status, r.n_done) == ("failed", 2)


def test_killed_app_keeps_finished_chunks(env, tmp_path):
    """The CLI is killed (SIGKILL) while llama-perplexity runs: the chunks it had are stored."""
    root, setenv = env
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "gemma3-270m-q4_k_m.wiki.c512.log")))
    setenv("FAKE_STALL_AT", "6")
    setenv("FAKE_PIDFILE", str(tmp_path / "tool.pid"))
    cmd = [sys.executable, "-m", "iqk_studio.cli", "perplexity",
           str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")), "-f",
           str(shared_path("data", "wiki.test.raw")), "--llama-perplexity", str(root)]
    app = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            db = tmp_path / "data" / "results.sqlite3"
            if db.exists():
                with ResultsStore(db) as s:
                    runs = s.list_runs()
                    if runs and runs[0].n_done == 5:
                        break
            time.sleep(0.05)
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    finally:
        app.kill()
        pid = tmp_path / "tool.pid"
        if pid.exists():  # the tool outlives a killed app (its own session): end it here
            try:
                os.killpg(int(pid.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    with _store(tmp_path) as s:
        (r,) = s.list_runs()
        run = s.get_run(r.id)
    assert (r.status, r.n_done) == ("interrupted", 5)
    assert [c.ppl for c in run.chunks] == [11.0817, 14.5590, 15.3357, 15.7654, 15.2507]


def test_quantize_with_llama_quantize(env, tmp_path, capsys):
    root, setenv = env
    setenv("FAKE_LOG", str(shared_path("refs", "quant", "logs", "q4_K.log")))
    setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    src = shared_path("refs", "quant", "inputs.gguf")
    out = tmp_path / "q.gguf"
    rc = main(["quantize", str(src), str(out), "Q8_0", "--custom-q", ".*=q4_K",
               "--llama-quantize", str(root), "--threads", "3", "--", "--pure"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and out.exists()
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:4] == ["--custom-q", ".*=q4_K", "--pure", str(src)] and argv[-2:] == ["Q8_0",
                                                                                      "3"]
    assert lines[1].startswith("[   1/  13]                    token_embd.weight - [ 1024,    "
                               "64,     1,     1], type =    f32, converting to q4_K")
    assert lines[-3:-1] == ["model size  =     2.39 MB", "quant size  =     0.35 MB"]


def test_import_log_json(env, tmp_path, capsys):
    kld = shared_path("refs", "ppl", "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log")
    assert main(["import-log", str(kld), "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["final"] == {"ppl": 16.992179, "ppl_err": 1.163063} and j["n_ctx"] == 512
    assert j["model"] == "gemma-3-270m-q4_k_m.gguf" and len(j["chunks"]) == 8
    assert j["kld"]["kld"] == 0.002215 and j["kld"]["same_top"] == pytest.approx(0.97353)
    # as pasted into a forum: no header, quote markers, the value stream wrapped, mainline's
    # final-line spelling
    log = shared_path("refs", "ppl", "gemma3-270m-q4_k_m.wiki.c512.log").read_text()
    stream = log[log.index("[1]"):log.index("\n", log.index("[1]"))]
    wrapped = "\n".join("> " + stream[k:k + 75] for k in range(0, len(stream), 75))
    pasted = tmp_path / "post.txt"
    pasted.write_text("Here is my run:\n```\n" + wrapped + "\n> Final estimate: PPL = 18.8097 "
                      "+/- 0.15237\n```\n")
    assert main(["import-log", str(pasted), "--json", "--no-store"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert len(j["chunks"]) == 570 and j["chunks"][569] == 18.8097 and j["chunks"][9] == 19.4320
    assert j["final"] == {"ppl": 18.8097, "ppl_err": 0.15237} and j["kld"] is None
    assert j["model"] is None and j["n_ctx"] is None
    with _store(tmp_path) as s:
        assert [r.kind for r in s.list_runs()] == ["kld"]  # --no-store kept the second out
    (tmp_path / "empty.txt").write_text("nothing to see\n")
    assert main(["import-log", str(tmp_path / "empty.txt")]) == 1
    assert "no llama-perplexity or llama-imatrix results found" in capsys.readouterr().err


def test_results_errors_are_one_line(env, tmp_path, capsys):
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"garbage" * 200)
    assert main(["results", "--db", str(bad), "list"]) == 1
    err = capsys.readouterr().err.strip()
    assert "not a results database, or damaged" in err and "\n" not in err
    assert main(["results", "show", "42"]) == 1
    assert "no run 42" in capsys.readouterr().err


def test_kld_with_llama_perplexity(env, tmp_path, capsys):
    """BASE is a model: its log-probs are saved first (a temporary file), then the comparison;
    the table and statistics print as the tool printed them."""
    root, setenv = env
    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    kld_log = shared_path("refs", "ppl", "gemma3-270m.kld-q4_k_m-vs-f32.c512.8chunks.log")
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")))
    setenv("FAKE_LOG_KLD", str(kld_log))
    rc = main(["kld", str(model), str(model), "-f", str(shared_path("data", "wiki.test.raw")),
               "--chunks", "8", "--llama-perplexity", str(root)])
    out = capsys.readouterr().out
    assert rc == 0
    text = kld_log.read_text(encoding="utf-8")
    table = text[text.index("chunk             PPL"):text.index("\n\n", text.index("chunk  "))]
    stats = text[text.index("====== Perplexity"):].rstrip("\n")
    assert table in out and stats in out
    assert not list(tmp_path.glob("iqk-kld-base-*")) and not list(
        (tmp_path / "llama").glob("*.kld"))
    with _store(tmp_path) as s:
        kinds = [(r.kind, r.status, r.n_done) for r in s.list_runs()]
    assert kinds == [("kld", "finished", 8), ("perplexity", "finished", 4)]


def test_imatrix_with_llama_imatrix(env, tmp_path, capsys):
    root, setenv = env
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "gemma3-270m-f32.imatrix.log")))
    setenv("FAKE_OUTPUT_SRC", str(shared_path("refs", "ppl", "gemma3-270m-f32.wiki8.imatrix.dat")))
    out = tmp_path / "im.dat"
    rc = main(["imatrix", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")), "-f",
               str(shared_path("data", "wiki.test.raw")), "-o", str(out), "--chunks", "8",
               "--llama-imatrix", str(root)])
    cap = capsys.readouterr()
    assert rc == 0 and out.read_bytes() == shared_path(
        "refs", "ppl", "gemma3-270m-f32.wiki8.imatrix.dat").read_bytes()
    assert cap.out.splitlines() == ["[1]11.1201,[2]14.5942,[3]15.3512,[4]15.7840,[5]15.2406,"
                                    "[6]16.0840,[7]16.4387,[8]16.9846,",
                                    "Final estimate: PPL = 16.9846 +/- 1.16435"]
    with _store(tmp_path) as s:
        (r,) = s.list_runs()
    assert (r.kind, r.status, r.final_ppl, r.n_done) == ("imatrix", "finished", 16.9846, 8)


def test_builtin_perplexity_is_recorded(env, tmp_path, capsys):
    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = shared_path("data", "wiki.test.raw")
    assert main(["perplexity", str(model), "-f", str(text), "-c", "64", "--chunks", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    with _store(tmp_path) as s:
        (r,) = s.list_runs()
        run = s.get_run(r.id)
    assert (r.kind, r.source, r.status, r.engine, r.kv_type, r.n_ctx, r.chunks) == (
        "perplexity", "builtin", "finished", "iqk-studio", "f16", 64, 2)
    assert r.model_id == model_id(model) and r.text_id == file_id(text)
    assert out[0] == "".join(f"[{c.index}]{c.ppl:.4f}," for c in run.chunks)
    assert out[1].endswith(f"= {r.final_ppl:.4f} +/- {r.final_ppl_err:.5f}")
    assert r.plan_bytes > 0 and r.plan_bpw == pytest.approx(32.0, rel=0.01)
    assert main(["perplexity", str(model), "-f", str(text), "-c", "64", "--chunks", "1",
                 "--no-store"]) == 0
    with _store(tmp_path) as s:
        assert len(s.list_runs()) == 1


def test_a_damaged_store_does_not_stop_the_run(env, tmp_path, capsys):
    root, setenv = env
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "results.sqlite3").write_bytes(b"garbage" * 200)
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")))
    rc = main(["perplexity", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")), "-f",
               str(shared_path("data", "wiki.test.raw")), "--llama-perplexity", str(root)])
    cap = capsys.readouterr()
    assert rc == 0 and cap.out.endswith("= 1551375.1756 +/- 127470.91373\n")
    assert "warning: the run is not recorded:" in cap.err and "damaged" in cap.err


def test_sigterm_to_the_app_stops_the_tool(env, tmp_path):
    """SIGTERM (or Ctrl-C) to the CLI ends the tool's process group and records a cancel."""
    root, setenv = env
    setenv("FAKE_LOG", str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.wiki.c512.4chunks.log")))
    setenv("FAKE_STALL_AT", "3")
    setenv("FAKE_PIDFILE", str(tmp_path / "tool.pid"))
    cmd = [sys.executable, "-m", "iqk_studio.cli", "perplexity",
           str(shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")), "-f",
           str(shared_path("data", "wiki.test.raw")), "--llama-perplexity", str(root)]
    app = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "data" / "results.sqlite3"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.exists():
                with ResultsStore(db) as s:
                    runs = s.list_runs()
                    if runs and runs[0].n_done == 2:
                        break
            time.sleep(0.05)
        tool = int((tmp_path / "tool.pid").read_text())
        app.send_signal(signal.SIGTERM)
        out, _ = app.communicate(timeout=20)
    finally:
        app.kill()
    assert app.returncode == 130 and out.decode().startswith("[1]1698244.6159,[2]1850640.3023,")
    with pytest.raises(ProcessLookupError):
        os.kill(tool, 0)
    with ResultsStore(db) as s:
        (r,) = s.list_runs()
    assert (r.status, r.n_done) == ("cancelled", 2)
