"""`iqk-studio --self-test`: drive the real window through open -> plan -> perplexity -> quantize
on a tiny model made on the spot, checking each step against an oracle; exit status 0 when all
pass. It is how packaging/build.py smoke-tests the frozen app, and how a user checks an install."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the tiny model (gguf/tiny.py, seed 0) on sample_text(), n_ctx 128, 2 chunks, as measured by
# ik_llama.cpp 8337e4cd3: llama-perplexity -m tiny.gguf -f tiny.txt -c 128 --chunks 2 -t 2
# -> [1]1853.7633,[2]1543.9967 (our engine: 1853.3308, 1543.8972; tokens identical)
REF_PPL, PPL_RTOL = 1543.9967, 0.005
N_CTX, CHUNKS = 128, 2
TENSOR, QTYPE = "blk.0.ffn_down.weight", "q8_0"
RECIPE = "@base Q8_0\nblk\\.0\\.ffn_down\\.weight=q8_0\n.*=f32\n"


class SelfTestError(Exception):
    """A step did not do what it should."""


def _wait(app, cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > timeout:
            raise SelfTestError(f"timed out after {timeout:.0f} s waiting for {what}")


def _numba_files() -> int:
    d = os.environ.get("NUMBA_CACHE_DIR", "")
    return sum(1 for _ in Path(d).rglob("*.nbi")) if d and Path(d).is_dir() else 0


def run(app, win, workdir: Path, say=print, timeout: float = 1800.0) -> None:
    """The steps, on `win` (a MainWindow shown by `app`); raises SelfTestError at the first
    step that fails. Files go to `workdir`."""
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.gguf.tiny import sample_text, write_tiny_model
    from iqk_studio.gguf.types import by_name

    t00 = time.monotonic()
    say(f"numba cache: {os.environ.get('NUMBA_CACHE_DIR', '(numba default)')} "
        f"({_numba_files()} kernel index files)")
    model_path = write_tiny_model(workdir / "tiny.gguf")
    text_path = workdir / "tiny.txt"
    text_path.write_text(sample_text())

    # 1. open
    t0 = time.monotonic()
    if not win.open_model(str(model_path)):
        raise SelfTestError(f"cannot open {model_path}")
    src = win.session.model
    if len(src.tensors) != 21 or win.tensors_view.proxy.rowCount() != 21:
        raise SelfTestError(f"opened {len(src.tensors)} tensors, the table shows "
                            f"{win.tensors_view.proxy.rowCount()}; expected 21")
    say(f"open: {model_path.name}, {len(src.tensors)} tensors ({time.monotonic() - t0:.2f} s)")

    # 2. plan: one tensor to q8_0, the rest kept as f32; size from the type table
    t0 = time.monotonic()
    s = win.session
    s.set_text(RECIPE, "self-test recipe", name="self-test")
    snap = s.flush()
    if snap.refusal():
        raise SelfTestError(f"the recipe was refused: {snap.refusal()}")
    t = src.tensors[TENSOR]
    want = sum(x.nbytes for x in src.tensors.values()) - t.nbytes + \
        by_name(QTYPE).nbytes(tuple(t.shape))
    types = {e.name: e.type for e in snap.plan.entries}
    if types[TENSOR] != QTYPE or snap.plan.total_bytes != want or \
            any(v != "f32" for k, v in types.items() if k != TENSOR):
        raise SelfTestError(f"plan: {TENSOR} -> {types[TENSOR]}, {snap.plan.total_bytes} bytes "
                            f"(expected {QTYPE}, {want} bytes, the rest f32)")
    say(f"plan: {TENSOR} -> {QTYPE}, {snap.plan.total_bytes} bytes "
        f"({time.monotonic() - t0:.2f} s)")

    # 3. perplexity of the file, two chunks, through the Evaluate tab
    t0 = time.monotonic()
    ev = win.eval_view
    st = ev.settings
    st.engine.setCurrentIndex(0)
    st.target.setCurrentIndex(0)
    st.metric.setCurrentIndex(0)
    st.text.setText(str(text_path))
    st.n_ctx.setValue(N_CTX)
    st.chunks.setValue(CHUNKS)
    got = []
    ev.finished.connect(got.append)
    if not win.run_evaluation():
        raise SelfTestError(f"evaluation did not start: {ev.panel.status.toolTip()}")
    _wait(app, lambda: not ev.panel.busy, timeout, "the perplexity run")
    if not got:
        raise SelfTestError(f"the perplexity run failed: {ev.panel.status.toolTip()}")
    r = got[0]
    if r.n_chunks != CHUNKS or not math.isfinite(r.ppl) or \
            abs(r.ppl / REF_PPL - 1) > PPL_RTOL:
        raise SelfTestError(f"perplexity {r.ppl:.4f} over {r.n_chunks} chunks; ik_llama.cpp "
                            f"gives {REF_PPL} over {CHUNKS}")
    say(f"perplexity: {r.ppl:.4f} over {r.n_chunks} chunks of {r.n_ctx} (ik_llama.cpp: "
        f"{REF_PPL}) ({time.monotonic() - t0:.1f} s, kernels compiled or loaded included)")

    # 4. quantize: the one tensor's bytes against gguf-py's Q8_0 quantizer
    t0 = time.monotonic()
    out = workdir / "tiny-q8_0-one.gguf"
    qc = win.quantize_control
    if not qc.start(str(out)):
        raise SelfTestError("quantize did not start")
    _wait(app, lambda: not qc.runner.busy, timeout, "the quantize job")
    if not out.is_file():
        raise SelfTestError(f"quantize wrote no {out.name}")
    _check_quantized(src, open_model(out))
    say(f"quantize: {out.name}, {TENSOR} equals gguf-py's {QTYPE}, the rest copied "
        f"({time.monotonic() - t0:.1f} s)")
    say(f"numba cache after: {_numba_files()} kernel index files")
    say(f"self-test passed in {time.monotonic() - t00:.1f} s")


def _check_quantized(src, dst) -> None:
    import gguf

    from iqk_studio.gguf.types import by_name

    try:
        for name, t in src.tensors.items():
            a = np.asarray(src.tensor_data(name))
            b = np.asarray(dst.tensor_data(name))
            if name == TENSOR:
                rows = a.view(np.float32).reshape(-1, t.shape[0])
                ref = gguf.quants.quantize(rows, gguf.GGMLQuantizationType.Q8_0)
                if dst.tensors[name].type_id != by_name(QTYPE).id or \
                        not np.array_equal(ref.reshape(-1), b.reshape(-1)):
                    raise SelfTestError(f"{name}: the quantized bytes differ from gguf-py's")
            elif not np.array_equal(a, b):
                raise SelfTestError(f"{name}: not copied unchanged")
    finally:
        dst.close()


def main(workdir: str | None) -> int:
    """Run the self-test in a new window (settings and results in memory only); 0 on success."""
    from PySide6.QtWidgets import QApplication

    from iqk_studio.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    win = MainWindow()
    win.show()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="iqk-studio-selftest-")
        workdir = tmp.name
    Path(workdir).mkdir(parents=True, exist_ok=True)
    say = lambda m: print(f"self-test: {m}", flush=True)  # noqa: E731
    app.processEvents()
    say("window shown")  # packaging/build.py times the start-up up to this line
    try:
        run(app, win, Path(workdir), say)
        return 0
    except SelfTestError as e:
        say(f"FAILED: {e}")
        return 1
    finally:
        win.shutdown()
        win.close()
        if tmp is not None:
            tmp.cleanup()
