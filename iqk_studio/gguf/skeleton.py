"""Header-only GGUF "skeletons": a real header with every tensor info, extended sparsely to the full
file size without data. For sizing and planning big models (Qwen3-30B-A3B, DeepSeek-V3) with no
download; llama-quantize --dry-run accepts them.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from iqk_studio.gguf.reader import DEFAULT_ALIGNMENT, MAX_DIMS
from iqk_studio.gguf.types import BY_ID, QuantType, by_name
from iqk_studio.gguf.values import ValueType, encode_kv, encode_string
from iqk_studio.gguf.writer import TensorSpec

U32, F32, BOOL = ValueType.UINT32, ValueType.FLOAT32, ValueType.BOOL


def tensor_spec(name: str, shape, qtype) -> TensorSpec:
    """A checked TensorSpec from a type given as name (`q4_K`), id or QuantType."""
    if isinstance(qtype, QuantType):
        qt = qtype
    elif isinstance(qtype, (int, np.integer)):
        qt = BY_ID[int(qtype)]
    else:
        qt = by_name(str(qtype))
    shape = tuple(int(d) for d in shape)
    if not 1 <= len(shape) <= MAX_DIMS or any(d < 0 for d in shape):
        raise ValueError(f"{name}: bad shape {shape}")
    if shape[0] % qt.block:
        raise ValueError(f"{name}: ne0 = {shape[0]} is not a multiple of {qt.name}'s "
                         f"block size {qt.block}")
    return TensorSpec(name, shape, qt.id)


def _pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def encode_header(metadata: dict, specs: list[TensorSpec], types: dict | None = None
                  ) -> tuple[bytes, int]:
    """GGUF v3 header padded to the alignment, and the size of the data section after it (every
    tensor padded, as ggml writes them). `types`: key -> (ValueType, item type or None)."""
    types = dict(types or {})
    if "general.alignment" in metadata:
        types.setdefault("general.alignment", (U32, None))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    parts = [b"GGUF", struct.pack("<IQQ", 3, len(specs), len(metadata))]
    parts += [encode_kv(k, v, *types.get(k, (None, None))) for k, v in metadata.items()]
    pos = 0
    for t in specs:
        parts += [encode_string(t.name), struct.pack("<I", len(t.shape)),
                  struct.pack(f"<{len(t.shape)}Q", *t.shape), struct.pack("<IQ", t.type_id, pos)]
        pos = _pad(pos + t.nbytes, alignment)
    head = b"".join(parts)
    return head + b"\0" * (_pad(len(head), alignment) - len(head)), pos


def build_skeleton(path, tensors, metadata: dict, types: dict | None = None) -> Path:
    """Write a skeleton GGUF from [(name, shape (ggml order), type name/id)] and metadata: the
    header, then a sparse hole up to the full size. Written to PATH.tmp and renamed, so a failure
    never leaves a half-written file. `types` forces a key's GGUF value type."""
    path = Path(path)
    specs = [tensor_spec(name, shape, qtype) for name, shape, qtype in tensors]
    head, data_size = encode_header(metadata, specs, types)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            f.truncate(len(head) + data_size)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------- Qwen3-30B-A3B

