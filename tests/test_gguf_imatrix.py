"""imatrix files: legacy .dat (ik_llama.cpp) and mainline's GGUF layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from iqk_studio.gguf.imatrix import (
    Imatrix,
    load_imatrix,
    save_imatrix_dat,
    save_imatrix_gguf,
    write_imatrix_dat,
)
from iqk_studio.gguf.reader import GGUFError, open_model


def _naive_dat(path):
    """Independent reading of the .dat layout: name -> (ncall, stored values)."""
    b = path.read_bytes()
    (n,) = struct.unpack_from("<i", b, 0)
    pos, out = 4, {}
    for _ in range(n):
        (ln,) = struct.unpack_from("<i", b, pos)
        name = b[pos + 4:pos + 4 + ln].decode()
        pos += 4 + ln
        nc, nv = struct.unpack_from("<ii", b, pos)
        pos += 8
        out[name] = (nc, np.frombuffer(b, "<f4", nv, pos))
        pos += 4 * nv
    return out, b[pos:]


def test_reference_dat(shared):
    path = shared("refs", "quant", "imatrix.dat")
    im = load_imatrix(path)
    raw, trailer = _naive_dat(path)
    assert list(im.values) == list(raw)
    for name, (nc, stored) in raw.items():
        assert im.ncall[name] == nc
        np.testing.assert_array_equal(im.values[name], stored / np.float32(nc))
        assert im.values[name].dtype == np.float32
    last_call, ln = struct.unpack_from("<ii", trailer, 0)
    assert im.chunks == last_call and im.dataset == trailer[8:8 + ln].decode()


def test_dat_roundtrip_is_byte_exact(shared, tmp_path):
    path = shared("refs", "quant", "imatrix.dat")
    out = save_imatrix_dat(tmp_path / "x.dat", load_imatrix(path))
    assert out.read_bytes() == path.read_bytes()


def test_dat_without_trailer(tmp_path):
    p = write_imatrix_dat(tmp_path / "a.dat", {"w": (4, np.arange(8, dtype=np.float32))})
    p.write_bytes(p.read_bytes()[:-8])  # drop last_call + empty dataset
    im = load_imatrix(p)
    np.testing.assert_array_equal(im.values["w"], np.arange(8, dtype=np.float32) / 4)
    assert im.chunks == 0 and im.dataset == ""


def test_gguf_roundtrip_moe(tmp_path):
    rng = np.random.default_rng(0)
    n_in, n_exp = 64, 4
    counts = np.array([10, 0, 3, 7], np.float32)
    vals = rng.random((n_exp, n_in), dtype=np.float32)
    im = Imatrix({"blk.0.ffn_up_exps.weight": vals.reshape(-1),
                  "blk.0.attn_q.weight": rng.random(n_in, dtype=np.float32)},
                 {"blk.0.ffn_up_exps.weight": 1, "blk.0.attn_q.weight": 5},
                 dataset="wiki.txt", chunks=5, chunk_size=512,
                 counts={"blk.0.ffn_up_exps.weight": counts})
    p = save_imatrix_gguf(tmp_path / "m.gguf", im)
    with open_model(p) as m:
        assert m.metadata["general.type"] == "imatrix"
        assert m.metadata["imatrix.datasets"] == ["wiki.txt"]
        assert m.metadata["imatrix.chunk_count"] == 5
        s = m.tensors["blk.0.ffn_up_exps.weight.in_sum2"]
        assert s.shape == (n_in, n_exp) and s.qtype.name == "f32"
        assert m.tensors["blk.0.ffn_up_exps.weight.counts"].shape == (1, n_exp)
        assert m.tensors["blk.0.attn_q.weight.counts"].shape == (1, 1)
    back = load_imatrix(p)
    v = back.values["blk.0.ffn_up_exps.weight"].reshape(n_exp, n_in)
    np.testing.assert_allclose(v[[0, 2, 3]], vals[[0, 2, 3]], rtol=1e-6)
    np.testing.assert_array_equal(v[1], 1.0)  # an expert that saw no tokens: importance 1
    np.testing.assert_allclose(back.values["blk.0.attn_q.weight"],
                               im.values["blk.0.attn_q.weight"], rtol=1e-6)
    assert back.ncall["blk.0.attn_q.weight"] == 5  # counts = ncall * chunk_size
    assert back.ncall["blk.0.ffn_up_exps.weight"] == 1  # ceil(10 / 512)
    assert back.dataset == "wiki.txt" and back.chunks == 5 and back.chunk_size == 512


def test_gguf_imatrix_readable_by_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    im = Imatrix({"a.weight": np.ones(32, np.float32)}, {"a.weight": 2}, "d", 2, 512)
    r = gguf.GGUFReader(save_imatrix_gguf(tmp_path / "i.gguf", im))
    names = {t.name: t for t in r.tensors}
    np.testing.assert_array_equal(names["a.weight.counts"].data.reshape(-1), [1024.0])
    np.testing.assert_array_equal(names["a.weight.in_sum2"].data.reshape(-1), 1024.0)


@pytest.mark.parametrize("cut", [0, 2, 4, 7, 20, 30])
def test_truncated_dat_is_a_clear_error(tmp_path, cut):
    p = write_imatrix_dat(tmp_path / "a.dat", {"w": (1, np.ones(8, np.float32))}, 1, "x")
    p.write_bytes(p.read_bytes()[:cut])
    with pytest.raises(GGUFError, match="a.dat"):
        load_imatrix(p)


def test_absurd_dat_counts(tmp_path):
    p = tmp_path / "bad.dat"
    p.write_bytes(struct.pack("<ii", 1, 2**31 - 1) + b"x" * 20)
    with pytest.raises(GGUFError, match="name length"):
        load_imatrix(p)
    p.write_bytes(struct.pack("<i", -5))
    with pytest.raises(GGUFError, match="entry count"):
        load_imatrix(p)
    p.write_bytes(struct.pack("<ii", 1, 1) + b"w" + struct.pack("<ii", 1, 10**9))
    with pytest.raises(GGUFError, match="values"):
        load_imatrix(p)


def test_model_gguf_is_not_an_imatrix(shared):
    with pytest.raises(GGUFError, match="not an imatrix"):
        load_imatrix(shared("refs", "quant", "out", "q8_0.gguf"))


def test_text_file_is_not_an_imatrix(tmp_path):
    p = tmp_path / "t.dat"
    p.write_text("hello world, this is not an imatrix\n" * 3)
    with pytest.raises(GGUFError, match="t.dat"):
        load_imatrix(p)
