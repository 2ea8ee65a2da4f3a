"""Split models (PREFIX-0000K-of-0000N.gguf) open as one model."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.gguf.reader import GGUFError, open_model
from iqk_studio.gguf.split import split_path
from iqk_studio.gguf.values import ValueType
from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf

SPLIT_TYPES = {"split.no": (ValueType.UINT16, None), "split.count": (ValueType.UINT16, None),
               "split.tensors.count": (ValueType.INT32, None)}


def _write(path, md: dict, arrays: dict) -> None:
    """A GGUF of F32 tensors {name: (rows, ne0) array} with split keys typed as gguf-split does."""
    kvs = [KV(k, v, *SPLIT_TYPES.get(k, (None, None))) for k, v in md.items()]
    specs = [TensorSpec(n, a.shape[::-1], 0) for n, a in arrays.items()]
    write_gguf(path, kvs, specs, list(arrays.values()))


def _write_split(tmp_path, n_parts=3, per_part=2):
    rng = np.random.default_rng(5)
    prefix = tmp_path / "tiny"
    arrays = {}
    for k in range(n_parts):
        md = {"split.no": k, "split.count": n_parts, "split.tensors.count": n_parts * per_part}
        if k == 0:
            md = {"general.architecture": "llama", "llama.block_count": n_parts, **md}
        part = {f"blk.{k}.w{j}.weight": rng.standard_normal((3 + j, 32)).astype(np.float32)
                for j in range(per_part)}
        arrays.update(part)
        _write(split_path(prefix, k, n_parts), md, part)
    return prefix, arrays


def test_split_opens_as_one(tmp_path):
    prefix, arrays = _write_split(tmp_path)
    first = tmp_path / "tiny-00001-of-00003.gguf"
    assert first.exists()
    with open_model(first) as m:
        assert len(m.files) == 3 and m.arch == "llama"
        assert list(m.tensors) == list(arrays)
        for name, a in arrays.items():
            t = m.tensors[name]
            assert t.file_index == int(name.split(".")[1])
            np.testing.assert_array_equal(m.tensor_data(name).view("<f4"), a)
        assert m.metadata["split.count"] == 3
        assert m.metadata_types["split.count"][0] is ValueType.UINT16


def test_split_opened_from_a_later_part(tmp_path):
    prefix, arrays = _write_split(tmp_path)
    with open_model(tmp_path / "tiny-00002-of-00003.gguf") as m:
        assert list(m.tensors) == list(arrays) and m.arch == "llama"


def test_missing_part_names_the_file(tmp_path):
    _write_split(tmp_path)
    (tmp_path / "tiny-00003-of-00003.gguf").unlink()
    with pytest.raises(GGUFError, match=r"split part 3 of 3 is missing: .*tiny-00003-of-00003"):
        open_model(tmp_path / "tiny-00001-of-00003.gguf")


def test_wrong_tensor_total(tmp_path):
    prefix = tmp_path / "bad"
    for k in range(2):
        md = {"split.no": k, "split.count": 2, "split.tensors.count": 5}
        _write(split_path(prefix, k, 2), md, {f"t{k}": np.zeros((1, 32), np.float32)})
    with pytest.raises(GGUFError, match="split.tensors.count = 5"):
        open_model(split_path(prefix, 0, 2))


def test_part_with_wrong_number(tmp_path):
    prefix = tmp_path / "bad"
    for k, no in enumerate((0, 0)):
        md = {"split.no": no, "split.count": 2, "split.tensors.count": 2}
        _write(split_path(prefix, k, 2), md, {f"t{k}": np.zeros((1, 32), np.float32)})
    with pytest.raises(GGUFError, match="expected split.no = 1"):
        open_model(split_path(prefix, 0, 2))


def test_duplicate_tensor_across_parts(tmp_path):
    prefix = tmp_path / "dup"
    for k in range(2):
        md = {"split.no": k, "split.count": 2, "split.tensors.count": 2}
        _write(split_path(prefix, k, 2), md, {"same": np.zeros((1, 32), np.float32)})
    with pytest.raises(GGUFError, match="'same' also appears"):
        open_model(split_path(prefix, 0, 2))


def test_split_count_without_split_name(tmp_path):
    md = {"split.no": 0, "split.count": 2, "split.tensors.count": 1}
    p = tmp_path / "model.gguf"
    _write(p, md, {"t": np.zeros((1, 32), np.float32)})
    with pytest.raises(GGUFError, match="cannot find the other parts"):
        open_model(p)


def test_split_readable_by_gguf_package(tmp_path):
    gguf = pytest.importorskip("gguf")
    _write_split(tmp_path)
    r = gguf.GGUFReader(tmp_path / "tiny-00002-of-00003.gguf")
    assert r.fields["split.no"].contents() == 1
    assert [t.name for t in r.tensors] == ["blk.1.w0.weight", "blk.1.w1.weight"]


@pytest.mark.parametrize("part1", [{"split.no": 1, "split.count": 2}, {"split.no": 0,
                                                                        "split.count": 3}])
def test_later_part_checks_part_one(tmp_path, part1):
    """Opened from part 2, part 1's own split.no / split.count are checked too."""
    prefix = tmp_path / "bad"
    for k in range(2):
        md = {**({"split.no": 1, "split.count": 2} if k else part1), "split.tensors.count": 2}
        _write(split_path(prefix, k, 2), md, {f"t{k}": np.zeros((1, 32), np.float32)})
    with pytest.raises(GGUFError, match=r"bad-00001-of-00002.gguf: expected split.no = 0 and "
                                        r"split.count = 2"):
        open_model(split_path(prefix, 1, 2))


def test_split_no_beyond_count(tmp_path):
    p = split_path(tmp_path / "odd", 1, 2)
    _write(p, {"split.no": 5, "split.count": 2}, {"t": np.zeros((1, 32), np.float32)})
    with pytest.raises(GGUFError, match="split.no = 5 is not below split.count = 2"):
        open_model(p)