def qwen3_30b_a3b(weight_type: str = "bf16", tokenizer: bool = False) -> tuple[list, dict, dict]:
    """Qwen3-30B-A3B as a BF16 conversion: 579 tensors, norms and ffn_gate_inp F32
    (order and metadata as in shared/refs/plans/qwen3moe-skeleton_*.log). With `tokenizer`, a
    synthetic gpt2-style vocabulary of the real sizes (151936 tokens, 151387 merges) is added so
    that opening costs what a real file's header costs; its strings are placeholders."""
    n_layer, n_embd, n_head, n_head_kv, head_dim = 48, 2048, 32, 4, 128
    n_expert, n_ff_exp, n_vocab = 128, 768, 151936
    w, f = weight_type, "f32"
    tensors = [("token_embd.weight", (n_embd, n_vocab), w)]
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", (n_embd,), f),
            (b + "attn_q.weight", (n_embd, n_head * head_dim), w),
            (b + "attn_k.weight", (n_embd, n_head_kv * head_dim), w),
            (b + "attn_v.weight", (n_embd, n_head_kv * head_dim), w),
            (b + "attn_output.weight", (n_head * head_dim, n_embd), w),
            (b + "attn_q_norm.weight", (head_dim,), f),
            (b + "attn_k_norm.weight", (head_dim,), f),
            (b + "ffn_norm.weight", (n_embd,), f),
            (b + "ffn_gate_inp.weight", (n_embd, n_expert), f),
            (b + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert), w),
            (b + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert), w),
            (b + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert), w),
        ]
    tensors += [("output_norm.weight", (n_embd,), f), ("output.weight", (n_embd, n_vocab), w)]
    a = "qwen3moe."
    metadata = {
        "general.architecture": "qwen3moe",
        "general.name": "Qwen3-30B-A3B skeleton",
        a + "block_count": n_layer,
        a + "context_length": 40960,
        a + "embedding_length": n_embd,
        a + "feed_forward_length": 6144,
        a + "attention.head_count": n_head,
        a + "attention.head_count_kv": n_head_kv,
        a + "attention.key_length": head_dim,
        a + "attention.value_length": head_dim,
        a + "rope.freq_base": 1000000.0,
        a + "attention.layer_norm_rms_epsilon": 1e-6,
        a + "expert_count": n_expert,
        a + "expert_used_count": 8,
        a + "expert_feed_forward_length": n_ff_exp,
        a + "vocab_size": n_vocab,
        "general.file_type": _file_type(weight_type),
    }
    if tokenizer:
        metadata.update(_tokenizer_stub(n_vocab, 151387))
    types = {k: (F32, None) for k in metadata if k.endswith(("freq_base", "epsilon"))}
    return tensors, metadata, types


def _tokenizer_stub(n_vocab: int, n_merges: int, pre: str = "qwen2") -> dict:
    """Placeholder gpt2 tokenizer keys with realistic array sizes (not a usable vocabulary)."""
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": [f"\u0120tok{i:06d}" for i in range(n_vocab)],
        "tokenizer.ggml.token_type": np.ones(n_vocab, np.int32),
        "tokenizer.ggml.merges": [f"\u0120t ok{i:06d}" for i in range(n_merges)],
        "tokenizer.ggml.eos_token_id": n_vocab - 6,
        "tokenizer.ggml.padding_token_id": n_vocab - 6,
        "tokenizer.ggml.bos_token_id": n_vocab - 6,
        "tokenizer.ggml.add_bos_token": False,
    }


# ------------------------------------------------------------------------ DeepSeek-V3-like

