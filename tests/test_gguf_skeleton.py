"""Skeleton GGUFs: header-only sparse files checked against ik_llama.cpp's dry-run log."""

from __future__ import annotations

import re

import numpy as np
import pytest

from iqk_studio.gguf.reader import open_model
from iqk_studio.gguf.skeleton import build_skeleton, deepseek_v3, write_preset
from iqk_studio.gguf.values import TYPE_NAMES

_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+) - \[([\d,\s]+)\], type =\s+(\w+)")


def _log_tensors(path):
    out = []
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m:
            dims = [int(d) for d in m.group(4).split(",")]
            while len(dims) > 1 and dims[-1] == 1:
                dims.pop()
            out.append((m.group(3), tuple(dims), m.group(5)))
    return out


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    p = write_preset("qwen3-30b-a3b", tmp_path_factory.mktemp("skel") / "qwen3.gguf")
    yield p
    p.unlink()


def test_qwen3_matches_dry_run_log(shared, qwen):
    log = shared("refs", "plans", "qwen3moe-skeleton_Q8_0.log")
    expected = _log_tensors(log)
    assert len(expected) == 579
    with open_model(qwen) as m:
        got = [(t.name, t.shape, t.qtype.name) for t in m.tensors.values()]
        assert got == expected
        # "model size = 58259.80 MB" (MiB) = sum of ggml_nbytes of the source tensors
        size_mib = float(re.search(r"model size\s+=\s+([\d.]+) MB", log.read_text()).group(1))
        assert round(m.n_bytes / 2**20, 2) == size_mib
        # the log's metadata dump: same keys, values and types
        text = log.read_text()
        kvs = re.findall(r"- kv\s+\d+:\s+(\S+) (\w+)\s+= (.*)", text)
        assert [k for k, _, _ in kvs] == list(m.metadata)
        for key, vtype, value in kvs:
            assert TYPE_NAMES[m.metadata_types[key][0]] == vtype, key
            v = m.metadata[key]
            if vtype == "f32":
                assert v == pytest.approx(float(value), rel=1e-5, abs=1e-6)
            elif vtype == "u32":
                assert v == int(value)
            else:
                assert v == value.strip()


def test_qwen3_is_sparse_and_full_size(qwen):
    st = qwen.stat()
    with open_model(qwen) as m:
        last = max(m.tensors.values(), key=lambda t: t.offset)
        assert st.st_size >= last.offset + last.nbytes
        assert st.st_size > 50 * 2**30
        assert st.st_blocks * 512 < 16 * 2**20  # no data was written
        # zero-copy view into the hole reads zeros without touching the rest
        assert not m.tensor_data("output_norm.weight").any()


def test_qwen3_readable_by_gguf_package(qwen):
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(qwen)
    assert len(r.tensors) == 579
    assert r.fields["qwen3moe.expert_count"].contents() == 128


def test_deepseek_v3_preset(tmp_path):
    tensors, md, types = deepseek_v3()
    names = [n for n, _, _ in tensors]
    assert len(names) == len(set(names)) == 1147
    assert md["deepseek2.block_count"] == 61 and md["deepseek2.leading_dense_block_count"] == 3
    for i in range(3):
        assert f"blk.{i}.ffn_up.weight" in names and f"blk.{i}.ffn_up_exps.weight" not in names
    for i in (3, 60):
        for suffix in ("ffn_up_exps", "ffn_gate_shexp", "ffn_down_shexp", "attn_k_b", "attn_v_b",
                       "attn_q_a", "attn_q_b", "attn_kv_a_mqa", "attn_kv_b"):
            assert f"blk.{i}.{suffix}.weight" in names
        assert f"blk.{i}.exp_probs_b.bias" in names
    p = build_skeleton(tmp_path / "ds.gguf", tensors, md, types)
    with open_model(p) as m:
        assert m.tensors["blk.3.ffn_down_exps.weight"].shape == (2048, 7168, 256)
        assert m.tensors["blk.0.attn_k_b.weight"].shape == (128, 512, 128)
        assert 671e9 < m.n_elements < 673e9  # 671B + the split k_b/v_b copies of kv_b
        assert m.metadata["deepseek2.expert_weights_norm"] is True
    p.unlink()


def test_generic_skeleton_types_and_sizes(tmp_path):
    tensors = [("a.weight", (512, 4), "iq4_ks"), ("b.weight", (64, 3), "q8_KV"),
               ("c.weight", (256, 2, 3), "q4_k_r4"), ("d", (7,), "f32")]
    p = build_skeleton(tmp_path / "g.gguf", tensors, {"general.architecture": "llama"})
    with open_model(p) as m:
        assert [(t.name, t.shape, t.qtype.name) for t in m.tensors.values()] == tensors
        assert m.tensors["a.weight"].nbytes == 4 * (4 + 2 * 136)
        assert m.tensors["b.weight"].nbytes == 3 * (8 + 2 * 32)
        assert all(t.offset % 32 == 0 for t in m.tensors.values())
        assert m.tensor_data("a.weight").shape == (4, 276)
        assert not np.any(m.tensor_data("c.weight"))


def test_bad_skeleton_input(tmp_path):
    with pytest.raises(ValueError, match="block size"):
        build_skeleton(tmp_path / "x.gguf", [("a", (100, 2), "q4_K")], {})
    with pytest.raises(KeyError, match="case-sensitive"):
        build_skeleton(tmp_path / "x.gguf", [("a", (256,), "Q4_K")], {})
    assert not (tmp_path / "x.gguf").exists()


def test_qwen3_tokenizer_stub(tmp_path):
    p = write_preset("qwen3-30b-a3b", tmp_path / "t.gguf", tokenizer=True)
    with open_model(p) as m:
        md = m.metadata
        assert len(md["tokenizer.ggml.tokens"]) == md["qwen3moe.vocab_size"] == 151936
        assert len(md["tokenizer.ggml.merges"]) == 151387
        assert md["tokenizer.ggml.tokens"][151935] == "\u0120tok151935"
        assert md["tokenizer.ggml.token_type"].shape == (151936,)
        assert len(m.tensors) == 579
    p.unlink()
