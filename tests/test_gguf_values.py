"""GGUF key/value encoding and decoding: every value type round-trips; bytes are as specified."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from iqk_studio.gguf.reader import open_model
from iqk_studio.gguf.values import Cursor, ValueType, encode_kv, infer_type, read_value
from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf

V = ValueType


def test_encode_bytes_by_hand():
    assert encode_kv("k", 7, V.UINT32) == struct.pack("<Q", 1) + b"k" + struct.pack("<II", 4, 7)
    assert encode_kv("k", "ab") == struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 2) + b"ab"
    arr = encode_kv("k", ["a", ""])
    assert arr == (struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 2)
                   + struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 0))


@pytest.mark.parametrize("value,vtype,item", [
    (200, V.UINT8, None), (-5, V.INT8, None), (65000, V.UINT16, None), (-300, V.INT16, None),
    (4_000_000_000, V.UINT32, None), (-70000, V.INT32, None), (0.5, V.FLOAT32, None),
    (True, V.BOOL, None), (False, V.BOOL, None), ("héllo", V.STRING, None),
    (2**63 + 5, V.UINT64, None), (-(2**40), V.INT64, None), (1 / 3, V.FLOAT64, None),
    (np.arange(5, dtype=np.int16), V.ARRAY, V.INT16),
    (np.array([1.5, -2.25], np.float32), V.ARRAY, V.FLOAT32),
    (np.array([True, False]), V.ARRAY, V.BOOL),
    (["a", "bc", "", "\u0120tok", "日本"], V.ARRAY, V.STRING),
    ([], V.ARRAY, V.STRING),
])
def test_roundtrip(value, vtype, item):
    b = encode_kv("key", value, vtype, item)
    cur = Cursor(b, 0, len(b))
    assert cur.string("key") == "key"
    got, got_item = read_value(cur, cur.u32("type"), "key")
    assert cur.pos == len(b)
    assert got_item == item
    if isinstance(value, np.ndarray):
        assert got.dtype == value.dtype and np.array_equal(got, value)
    else:
        assert got == value and type(got) is type(value)


def test_invalid_utf8_survives_a_file_roundtrip(tmp_path):
    raw = b"\xff\xfe ok \xc3"
    s = raw.decode("utf-8", "surrogateescape")
    md = {"general.architecture": "llama", "tokenizer.ggml.tokens": ["a", s, "b\xff"], "x": s}
    p = write_gguf(tmp_path / "u.gguf", [KV(k, v) for k, v in md.items()],
                   [TensorSpec("t", (32,), 0)], [np.zeros(32, np.float32)])
    with open_model(p) as m:
        assert m.metadata["tokenizer.ggml.tokens"] == ["a", s, "b\xff"]
        assert m.metadata["x"].encode("utf-8", "surrogateescape") == raw
        assert m.metadata_types["tokenizer.ggml.tokens"] == (V.ARRAY, V.STRING)


def test_infer_type():
    assert infer_type(3) == (V.UINT32, None)
    assert infer_type(-3) == (V.INT32, None)
    assert infer_type(2**40) == (V.UINT64, None)
    assert infer_type(1.0) == (V.FLOAT32, None)
    assert infer_type(True) == (V.BOOL, None)
    assert infer_type([1, 2]) == (V.ARRAY, V.INT32)
    assert infer_type(np.zeros(3, np.float64)) == (V.ARRAY, V.FLOAT64)
    with pytest.raises(ValueError):
        infer_type(object())
