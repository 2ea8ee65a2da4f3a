"""What llama-quantize knows about a model when it picks types: hparams, model.type, tensor list.

Derived from GGUF metadata exactly as ik_llama.cpp's llm_load_hparams does for the fields that
llama_tensor_get_type reads (src/llama-hparams.cpp, src/llama-quantize.cpp:1259-1280).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from iqk_studio.gguf.types import BY_ID, QuantType
from iqk_studio.gguf.values import meta_int, meta_len, meta_str

_BLK = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class TensorRef:
    """The parts of a tensor a plan reads: never its data."""

    name: str
    shape: tuple[int, ...]  # ggml order, ne0 first
    qtype: QuantType

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_dims(self) -> int:
        """ggml_n_dims: trailing dimensions of size 1 do not count (minimum 1)."""
        n = len(self.shape)
        while n > 1 and self.shape[n - 1] == 1:
            n -= 1
        return max(n, 1)

    @property
    def layer(self) -> int | None:
        m = _BLK.match(self.name)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ModelFacts:
    arch: str
    n_layer: int
    n_head: int  # of layer 0
    n_head_kv: int  # of layer 0 (defaults to n_head)
    n_embd: int
    n_expert: int
    n_vocab: int
    model_type: str | None  # "8B", "70B", ... where llm_load_hparams decides one; else None
    has_output: bool  # the GGUF holds output.weight (untied embeddings)
    n_attention_wv: int  # tensors whose name contains attn_v.weight or attn_qkv.weight

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


# ik_llama.cpp's limits (llama-hparams.h LLAMA_MAX_LAYERS, llama-hparams.cpp LLAMA_MAX_EXPERTS)
MAX_LAYERS = 512
MAX_EXPERTS = 512


def model_type(arch: str, n_layer: int, n_vocab: int, n_head: int, n_head_kv: int,
               n_embd: int, n_expert: int) -> str | None:
    """model.type for the archs where it can be 8B or 70B (llama-hparams.cpp); None otherwise."""
    if arch == "llama":
        if n_expert == 8:
            return {32: "8x7B", 56: "8x22B"}.get(n_layer)
        if n_layer == 32:
            return "3B" if n_vocab == 49152 else ("7B" if n_vocab < 40000 else "8B")
        if n_layer == 80:
            return "65B" if n_head == n_head_kv else "70B"
        return {22: "1B", 26: "3B", 36: "8B", 40: "13B", 48: "34B", 60: "30B"}.get(n_layer)
    if arch in ("deci", "qwen2", "qwen2vl", "olmo") and n_layer == 80:
        return "70B"
    if arch in ("qwen3", "qwen3vl") and n_layer == 36:
        return "4B" if n_embd == 2560 else "8B"
    if arch == "cohere2" and n_layer == 32:
        return "8B"
    if arch == "mistral3" and n_layer == 34:
        return "8B"
    return None


def tensor_refs(model_like) -> tuple[TensorRef, ...]:
    """Names, shapes and types of every tensor in file order, from anything with .tensors."""
    out = []
    for name, info in model_like.tensors.items():
        qt = getattr(info, "qtype", None)
        if qt is None:
            qt = BY_ID[int(info.type_id)]
        shape = tuple(int(d) for d in info.shape)
        out.append(TensorRef(str(getattr(info, "name", name)), shape, qt))
    return tuple(out)


def model_facts(metadata: dict, tensors: tuple[TensorRef, ...]) -> ModelFacts:
    """The hyper-parameters llama-quantize reads; a value of the wrong type or out of range is a
    MetadataError naming its key (llama.cpp's "key ... has wrong type")."""
    arch = meta_str(metadata, "general.architecture")

    def key(k, default=0, hi=2**31 - 1, per_layer=False):
        return meta_int(metadata, f"{arch}.{k}", default, 0, hi, per_layer)

    n_layer = key("block_count", hi=MAX_LAYERS)
    n_head = key("attention.head_count", per_layer=True)
    n_head_kv = key("attention.head_count_kv", n_head, per_layer=True)
    n_vocab = key("vocab_size", None)
    if n_vocab is None:
        n_vocab = meta_len(metadata, "tokenizer.ggml.tokens", str) or 0
    n_embd = key("embedding_length")
    n_expert = key("expert_count", hi=MAX_EXPERTS)
    has_output = False
    n_wv = 0
    for t in tensors:
        if "attn_v.weight" in t.name or "attn_qkv.weight" in t.name:
            n_wv += 1
        elif t.name == "output.weight":
            has_output = True
    return ModelFacts(
        arch=arch, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv, n_embd=n_embd,
        n_expert=n_expert, n_vocab=n_vocab,
        model_type=model_type(arch, n_layer, n_vocab, n_head, n_head_kv, n_embd, n_expert),
        has_output=has_output, n_attention_wv=n_wv,
    )


@dataclass(frozen=True)
class _Info:
    name: str
    shape: tuple[int, ...]
    type_id: int
    qtype: QuantType


@dataclass(frozen=True)
class StandIn:
    """An in-memory model with what plan() reads: .tensors (name -> info) and .metadata."""

    tensors: dict
    metadata: dict


def stand_in(tensors, metadata: dict) -> StandIn:
    """From [(name, shape (ggml order), type name)] in file order, e.g. gguf.skeleton presets."""
    from iqk_studio.gguf.types import BY_NAME

    infos = {}
    for name, shape, tname in tensors:
        qt = BY_NAME[tname] if isinstance(tname, str) else BY_ID[int(tname)]
        infos[name] = _Info(name, tuple(int(d) for d in shape), qt.id, qt)
    return StandIn(infos, dict(metadata))
