"""SIGINT and SIGTERM at seeded random points of real CLI runs (quantize, perplexity and imatrix of
the tiny reference model): the process ends with 130 / 143 and one line, never a traceback; no
temp file or partial output is left, and an existing destination is unchanged unless the run
finished. A kill -9 leaves a temp file that the next run to the same output removes.
A few kill points by default; IQK_FAULT_POINTS=N (or the slow test) runs more."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from iqk_studio.gguf.imatrix import load_imatrix
from iqk_studio.gguf.reader import open_model

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


@dataclass
class Run:
    kind: str  # quantize / perplexity / imatrix
    sig: str
    point: tuple[str, float]  # ("time", seconds after start) or ("line", output lines seen)
    existing: bool  # the destination exists before the run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from conftest import shared_path

    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = tmp_path_factory.mktemp("text") / "wiki.txt"
    text.write_bytes(shared_path("data", "wiki.test.raw").read_bytes()[:60_000])
    return model, text


def argv(kind: str, model: Path, text: Path, out: Path) -> list[str]:
    cli = [sys.executable, "-m", "iqk_studio.cli"]
    if kind == "quantize":
        return [*cli, "quantize", str(model), str(out), "Q4_0", "--threads", "1"]
    common = [str(model), "-f", str(text), "-c", "128", "--chunks", "6", "-t", "1"]
    if kind == "imatrix":
        return [*cli, "imatrix", *common, "-o", str(out)]
    return [*cli, "perplexity", *common]


DONE = {"quantize": "quantize time =", "perplexity": "Final estimate", "imatrix": "save_imatrix:"}


def output_of(kind: str, folder: Path) -> Path | None:
    return {"quantize": folder / "q.gguf", "imatrix": folder / "im.dat"}.get(kind)


def launch(cmd: list[str], point: tuple[str, float], sig: int) -> tuple[int, str, str]:
    """Start cmd, deliver sig at `point`, return (returncode, stdout, stderr)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         errors="replace")
    out: dict[str, list[str]] = {"out": [], "err": []}
    seen = threading.Event()

    def pump(stream, key):
        for line in stream:
            out[key].append(line)
            if point[0] == "line" and len(out["out"]) + len(out["err"]) >= point[1]:
                seen.set()

    threads = [threading.Thread(target=pump, args=(p.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, "err"), daemon=True)]
    for t in threads:
        t.start()
    if point[0] == "time":
        try:
            p.wait(timeout=point[1])
        except subprocess.TimeoutExpired:
            pass
    else:
        deadline = time.monotonic() + 120
        while not seen.wait(0.02) and p.poll() is None and time.monotonic() < deadline:
            pass
    if p.poll() is None:
        p.send_signal(sig)
    rc = p.wait(timeout=120)
    for t in threads:
        t.join(timeout=10)
    return rc, "".join(out["out"]), "".join(out["err"])


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def check_run(run: Run, inputs, folder: Path) -> str:
    """Run once and check every invariant; returns the outcome class."""
    model, text = inputs
    out = output_of(run.kind, folder)
    before = None
    if out is not None and run.existing:
        out.write_bytes(b"the previous result, which must survive an interrupted run\n")
        before = digest(out)
    sig = SIGNALS[run.sig]
    rc, stdout, stderr = launch(argv(run.kind, model, text, out or folder / "x"), run.point, sig)
    what = f"{run} -> rc {rc}\n{stderr[-2000:]}"
    temps = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert not temps, f"temp files left: {temps}; {what}"
    done = DONE[run.kind] in stdout + stderr  # the command's last line was printed
    if rc == 0 or (rc == -sig and done):  # (a signal during interpreter exit: the default action)
        outcome = "finished"
        assert out is None or complete(run.kind, out), what
    elif rc == -sig and not stdout and "cli.py\", line" not in stderr:
        # the signal landed before main() installed its handlers (interpreter start-up and
        # `import iqk_studio`, ~0.1 s): the default action, nothing was written or printed
        outcome = "before main()"
    else:
        assert rc == 128 + sig, what
        assert "Traceback" not in stderr, what
        # the last word (the signal may land between a line's text and its newline)
        assert stderr.rstrip().endswith("interrupted" if sig == signal.SIGINT else
                                        "terminated"), what
        outcome = "stopped"
    if outcome != "finished" and out is not None and out.exists():
        # all or nothing: the destination is what it was, or the complete new result (the
        # signal came after the rename, while the last lines were printed)
        if before is None or digest(out) != before:
            assert complete(run.kind, out), f"partial output left; {what}"
            outcome += " after the output was complete"
    if outcome != "before main()":
        assert "Traceback" not in stderr, what
    return outcome


def complete(kind: str, out: Path) -> bool:
    """`out` is a whole, valid result of the run."""
    if kind == "quantize":
        with open_model(out) as m:
            return len(m.tensors) == 51
    return load_imatrix(out).chunks == 6


def plan_runs(n_per_kind: int, seed: int) -> list[Run]:
    rng = random.Random(seed)
    lines = {"quantize": 52, "perplexity": 3, "imatrix": 3}  # output lines of a whole run
    runs = []
    for k, kind in enumerate(("quantize", "perplexity", "imatrix")):
        for i in range(n_per_kind):
            mode = ("time", "line", "time-late")[i % 3] if n_per_kind > 2 else \
                ("time", "line")[i % 2]
            if mode == "time":  # start-up: imports, argument checks, opening the model
                point = ("time", rng.uniform(0.3, 1.2))
            elif mode == "line":
                point = ("line", rng.randint(1, lines[kind]))
            else:
                point = ("time", rng.uniform(1.2, 6.0))
            runs.append(Run(kind, ("SIGINT", "SIGTERM")[(i + k) % 2], point,
                            existing=rng.random() < 0.5))
    return runs


def run_all(runs: list[Run], inputs, tmp_path) -> dict[str, int]:
    """Three victims at a time (each mostly waits for its imports); each in its own folder."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i_run):
        i, run = i_run
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        return f"{run.kind} {run.sig} {check_run(run, inputs, folder)}"

    counts: dict[str, int] = {}
    with ThreadPoolExecutor(3) as pool:
        for key in pool.map(one, enumerate(runs)):
            counts[key] = counts.get(key, 0) + 1
    print("\nfault outcomes:", dict(sorted(counts.items())))
    return counts


def test_signals_at_random_points(inputs, tmp_path):
    n = int(os.environ.get("IQK_FAULT_POINTS", "2"))
    counts = run_all(plan_runs(n, seed=8), inputs, tmp_path)
    assert sum(v for k, v in counts.items() if k.endswith("stopped")) >= 3  # kills did land


@pytest.mark.slow
def test_signals_at_many_random_points(inputs, tmp_path):
    counts = run_all(plan_runs(12, seed=2024), inputs, tmp_path)
    assert sum(v for k, v in counts.items() if k.endswith("stopped")) >= 20


def test_kill_9_temp_file_is_removed_by_the_next_run(inputs, tmp_path):
    model, text = inputs
    out = tmp_path / "q.gguf"
    cmd = argv("quantize", model, text, out)
    rc, _, _ = launch(cmd, ("line", 3), signal.SIGKILL)
    assert rc == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(".q.gguf.") and not out.exists()
    rc, _, err = launch(cmd, ("time", 600), signal.SIGINT)  # let it finish
    assert rc == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["q.gguf"]
