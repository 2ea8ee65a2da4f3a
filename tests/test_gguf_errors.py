"""Bad GGUF input gives a GGUFError naming the file and the fault, never a crash or a hang."""

from __future__ import annotations

import struct

import pytest

from iqk_studio.gguf.reader import GGUFError, open_model


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv_u32(key: str, v: int) -> bytes:
    return s(key) + struct.pack("<II", 4, v)


def kv_str(key: str, v: str) -> bytes:
    return s(key) + struct.pack("<I", 8) + s(v)


def tinfo(name: str, dims, type_id: int, offset: int) -> bytes:
    return (s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", type_id, offset))


def raw_gguf(kvs=(), tensors=(), data_size=None, version=3, n_tensors=None, n_kv=None,
             alignment=32) -> bytes:
    """An independent little GGUF builder that lets a test write anything."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(tensors)
    head += b"\0" * (-len(head) % alignment)
    return head + b"\0" * (data_size if data_size is not None else 4096)


GOOD_KVS = (kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1))
F32_VEC = tinfo("a.weight", [64], 0, 0)


def write(tmp_path, data: bytes, name="m.gguf"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def fails(tmp_path, data: bytes, match: str):
    p = write(tmp_path, data)
    with pytest.raises(GGUFError, match=match) as e:
        open_model(p)
    assert str(p) in str(e.value)
    return str(e.value)


def test_good_raw_file_opens(tmp_path):
    p = write(tmp_path, raw_gguf(GOOD_KVS, [F32_VEC, tinfo("b.weight", [256, 2], 12, 256)]))
    with open_model(p) as m:
        assert m.tensors["b.weight"].qtype.name == "q4_K" and m.tensors["b.weight"].nbytes == 288


def test_not_a_gguf(tmp_path):
    fails(tmp_path, b"hello, this is text\n" * 10, "not a GGUF file")


def test_empty_and_tiny(tmp_path):
    fails(tmp_path, b"", "empty file")
    fails(tmp_path, b"GG", "not a GGUF")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(GGUFError, match="no such file"):
        open_model(tmp_path / "nope.gguf")
    with pytest.raises(GGUFError, match="directory"):
        open_model(tmp_path)


def test_unsupported_and_big_endian_version(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, version=7), "unsupported GGUF version 7")
    be = raw_gguf(GOOD_KVS)
    be = be[:4] + struct.pack(">I", 3) + be[8:]
    fails(tmp_path, be, "big-endian")


@pytest.mark.parametrize("cut", [6, 12, 20, 30, 45, 60, 80])
def test_truncated_header(tmp_path, cut):
    data = raw_gguf(GOOD_KVS, [F32_VEC])
    msg = fails(tmp_path, data[:cut], "offset")
    assert "needs" in msg or "exceeds" in msg or "cannot fit" in msg or "ends before" in msg


def test_truncated_data(tmp_path):
    data = raw_gguf(GOOD_KVS, [F32_VEC, tinfo("b.weight", [256, 4], 0, 256)], data_size=1024)
    fails(tmp_path, data[:-10], "beyond the file end")


def test_absurd_counts(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, n_kv=2**60), "metadata count")
    fails(tmp_path, raw_gguf(GOOD_KVS, n_tensors=2**62), "tensor count")


def test_absurd_string_lengths(tmp_path):
    bad_key = struct.pack("<Q", 2**62) + b"general.architecture"
    fails(tmp_path, raw_gguf([bad_key]), "string length")
    bad_arr = s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**40)
    fails(tmp_path, raw_gguf([bad_arr]), "cannot fit")
    bad_item = (s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a")
                + struct.pack("<Q", 10**12))
    fails(tmp_path, raw_gguf([bad_item]), r"\[1\]: string length")


def sparse(tmp_path, head: bytes, size: int = 60 * 2**30, name="big.gguf"):
    """A file of `size` bytes (sparse: only `head` is written), like a 60 GiB model whose header
    got corrupted: lengths up to the file size pass the "fits in the file" test."""
    p = tmp_path / name
    with open(p, "wb") as f:
        f.write(head)
        f.truncate(size)
    return p


def test_lengths_capped_before_allocating_in_a_huge_file(tmp_path):
    """Every length that still fits a 60 GiB file is refused by a cap, with a short message."""
    cases = {
        "key": (struct.pack("<Q", 2**33) + b"general.architecture", "string length"),
        "value": (s("general.name") + struct.pack("<IQ", 8, 2**34), "over the limit"),
        "strings": (s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 10**9),
                    "over the limit"),
        "numbers": (s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 10**9),
                    "over the limit"),
        "item": (s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a")
                 + struct.pack("<Q", 2**33), r"\[1\]: string length"),
        "name": (struct.pack("<Q", 2**20) + b"x" * 64, "string length"),
    }
    for what, (body, match) in cases.items():
        if what == "name":
            head = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + body
        else:
            head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + body
        p = sparse(tmp_path, head)
        with pytest.raises(GGUFError, match=match) as e:
            open_model(p)
        assert len(str(e.value)) < 300, what
        p.unlink()


def test_counts_capped_in_a_huge_file(tmp_path):
    p = sparse(tmp_path, b"GGUF" + struct.pack("<IQQ", 3, 0, 2**30))
    with pytest.raises(GGUFError, match="metadata count .* over the limit"):
        open_model(p)
    p = sparse(tmp_path, b"GGUF" + struct.pack("<IQQ", 3, 2**30, 0))
    with pytest.raises(GGUFError, match="tensor count .* over the limit"):
        open_model(p)


def test_long_names_are_cut_in_messages(tmp_path):
    key = "k" * 5000
    msg = fails(tmp_path, raw_gguf([kv_u32(key, 1), kv_u32(key, 2)]), "duplicate metadata key")
    assert len(msg) < 300 and "5,000 characters" in msg
    name = "t" * 5000
    msg = fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo(name, [64], 0, 0), tinfo(name, [64], 0, 256)]),
                "duplicate tensor name")
    assert len(msg) < 300


def test_zero_dimension(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a.weight", [64, 0], 0, 0)]), "zero dimension")


def test_unknown_value_types(tmp_path):
    fails(tmp_path, raw_gguf([s("x") + struct.pack("<I", 99)]), "unknown value type 99")
    arr = s("x") + struct.pack("<IIQ", 9, 77, 1)
    fails(tmp_path, raw_gguf([arr]), "unknown array item type 77")
    nested = s("x") + struct.pack("<IIQ", 9, 9, 1)
    fails(tmp_path, raw_gguf([nested]), "nested arrays")


def test_duplicate_key(tmp_path):
    fails(tmp_path, raw_gguf([*GOOD_KVS, kv_u32("llama.block_count", 2)]), "duplicate metadata")


def test_unknown_tensor_type(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a.weight", [64], 250, 0)]),
          "unknown ggml type id 250")


def test_duplicate_tensor_names(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, [F32_VEC, tinfo("a.weight", [64], 0, 256)]),
          "duplicate tensor name 'a.weight'")


def test_misaligned_offset(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a.weight", [64], 0, 20)]),
          "not a multiple of the alignment 32")


def test_bad_alignment_key(tmp_path):
    fails(tmp_path, raw_gguf([kv_u32("general.alignment", 24)]), "power of two")


def test_data_beyond_end_and_overlap(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a.weight", [64], 0, 2**40)]), "beyond the file end")
    fails(tmp_path, raw_gguf(GOOD_KVS, [F32_VEC, tinfo("b.weight", [64], 0, 128)]), "overlap")


def test_bad_shapes(tmp_path):
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a", [1, 1, 1, 1, 1], 0, 0)]), "5 dimensions")
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a", [100, 2], 12, 0)]), "block size 256")
    fails(tmp_path, raw_gguf(GOOD_KVS, [tinfo("a", [2**40, 2**40], 0, 0)]), "absurdly large")
