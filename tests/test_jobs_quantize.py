"""The quantize job and CLI against ik_llama.cpp's llama-quantize output (whole files, byte for
byte), cancellation, errors, one level of threads, and the in-memory quantize-dequantize used for
evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.gguf.imatrix import Imatrix
from iqk_studio.gguf.reader import open_model
from iqk_studio.gguf.types import parse_ftype
from iqk_studio.jobs import quantize as qjob
from iqk_studio.jobs.events import Failed, Finished, Progress, TensorDone
from iqk_studio.quant import api


@pytest.fixture
def inputs(shared):
    return shared("refs", "quant", "inputs.gguf")


def _plan(path, qtype):
    """What `--custom-q .*=TYPE` chooses on inputs.gguf: every 2-D/3-D weight."""
    with open_model(path) as m:
        return {n: qtype for n, t in m.tensors.items() if len(t.shape) >= 2}


def _run(inputs, out, qtype, **kw):
    events = list(qjob.quantize_model(inputs, _plan(inputs, qtype), out,
                                      ftype=parse_ftype("Q8_0"), threads=2, **kw))
    assert isinstance(events[-1], Finished), events[-1]
    return events


@pytest.mark.parametrize("qtype, with_imatrix", [("q8_0", False), ("q8_0", True),
                                                 ("iq4_k", True)])
def test_output_file_is_byte_identical_to_llama_quantize(shared, inputs, tmp_path, qtype,
                                                         with_imatrix):
    """Header, metadata (file_type, quantization_version, quantize.imatrix.*), tensor infos,
    alignment and data; iq4_k with an imatrix also covers the per-expert imatrix slices."""
    kw = {}
    suffix = ""
    if with_imatrix:
        from iqk_studio.gguf.imatrix import load_imatrix

        kw = {"imatrix": load_imatrix(shared("refs", "quant", "imatrix.dat")),
              "imatrix_path": "imatrix.dat"}  # the reference ran in refs/quant/
        suffix = ".imatrix"
    out = tmp_path / "out.gguf"
    events = _run(inputs, out, qtype, **kw)
    ref = shared("refs", "quant", "out", f"{qtype}{suffix}.gguf")
    assert out.read_bytes() == ref.read_bytes()
    done = [e for e in events if isinstance(e, TensorDone)]
    assert [e.index for e in done] == list(range(1, 14))
    assert sum(e.bytes for e in done) == events[-1].result.bytes
    assert any(isinstance(e, Progress) for e in events)


def test_plan_from_the_recipe_module(shared, inputs, tmp_path):
    from iqk_studio.recipe import Recipe, Rule, plan

    with open_model(inputs) as m:
        pl = plan(m, Recipe(base="Q8_0", rules=(Rule(".*", "q8_0"),)))
        out = tmp_path / "r.gguf"
    events = list(qjob.quantize_model(inputs, qjob.plan_targets(pl), out,
                                      ftype=parse_ftype("Q8_0"), threads=1))
    assert isinstance(events[-1], Finished)
    assert out.read_bytes() == shared("refs", "quant", "out", "q8_0.gguf").read_bytes()


def test_cancel_between_row_blocks_leaves_no_file(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(api, "ELEMENTS_PER_BLOCK", 1024 * 8)  # 8 rows of 1024 per block
    out = tmp_path / "c.gguf"
    job = qjob.quantize_model(inputs, _plan(inputs, "q8_0"), out, threads=1)
    progress = []
    for ev in job:
        if isinstance(ev, Progress):
            progress.append(ev)
            if len(progress) == 3:
                break
    assert [(p.done, p.total) for p in progress] == [(8, 64), (16, 64), (24, 64)]
    assert len(list(tmp_path.iterdir())) == 1  # the temp file, while suspended
    job.close()
    assert list(tmp_path.iterdir()) == []


def test_bad_output_dir_is_a_clean_failure(inputs, tmp_path):
    events = list(qjob.quantize_model(inputs, _plan(inputs, "q8_0"),
                                      tmp_path / "missing" / "o.gguf"))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert "does not exist" in events[0].message
    assert list(tmp_path.iterdir()) == []


def test_unknown_or_unimplemented_types_fail_before_writing(inputs, tmp_path):
    from iqk_studio.quant import registry
    from iqk_studio.quant.types import QUANT_TYPES

    missing = next(t.name for t in QUANT_TYPES if t.block == 32 and t.kind.value == "repacked"
                   and not registry.can_quantize(t.name))
    for qtype, msg in [("q4_k", "unknown quant type"), (missing, "not implemented")]:
        events = list(qjob.quantize_model(inputs, _plan(inputs, qtype), tmp_path / "o.gguf"))
        assert isinstance(events[-1], Failed) and msg in events[-1].message, events[-1]
    assert list(tmp_path.iterdir()) == []


def test_requantize_needs_permission(shared, tmp_path):
    src = shared("refs", "quant", "out", "q8_0.gguf")
    plan = _plan(src, "q4_0")
    events = list(qjob.quantize_model(src, plan, tmp_path / "o.gguf"))
    assert isinstance(events[-1], Failed)
    assert "requantizing from type q8_0 is disabled" in events[-1].message
    events = list(qjob.quantize_model(src, plan, tmp_path / "o.gguf", allow_requantize=True))
    assert isinstance(events[-1], Finished)
    with open_model(src) as m, open_model(tmp_path / "o.gguf") as q:
        raw = m.tensor_data("blk.0.attn_q.weight")
        want = api.quantize(api.dequantize(raw, "q8_0", 1024), "q4_0")
        assert q.tensor_data("blk.0.attn_q.weight").tobytes() == want.tobytes()
        assert q.metadata["general.file_type"] == 2  # Q4_0 inferred from the dominant type


def test_imatrix_size_mismatch_is_an_error(inputs, tmp_path):
    bad = Imatrix({"blk.0.attn_q.weight": np.ones(7, np.float32)}, {})
    events = list(qjob.quantize_model(inputs, _plan(inputs, "q4_0"), tmp_path / "o.gguf",
                                      imatrix=bad))
    assert isinstance(events[-1], Failed) and "imatrix size 7" in events[-1].message
    assert list(tmp_path.iterdir()) == []


def test_imatrix_name_fallbacks():
    from iqk_studio.quant.importance import candidate_names

    assert candidate_names("blk.3.ffn_gate_exps.weight") == [
        "blk.3.ffn_gate_exps.weight", "blk.3.ffn_gate_up_exps.weight", "blk.3.ffn_up_exps.weight"]
    assert candidate_names("blk.3.ffn_gate.weight")[1] == "blk.3.ffn_up.weight"
    assert candidate_names("blk.0.attn_v_b.weight")[1] == "blk.0.attn_kv_b.weight"
    assert candidate_names("blk.0.attn_kv_b.weight")[1] == "blk.0.attn_v_b.weight"


def test_in_memory_round_trip_matches_reference(shared, inputs):
    """QuantizedWeights (api.round_trip in row blocks, per-expert imatrix slices) gives exactly
    the dequantized llama-quantize output; prepare() steps block by block and keeps the result."""
    from iqk_studio.gguf.imatrix import load_imatrix
    from iqk_studio.jobs.recipe_eval import tensor_importance

    im = load_imatrix(shared("refs", "quant", "imatrix.dat"))
    name = "blk.0.ffn_down_exps.weight"  # 3-D: per-expert imatrix slices
    with open_model(inputs) as m, open_model(
            shared("refs", "quant", "out", "iq4_k.imatrix.gguf")) as ref:
        ws = QuantizedWeights(GGUFWeights(m), {name: "iq4_k"}, tensor_importance(m, [name], im))
        steps = list(ws.prepare())
        assert len(steps) >= 4 and steps[-1] == (64, 64, name)  # at least one step per expert
        y = ws.get(name)
        assert y.shape == (4, 16, 512) and y.dtype == np.float32
        want = api.dequantize(ref.tensor_data(name), "iq4_k", 512).reshape(4, 16, 512)
        np.testing.assert_array_equal(y, want)
        assert ws.get(name) is y and list(ws.prepare()) == []
        y2 = QuantizedWeights(GGUFWeights(m), {name: "iq4_k"}).get(name)
        assert not np.array_equal(y2, y)


def test_cancelled_prepare_keeps_nothing(inputs, monkeypatch):
    monkeypatch.setattr(api, "ELEMENTS_PER_BLOCK", 512 * 4)
    name = "blk.0.ffn_down_exps.weight"
    with open_model(inputs) as m:
        ws = QuantizedWeights(GGUFWeights(m), {name: "q4_0"})
        steps = ws.prepare()
        assert next(steps) == (4, 64, name)  # one block of 4 rows done, then cancelled
        steps.close()
        again = list(ws.prepare())  # starts again from the first block
        assert again[0] == (4, 64, name) and again[-1] == (64, 64, name)


def test_cli_quantize(shared, inputs, tmp_path, capsys, monkeypatch):
    from iqk_studio.cli import main

    out = tmp_path / "cli.gguf"
    assert main(["quantize", str(inputs), str(out), "Q8_0", "--custom-q", ".*=q8_0"]) == 0
    text = capsys.readouterr().out
    assert "[  11/  13]           blk.0.ffn_down_exps.weight - [  512,    16,     4,     1]" in text
    assert "quant size  =     0.64 MB" in text
    assert out.read_bytes() == shared("refs", "quant", "out", "q8_0.gguf").read_bytes()
    # a recipe file and an imatrix given as llama-quantize was given them (from refs/quant/)
    recipe = tmp_path / "r.recipe"
    recipe.write_text("# all weights\n@base Q8_0\n.*=q8_0\n")
    monkeypatch.chdir(inputs.parent)
    out2 = tmp_path / "cli2.gguf"
    assert main(["quantize", "inputs.gguf", str(out2), "--recipe", str(recipe),
                 "--imatrix", "imatrix.dat"]) == 0
    assert out2.read_bytes() == shared("refs", "quant", "out", "q8_0.imatrix.gguf").read_bytes()
    capsys.readouterr()
    assert main(["quantize", str(inputs), str(tmp_path / "no" / "x.gguf"), "Q8_0"]) == 1
    assert main(["quantize", str(inputs), str(out), "Q8_0", "--custom-q", ".*=q9_0"]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "q9_0" in err


def test_cli_ctrl_c_leaves_no_file(inputs, tmp_path, monkeypatch):
    from iqk_studio.cli import main
    from iqk_studio.commands import quantize as cmd

    lines = []

    def interrupt_after_three(*a):
        lines.append(a)
        if len(lines) == 3:
            raise KeyboardInterrupt
        return "line"

    monkeypatch.setattr(cmd, "_line", interrupt_after_three)
    out = tmp_path / "c.gguf"
    assert main(["quantize", str(inputs), str(out), "Q8_0", "--custom-q", ".*=q8_0"]) == 130
    assert len(lines) == 3 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("qtype, base", [("q4_0_r8", "q4_0"), ("q8_0_r8", "q8_0")])
def test_interleaved_output_is_the_reference_repacked(shared, inputs, tmp_path, monkeypatch,
                                                       qtype, base):
    """Every tensor written as an _R8 type de-interleaves to ik's own base-type output; small
    row blocks and 2 threads check that groups of 8 rows are never split."""
    from iqk_studio.quant.kernels.repacked.layout import to_base

    monkeypatch.setattr(api, "ELEMENTS_PER_BLOCK", 1024 * 8)
    out = tmp_path / "r8.gguf"
    _run(inputs, out, qtype)
    with open_model(out) as q, open_model(shared("refs", "quant", "out", f"{base}.gguf")) as ref:
        n = 0
        for name, t in q.tensors.items():
            if t.qtype.name == qtype:
                got = to_base(q.tensor_data(name), qtype, t.shape[0])
                assert got.tobytes() == ref.tensor_data(name).tobytes(), name
                n += 1
        assert n == 10


def test_interleaved_type_needs_rows_in_groups(inputs):
    with open_model(inputs) as m:
        src = m.tensors["output.weight"].qtype
    t = qjob._Task("w", (256, 6), src, qjob._qtype("iq4_k_r4"))
    with pytest.raises(ValueError, match="interleaves rows by 4"):
        qjob._check_task(t, False)


def test_uniform_ignores_and_does_not_record_the_imatrix(inputs, tmp_path):
    im = Imatrix({"blk.0.attn_q.weight": np.full(1024, 3.0, np.float32)}, {})
    out = tmp_path / "u.gguf"
    events = list(qjob.quantize_model(inputs, {"blk.0.attn_q.weight": "q4_0"}, out,
                                      imatrix=im, uniform=True, threads=1))
    assert isinstance(events[-1], Finished)
    with open_model(out) as q, open_model(inputs) as m:
        assert not any(k.startswith("quantize.imatrix") for k in q.metadata)
        x = m.tensor_data("blk.0.attn_q.weight").view(np.float32).reshape(64, 1024)
        want = api.quantize(x, "q4_0", uniform=True)
        assert q.tensor_data("blk.0.attn_q.weight").tobytes() == want.tobytes()


_WORKQUEUE_SCRIPT = """
import sys
import numpy as np
from iqk_studio.gguf.writer import TensorSpec, write_gguf
from iqk_studio.jobs.events import Finished
from iqk_studio.jobs.quantize import quantize_model
from iqk_studio.quant import api

src, out = sys.argv[1], sys.argv[2]
x = np.random.default_rng(0).standard_normal((1024, 512)).astype(np.float32)
write_gguf(src, [], [TensorSpec("w.weight", (512, 1024), 0)], [x])
for qtype in ("q8_0", "q4_K"):
    ev = list(quantize_model(src, {"w.weight": qtype}, out, threads=2))[-1]
    assert isinstance(ev, Finished), ev
    from iqk_studio.gguf.reader import open_model
    with open_model(out) as m:
        assert m.tensor_data("w.weight").tobytes() == api.quantize(x, qtype).tobytes(), qtype
import numba
print(numba.threading_layer())
"""


def test_threads_with_numba_workqueue_layer(tmp_path):
    """One level of parallelism: with numba's workqueue layer (no OpenMP/TBB) a threaded
    quantize runs instead of aborting with 'Concurrent access has been detected'."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    r = subprocess.run([sys.executable, "-c", _WORKQUEUE_SCRIPT, str(tmp_path / "s.gguf"),
                        str(tmp_path / "o.gguf")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["workqueue"]
