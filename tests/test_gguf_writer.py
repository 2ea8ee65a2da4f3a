"""The streaming GGUF writer: byte-identical to ggml's writer, fork type ids, alignment, and
never a half-written file."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.gguf.reader import open_model
from iqk_studio.gguf.values import ValueType
from iqk_studio.gguf.writer import KV, GGUFWriter, TensorSpec, model_kvs, set_kv, write_gguf
from iqk_studio.quant.types import by_name


def _copy(src, dst):
    with open_model(src) as m:
        specs = [TensorSpec(n, t.shape, t.type_id) for n, t in m.tensors.items()]
        write_gguf(dst, model_kvs(m), specs, (m.tensor_data(s.name) for s in specs))


@pytest.mark.parametrize("ref", ["inputs.gguf", "out/q8_0.imatrix.gguf", "out/iq4_kt.gguf"])
def test_rewrite_is_byte_identical_to_ik_llama_output(shared, tmp_path, ref):
    src = shared("refs", "quant", *ref.split("/"))
    _copy(src, tmp_path / "copy.gguf")
    assert (tmp_path / "copy.gguf").read_bytes() == src.read_bytes()


def _small(tmp_path, alignment=None):
    rng = np.random.default_rng(0)
    kvs = [KV("general.architecture", "llama"), KV("llama.block_count", 1, ValueType.UINT32),
           KV("general.name", "tiny"), KV("tokenizer.ggml.tokens", ["a", "b", "ä"]),
           KV("llama.rope.freq_base", 10000.0, ValueType.FLOAT32),
           KV("some.i64_array", np.array([-1, 2**40], dtype=np.int64))]
    q8 = by_name("q8_0")
    data = {
        "a.weight": rng.standard_normal((3, 64), dtype=np.float32),
        "b.weight": rng.integers(0, 256, (2, 3 * 34 + 0), dtype=np.uint8),  # q8_0 rows of 96
        "c.weight": rng.integers(0, 256, (4, 4 + 128), dtype=np.uint8),  # iq4_kt rows of 256
    }
    specs = [TensorSpec("a.weight", (64, 3), 0), TensorSpec("b.weight", (96, 2), q8.id),
             TensorSpec("c.weight", (256, 4), by_name("iq4_kt").id)]
    path = tmp_path / "small.gguf"
    write_gguf(path, kvs, specs, (data[s.name] for s in specs), alignment)
    return path, kvs, specs, data


def test_reader_and_gguf_py_read_back(tmp_path):
    path, kvs, specs, data = _small(tmp_path)
    with open_model(path) as m:
        assert list(m.tensors) == [s.name for s in specs]
        for s in specs:
            assert m.tensors[s.name].type_id == s.type_id
            assert m.tensors[s.name].shape == s.shape
            assert m.tensor_data(s.name).tobytes() == data[s.name].tobytes()
            assert m.tensors[s.name].offset % 32 == 0
        assert m.metadata["tokenizer.ggml.tokens"] == ["a", "b", "ä"]
        assert m.metadata_types["llama.block_count"][0] == ValueType.UINT32
        np.testing.assert_array_equal(m.metadata["some.i64_array"], [-1, 2**40])
    # gguf-py knows the mainline ids only: check a file without the fork tensor
    import gguf

    p2 = tmp_path / "mainline.gguf"
    write_gguf(p2, kvs, specs[:2], (data[s.name] for s in specs[:2]))
    r = gguf.GGUFReader(p2)
    assert [t.name for t in r.tensors] == ["a.weight", "b.weight"]
    np.testing.assert_array_equal(np.asarray(r.tensors[0].data), data["a.weight"])
    assert bytes(np.asarray(r.tensors[1].data).view(np.uint8)) == data["b.weight"].tobytes()
    assert r.fields["general.name"].contents() == "tiny"


def test_general_alignment_is_honoured(tmp_path):
    kvs = [KV("general.alignment", 64, ValueType.UINT32)]
    path = tmp_path / "a64.gguf"
    write_gguf(path, kvs, [TensorSpec("x", (3,), 0), TensorSpec("y", (5,), 0)],
               [np.ones(3, np.float32), np.ones(5, np.float32)])
    with open_model(path) as m:
        assert all(t.offset % 64 == 0 for t in m.tensors.values())


def test_streaming_parts_and_order_checks(tmp_path):
    spec = TensorSpec("w", (32, 4), 0)
    with GGUFWriter(tmp_path / "s.gguf", [], [spec]) as w:
        with pytest.raises(ValueError, match="out of order"):
            w.write("other", np.zeros(4, np.float32))
        w.write("w", np.zeros((2, 32), np.float32))
        with pytest.raises(ValueError, match="bytes for a tensor"):
            w.write("w", np.zeros((3, 32), np.float32))
        w.write("w", np.ones((2, 32), np.float32))
        w.finish()
    with open_model(tmp_path / "s.gguf") as m:
        assert m.tensor_data("w").view(np.float32).sum() == 64


def test_unfinished_or_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "never.gguf"
    with pytest.raises(RuntimeError):
        with GGUFWriter(out, [], [TensorSpec("w", (32,), 0)]) as w:
            w.write("w", np.zeros(16, np.float32))
            raise RuntimeError("boom")
    with GGUFWriter(out, [], [TensorSpec("w", (32,), 0)]):
        pass  # left without finish()
    w = GGUFWriter(out, [], [TensorSpec("w", (32,), 0)]).open()
    with pytest.raises(ValueError, match="not written"):
        w.finish()
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_only_on_success(tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    with GGUFWriter(out, [], [TensorSpec("w", (32,), 0)]) as w:
        w.write("w", np.zeros(8, np.float32))
    assert out.read_bytes() == b"old"
    write_gguf(out, [], [TensorSpec("w", (32,), 0)], [np.zeros(32, np.float32)])
    assert out.read_bytes()[:4] == b"GGUF"


def test_bad_destination_and_bad_metadata_are_clean_errors(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        GGUFWriter(tmp_path / "no" / "x.gguf", [], []).open()
    with pytest.raises(ValueError, match="metadata bad"):
        GGUFWriter(tmp_path / "x.gguf", [KV("bad", object())], []).open()
    with pytest.raises(ValueError, match="duplicate"):
        GGUFWriter(tmp_path / "x.gguf", [KV("k", 1), KV("k", 2)], [])
    assert list(tmp_path.iterdir()) == []


def test_set_kv_keeps_position_and_appends():
    kvs = [KV("a", 1), KV("general.file_type", 0), KV("split.count", 2)]
    out = set_kv(kvs, [KV("general.file_type", 7), KV("new", "x")], remove=["split.count"])
    assert [(kv.key, kv.value) for kv in out] == [("a", 1), ("general.file_type", 7),
                                                  ("new", "x")]


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    """A kill -9 leaves `.NAME.PID.tmp`; the next write of NAME removes it, but never the temp
    file of a live process, of another output, or one without a pid."""
    import os

    out = tmp_path / "m.gguf"
    dead = tmp_path / f".m.gguf.{_dead_pid()}.tmp"
    live = tmp_path / f".m.gguf.{os.getppid()}.tmp"
    other = tmp_path / f".n.gguf.{_dead_pid()}.tmp"
    junk = tmp_path / ".m.gguf.notapid.tmp"
    for p in (dead, live, other, junk):
        p.write_bytes(b"x" * 100)
    spec = TensorSpec("a", (32,), 0)
    write_gguf(out, [KV("general.architecture", "llama")], [spec], [np.zeros(32, np.float32)])
    assert not dead.exists() and live.exists() and other.exists() and junk.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, live.name, other.name, junk.name])


def test_failed_open_leaves_no_destructor_traceback(tmp_path, monkeypatch):
    """A read-only file system (EROFS on create and on unlink): one OSError from open(), and no
    'Exception ignored in __del__' afterwards."""
    import builtins
    import errno
    import gc
    import sys
    from pathlib import Path

    real_open = builtins.open

    def ro_open(path, mode="r", *a, **k):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *a, **k)

    def ro_unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(builtins, "open", ro_open)
    monkeypatch.setattr(Path, "unlink", ro_unlink)
    w = GGUFWriter(tmp_path / "o.gguf", [], [TensorSpec("a", (32,), 0)])
    with pytest.raises(OSError, match="Read-only"):
        w.open()
    w.abort()
    del w
    gc.collect()
    assert unraisable == []


def test_imatrix_save_is_atomic_and_cleans_stale_temps(tmp_path):
    from iqk_studio.gguf.imatrix import Imatrix, load_imatrix, save_imatrix_dat

    out = tmp_path / "imatrix.dat"
    stale = tmp_path / f".imatrix.dat.{_dead_pid()}.tmp"
    stale.write_bytes(b"partial")
    im = Imatrix({"blk.0.ffn_up.weight": np.arange(4, dtype=np.float32)},
                 {"blk.0.ffn_up.weight": 1})
    save_imatrix_dat(out, im)
    assert [p.name for p in tmp_path.iterdir()] == ["imatrix.dat"]
    assert np.array_equal(load_imatrix(out).values["blk.0.ffn_up.weight"], np.arange(4))


def test_kld_base_and_recipe_files_use_the_same_temp_files(tmp_path):
    from iqk_studio.jobs.kld_stats import BaseFileWriter
    from iqk_studio.recipe import Recipe
    from iqk_studio.recipe.textfile import load, save

    stale = tmp_path / f".b.kld.{_dead_pid()}.tmp"
    stale.write_bytes(b"partial")
    w = BaseFileWriter(tmp_path / "b.kld", 8, 4, np.arange(16, dtype=np.int32))
    assert w.tmp.name.startswith(".b.kld.") and not stale.exists()
    w.close(ok=False)
    assert list(tmp_path.iterdir()) == []
    save(Recipe("IQ4_KS"), tmp_path / "r.recipe")
    assert [p.name for p in tmp_path.iterdir()] == ["r.recipe"]
    assert load(tmp_path / "r.recipe").base == "IQ4_KS"