def deepseek_v3(weight_type: str = "bf16", tokenizer: bool = False) -> tuple[list, dict, dict]:
    """DeepSeek-V3 (671B) as a BF16 conversion with split MLA attn_k_b / attn_v_b:
    61 layers, the first 3 dense, then 256 routed experts + 1 shared expert (`_shexp`);
    1147 tensors, no nextn/MTP layer. `tokenizer` adds a placeholder vocabulary (129280 tokens)."""
    n_layer, n_dense, n_embd, n_head, n_vocab = 61, 3, 7168, 128, 129280
    q_lora, kv_lora, nope, rope, v_dim = 1536, 512, 128, 64, 128
    n_ff, n_expert, n_ff_exp = 18432, 256, 2048
    w, f = weight_type, "f32"
    tensors = [("token_embd.weight", (n_embd, n_vocab), w)]
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_kv_a_mqa.weight", (n_embd, kv_lora + rope), w),
            (b + "attn_kv_a_norm.weight", (kv_lora,), f),
            (b + "attn_kv_b.weight", (kv_lora, n_head * (nope + v_dim)), w),
            (b + "attn_k_b.weight", (nope, kv_lora, n_head), w),
            (b + "attn_v_b.weight", (kv_lora, v_dim, n_head), w),
            (b + "attn_norm.weight", (n_embd,), f),
            (b + "attn_output.weight", (n_head * v_dim, n_embd), w),
            (b + "attn_q_a.weight", (n_embd, q_lora), w),
            (b + "attn_q_a_norm.weight", (q_lora,), f),
            (b + "attn_q_b.weight", (q_lora, n_head * (nope + rope)), w),
        ]
        if i < n_dense:
            tensors += [
                (b + "ffn_down.weight", (n_ff, n_embd), w),
                (b + "ffn_gate.weight", (n_embd, n_ff), w),
                (b + "ffn_norm.weight", (n_embd,), f),
                (b + "ffn_up.weight", (n_embd, n_ff), w),
            ]
            continue
        tensors += [
            (b + "exp_probs_b.bias", (n_expert,), f),
            (b + "ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert), w),
            (b + "ffn_down_shexp.weight", (n_ff_exp, n_embd), w),
            (b + "ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert), w),
            (b + "ffn_gate_inp.weight", (n_embd, n_expert), f),
            (b + "ffn_gate_shexp.weight", (n_embd, n_ff_exp), w),
            (b + "ffn_norm.weight", (n_embd,), f),
            (b + "ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert), w),
            (b + "ffn_up_shexp.weight", (n_embd, n_ff_exp), w),
        ]
    tensors += [("output_norm.weight", (n_embd,), f), ("output.weight", (n_embd, n_vocab), w)]
    a = "deepseek2."
    metadata = {
        "general.architecture": "deepseek2",
        "general.name": "DeepSeek-V3 skeleton",
        a + "block_count": n_layer,
        a + "context_length": 163840,
        a + "embedding_length": n_embd,
        a + "feed_forward_length": n_ff,
        a + "attention.head_count": n_head,
        a + "attention.head_count_kv": n_head,
        a + "rope.freq_base": 10000.0,
        a + "attention.layer_norm_rms_epsilon": 1e-6,
        a + "expert_used_count": 8,
        a + "leading_dense_block_count": n_dense,
        a + "vocab_size": n_vocab,
        a + "attention.q_lora_rank": q_lora,
        a + "attention.kv_lora_rank": kv_lora,
        a + "attention.key_length": nope + rope,
        a + "attention.value_length": v_dim,
        a + "expert_feed_forward_length": n_ff_exp,
        a + "expert_count": n_expert,
        a + "expert_shared_count": 1,
        a + "expert_weights_scale": 2.5,
        a + "expert_weights_norm": True,
        a + "expert_gating_func": 2,  # sigmoid
        a + "rope.dimension_count": rope,
        a + "rope.scaling.type": "yarn",
        a + "rope.scaling.factor": 40.0,
        a + "rope.scaling.original_context_length": 4096,
        a + "rope.scaling.yarn_log_multiplier": 0.1,
        "general.file_type": _file_type(weight_type),
    }
    if tokenizer:
        metadata.update(_tokenizer_stub(n_vocab, 127741, pre="deepseek-v3"))
    types = {k: (F32, None) for k, v in metadata.items() if isinstance(v, float)}
    return tensors, metadata, types


def _file_type(weight_type: str) -> int:
    """llama_ftype whose name spells the weight type (bf16 -> BF16 = 32), else 0."""
    from iqk_studio.gguf.types import FTYPE_BY_NAME

    ft = FTYPE_BY_NAME.get(weight_type.upper())
    return ft.id if ft else 0


PRESETS = {"qwen3-30b-a3b": qwen3_30b_a3b, "deepseek-v3": deepseek_v3}


def write_preset(name: str, path, weight_type: str = "bf16", **options) -> Path:
    """Write one of PRESETS as a sparse skeleton file (Qwen3-30B-A3B BF16: ~57 GiB apparent);
    `options` go to the preset function (e.g. tokenizer=True for qwen3-30b-a3b)."""
    if name not in PRESETS:
        raise ValueError(f"unknown skeleton preset {name!r}; choose from {sorted(PRESETS)}")
    tensors, metadata, types = PRESETS[name](weight_type, **options)
    return build_skeleton(path, tensors, metadata, types)
