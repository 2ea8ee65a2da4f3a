"""Tiny random-weight models of every supported architecture (written with gguf-py's GGUFWriter)
and a slow, obvious float64 forward pass to check the engine against."""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.model import ModelError
from iqk_studio.gguf.reader import open_model

ARCHS = ("llama", "qwen2", "qwen3", "qwen3moe", "gemma3")
N_VOCAB, N_EMBD, N_HEAD, N_HEAD_KV, N_FF = 96, 32, 4, 2, 48


def tiny_spec(arch: str) -> dict:
    hd = 16 if arch in ("qwen3", "qwen3moe") else N_EMBD // N_HEAD  # qwen3: hd != n_embd/n_head
    return dict(arch=arch, n_layer=7 if arch == "gemma3" else 2, hd=hd, n_swa=5,
                n_expert=4 if arch == "qwen3moe" else 0, n_used=2, n_ff_exp=16,
                base=10000.0 if arch != "gemma3" else 1e6, eps=1e-5)


def tiny_tensors(spec: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """numpy-shaped (n_out, n_in) float32 weights, scaled so every part matters."""
    rng = np.random.default_rng(seed)
    arch, hd = spec["arch"], spec["hd"]

    def mat(n_out, n_in, s=1.0):
        return (rng.standard_normal((n_out, n_in)) * s / math.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": mat(N_VOCAB, N_EMBD, 8.0 if arch != "gemma3" else 1.0),
         "output_norm.weight": norm(N_EMBD)}
    if arch != "gemma3":
        t["output.weight"] = mat(N_VOCAB, N_EMBD, 4.0)
    if arch == "llama":
        t["rope_freqs.weight"] = (1.0 + rng.random(hd // 2) * 3).astype(np.float32)
    for il in range(spec["n_layer"]):
        p = f"blk.{il}."
        t[p + "attn_norm.weight"] = norm(N_EMBD)
        t[p + "attn_q.weight"] = mat(N_HEAD * hd, N_EMBD, 3.0)
        t[p + "attn_k.weight"] = mat(N_HEAD_KV * hd, N_EMBD, 3.0)
        t[p + "attn_v.weight"] = mat(N_HEAD_KV * hd, N_EMBD)
        t[p + "attn_output.weight"] = mat(N_EMBD, N_HEAD * hd)
        t[p + "ffn_norm.weight"] = norm(N_EMBD)
        if arch == "qwen2":
            for n, k in (("attn_q", N_HEAD), ("attn_k", N_HEAD_KV), ("attn_v", N_HEAD_KV)):
                t[p + n + ".bias"] = (0.5 * rng.standard_normal(k * hd)).astype(np.float32)
        if arch in ("qwen3", "qwen3moe", "gemma3"):
            t[p + "attn_q_norm.weight"] = norm(hd)
            t[p + "attn_k_norm.weight"] = norm(hd)
        if arch == "gemma3":
            t[p + "post_attention_norm.weight"] = norm(N_EMBD)
            t[p + "post_ffw_norm.weight"] = norm(N_EMBD)
        if spec["n_expert"]:
            e, f = spec["n_expert"], spec["n_ff_exp"]
            t[p + "ffn_gate_inp.weight"] = mat(e, N_EMBD, 4.0)
            t[p + "ffn_gate_exps.weight"] = np.stack([mat(f, N_EMBD) for _ in range(e)])
            t[p + "ffn_up_exps.weight"] = np.stack([mat(f, N_EMBD) for _ in range(e)])
            t[p + "ffn_down_exps.weight"] = np.stack([mat(N_EMBD, f) for _ in range(e)])
        else:
            t[p + "ffn_gate.weight"] = mat(N_FF, N_EMBD, 2.0)
            t[p + "ffn_up.weight"] = mat(N_FF, N_EMBD, 2.0)
            t[p + "ffn_down.weight"] = mat(N_EMBD, N_FF)
    return t


def write_tiny(path, arch: str, tensors: dict | None = None, seed: int = 0,
               add_bos: bool = True) -> tuple[dict, dict]:
    """Write a tiny F32 GGUF of `arch`; returns (spec, tensors)."""
    spec = tiny_spec(arch)
    tensors = tiny_tensors(spec, seed) if tensors is None else tensors
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.embedding_length", N_EMBD)
    w.add_uint32(f"{arch}.block_count", spec["n_layer"])
    w.add_uint32(f"{arch}.feed_forward_length", N_FF)
    w.add_uint32(f"{arch}.attention.head_count", N_HEAD)
    w.add_uint32(f"{arch}.attention.head_count_kv", N_HEAD_KV)
    w.add_uint32(f"{arch}.attention.key_length", spec["hd"])
    w.add_uint32(f"{arch}.attention.value_length", spec["hd"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", spec["eps"])
    w.add_float32(f"{arch}.rope.freq_base", spec["base"])
    w.add_uint32(f"{arch}.context_length", 4096)
    if arch == "gemma3":
        w.add_uint32(f"{arch}.attention.sliding_window", spec["n_swa"])
    if spec["n_expert"]:
        w.add_uint32(f"{arch}.expert_count", spec["n_expert"])
        w.add_uint32(f"{arch}.expert_used_count", spec["n_used"])
        w.add_uint32(f"{arch}.expert_feed_forward_length", spec["n_ff_exp"])
    w.add_bool("tokenizer.ggml.add_bos_token", add_bos)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    for name, arr in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return spec, tensors


# ------------------------------------------------------------------ slow obvious reference
def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x) + eps) * w


def _rope(v, pos, base, n_rot, neox, ff):
    v = v.copy()
    for i in range(n_rot // 2):
        theta = pos * base ** (-2.0 * i / n_rot) / ff[i]
        a, b = (i, i + n_rot // 2) if neox else (2 * i, 2 * i + 1)
        x0, x1 = v[a], v[b]
        v[a] = x0 * math.cos(theta) - x1 * math.sin(theta)
        v[b] = x0 * math.sin(theta) + x1 * math.cos(theta)
    return v


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _silu(x):
    return x / (1 + np.exp(-x))


def reference_logits(spec: dict, t: dict, tokens) -> np.ndarray:
    """Logits (T, n_vocab), float64, one position and one head at a time."""
    arch, hd, eps = spec["arch"], spec["hd"], spec["eps"]
    g = {k: v.astype(np.float64) for k, v in t.items()}
    neox = arch != "llama"
    ff = g.get("rope_freqs.weight", np.ones(hd // 2))
    xs = [g["token_embd.weight"][tok] * (math.sqrt(N_EMBD) if arch == "gemma3" else 1.0)
          for tok in tokens]
    for il in range(spec["n_layer"]):
        P = lambda n, il=il: g[f"blk.{il}.{n}"]  # noqa: E731
        local = arch == "gemma3" and (il + 1) % 6 != 0
        base = 10000.0 if local else spec["base"]
        qs, ks, vs = [], [], []
        for p, x in enumerate(xs):
            n = _rms(x, P("attn_norm.weight"), eps)
            q, k, v = (P(f"attn_{w}.weight") @ n + g.get(f"blk.{il}.attn_{w}.bias", 0.0)
                       for w in "qkv")
            q, k, v = q.reshape(N_HEAD, hd), k.reshape(N_HEAD_KV, hd), v.reshape(N_HEAD_KV, hd)
            if f"blk.{il}.attn_q_norm.weight" in g:
                q = np.array([_rms(h, P("attn_q_norm.weight"), eps) for h in q])
                k = np.array([_rms(h, P("attn_k_norm.weight"), eps) for h in k])
            qs.append([_rope(h, p, base, hd, neox, ff) for h in q])
            ks.append([_rope(h, p, base, hd, neox, ff) for h in k])
            vs.append(v)
        out = []
        for p, x in enumerate(xs):
            heads = []
            for h in range(N_HEAD):
                kv = h // (N_HEAD // N_HEAD_KV)
                seen = [j for j in range(p + 1) if not (local and p - j >= spec["n_swa"])]
                s = np.array([qs[p][h] @ ks[j][kv] / math.sqrt(hd) for j in seen])
                a = np.exp(s - s.max())
                a /= a.sum()
                heads.append(sum(a[i] * vs[j][kv] for i, j in enumerate(seen)))
            o = P("attn_output.weight") @ np.concatenate(heads)
            if arch == "gemma3":
                o = _rms(o, P("post_attention_norm.weight"), eps)
            h1 = x + o
            n = _rms(h1, P("ffn_norm.weight"), eps)
            act = _gelu if arch == "gemma3" else _silu
            if spec["n_expert"]:
                r = P("ffn_gate_inp.weight") @ n
                pr = np.exp(r - r.max())
                pr /= pr.sum()
                top = np.argsort(-pr, kind="stable")[:spec["n_used"]]
                f = sum(pr[e] / pr[top].sum() * (P("ffn_down_exps.weight")[e] @ (
                    act(P("ffn_gate_exps.weight")[e] @ n) * (P("ffn_up_exps.weight")[e] @ n)))
                    for e in top)
            else:
                f = P("ffn_down.weight") @ (act(P("ffn_gate.weight") @ n) * (P("ffn_up.weight") @ n))
            if arch == "gemma3":
                f = _rms(f, P("post_ffw_norm.weight"), eps)
            out.append(h1 + f)
        xs = out
    w_out = g.get("output.weight", g["token_embd.weight"])
    return np.array([w_out @ _rms(x, g["output_norm.weight"], eps) for x in xs])


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_matches_reference(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    spec, tensors = write_tiny(path, arch)
    tokens = np.random.default_rng(1).integers(0, N_VOCAB, 12)
    want = reference_logits(spec, tensors, tokens)
    with open_model(path) as m:
        fw = Forward.from_model(m, kv_f16=False)
        assert fw.cfg.arch == arch and fw.cfg.tied_output == (arch == "gemma3")
        got = fw.logits(tokens)
        got_tail = fw.logits(tokens, first=7)  # last layer computes only the requested rows
    assert got.shape == (12, N_VOCAB)
    assert np.abs(want).max() > 1.0  # the logits are far from uniform
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())
    np.testing.assert_allclose(got_tail, got[7:], rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_rope_variant_matters(tmp_path):
    """A NORM-rope model evaluated as NEOX gives different logits (the test can fail)."""
    spec, tensors = write_tiny(tmp_path / "l.gguf", "llama")
    tokens = np.arange(10) % N_VOCAB
    with open_model(tmp_path / "l.gguf") as m:
        fw = Forward.from_model(m, kv_f16=False)
        got = fw.logits(tokens)
    spec_neox = dict(spec, arch="qwen2")
    t2 = dict(tensors)
    for il in range(spec["n_layer"]):
        for n, k in (("attn_q", N_HEAD), ("attn_k", N_HEAD_KV), ("attn_v", N_HEAD_KV)):
            t2[f"blk.{il}.{n}.bias"] = np.zeros(k * spec["hd"], np.float32)
    t2.pop("rope_freqs.weight")
    other = reference_logits(spec_neox, t2, tokens)
    assert np.abs(got - other).max() > 1e-2


def test_unsupported_arch_and_missing_tensor(tmp_path):
    spec, tensors = write_tiny(tmp_path / "q.gguf", "qwen2")
    t = dict(tensors)
    del t["blk.1.attn_k.bias"]
    write_tiny(tmp_path / "bad.gguf", "qwen2", t)
    with open_model(tmp_path / "bad.gguf") as m, pytest.raises(ModelError, match="attn_k.bias"):
        Forward.from_model(m)


def test_config_errors():
    from iqk_studio.engine.model import config_from_metadata

    with pytest.raises(ModelError, match="not supported"):
        config_from_metadata({"general.architecture": "phi3"}, [])
    with pytest.raises(ModelError, match="embedding_length"):
        config_from_metadata({"general.architecture": "llama"}, [])
