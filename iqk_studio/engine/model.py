"""ModelConfig: the hyper-parameters the forward pass needs, parsed once from GGUF metadata.

Key names and defaults follow ik_llama.cpp (shared/docs/perplexity-imatrix-tokenizer.md §5).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from iqk_studio.gguf.values import MetadataError, meta_float, meta_int, meta_len, meta_str, short

ARCHS = ("llama", "qwen2", "qwen3", "qwen3moe", "gemma3")
_NEOX = {"qwen2", "qwen3", "qwen3moe", "gemma3"}
_QK_NORM = {"qwen3", "qwen3moe", "gemma3"}
GEMMA3_SWA_PATTERN = 6  # hard-coded in build_gemma3.cpp: layer il is global iff (il+1) % 6 == 0
GEMMA3_LOCAL_ROPE_BASE = 10000.0
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS


class ModelError(ValueError):
    """The model cannot be evaluated (unsupported architecture, missing key or tensor)."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int  # key/query head size (attention.key_length)
    head_dim_v: int  # value head size (attention.value_length)
    n_ff: int  # dense FFN width (0 for MoE layers)
    n_rot: int  # rotated dims per head
    eps: float  # RMSNorm epsilon (also Q/K norms)
    rope_neox: bool  # NEOX rotates (x[k], x[k+n_rot/2]); NORM rotates (x[2k], x[2k+1])
    rope_base: float
    rope_scale: float  # freq_scale = 1 / rope.scaling.factor
    rope_attn_factor: float
    kq_scale: float
    embd_scale: float  # sqrt(n_embd) for gemma3, else 1
    qk_norm: bool
    post_norms: bool  # gemma3 post_attention_norm / post_ffw_norm
    act: str  # "silu" or "gelu" (tanh approximation)
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_swa: int = 0  # sliding window (0 = none)
    swa_pattern: int = 0  # every swa_pattern-th layer is global
    rope_base_local: float = 0.0  # rope base of sliding layers
    tied_output: bool = False  # output.weight absent: token_embd is reused
    add_bos: bool = False
    bos_id: int = -1

    def is_swa(self, il: int) -> bool:
        return self.n_swa > 0 and self.swa_pattern > 0 and (il + 1) % self.swa_pattern != 0

    def rope_for_layer(self, il: int) -> tuple[float, float]:
        """(freq_base, freq_scale) used by layer il."""
        if self.is_swa(il) and self.rope_base_local > 0:
            return self.rope_base_local, 1.0
        return self.rope_base, self.rope_scale


def _scalar_per_layer(v, key: str) -> int:
    """Scalar or per-layer array holding one value; a per-layer varying value is unsupported."""
    if isinstance(v, np.ndarray | list | tuple):
        arr = np.asarray(v).reshape(-1)
        if arr.dtype.kind not in "iu" or not arr.size:
            raise MetadataError(f"metadata {key} must be an integer or integer array, got "
                                f"{short(v)}")
        vals = {int(x) for x in arr}
        if len(vals) != 1:
            raise ModelError(f"{key}: per-layer values {short(sorted(vals))} are not supported")
        return vals.pop()
    return meta_int({key: v}, key, lo=0)


def config_from_metadata(metadata: Mapping, tensor_names: Iterable[str],
                         token_embd_shape: tuple[int, ...] | None = None) -> ModelConfig:
    """Parse the GGUF metadata (key -> value) and tensor names into a ModelConfig."""
    md = metadata
    arch = md.get("general.architecture")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise ModelError(f"architecture {short(arch)} is not supported (supported: "
                         f"{', '.join(ARCHS)})")
    names = set(tensor_names)

    def key(k: str, default=None, required: bool = False):
        full = f"{arch}.{k}"
        if full in md:
            return md[full]
        if required:
            raise ModelError(f"metadata key {full} is missing")
        return default

    def num(k: str, default=None, required: bool = False, lo: int = 0, hi: int = 2**31 - 1):
        key(k, required=required)  # a missing required key is a ModelError
        return meta_int(md, f"{arch}.{k}", default, lo, hi)

    def real(k: str, default=None, required: bool = False) -> float:
        key(k, required=required)
        return meta_float(md, f"{arch}.{k}", default)

    n_embd = num("embedding_length", required=True, lo=1)
    n_layer = num("block_count", required=True, hi=MAX_LAYERS)
    n_head = _scalar_per_layer(key("attention.head_count", required=True), f"{arch}.attention"
                               ".head_count")
    n_head_kv = _scalar_per_layer(key("attention.head_count_kv", n_head), f"{arch}.attention"
                                  ".head_count_kv")
    if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv:
        raise ModelError(f"bad head counts n_head={n_head} n_head_kv={n_head_kv}")
    head_dim = num("attention.key_length", n_embd // n_head)
    head_dim_v = num("attention.value_length", head_dim)
    n_rot = num("rope.dimension_count", head_dim)
    if n_rot > head_dim or n_rot % 2 or head_dim <= 0:
        raise ModelError(f"rope.dimension_count {n_rot} does not fit head_dim {head_dim}")
    n_expert = num("expert_count", 0, hi=512)
    n_expert_used = num("expert_used_count", 0)
    n_ff = _scalar_per_layer(key("feed_forward_length", 0), f"{arch}.feed_forward_length")
    n_ff_exp = 0
    if n_expert:
        if not 0 < n_expert_used <= n_expert:
            raise ModelError(f"expert_used_count {n_expert_used} of {n_expert} experts")
        n_ff_exp = num("expert_feed_forward_length", n_ff // max(n_expert_used, 1))
    eps = real("attention.layer_norm_rms_epsilon", required=True)

    scaling_type = meta_str(md, f"{arch}.rope.scaling.type", "linear")
    if scaling_type == "yarn":
        raise ModelError("YaRN rope scaling is not supported")
    factor = real("rope.scaling.factor", real("rope.scale_linear", 0.0)) or 0.0
    rope_scale = 1.0 if scaling_type == "none" or factor == 0.0 else 1.0 / factor
    attn_factor = real("rope.scaling.attn_factor", 1.0) or 1.0

    if token_embd_shape is not None and len(token_embd_shape) == 2:
        n_vocab = int(token_embd_shape[1])
    elif f"{arch}.vocab_size" in md:
        n_vocab = num("vocab_size")
    else:
        n_vocab = meta_len(md, "tokenizer.ggml.tokens", str) or 0
    if n_vocab <= 0:
        raise ModelError("cannot tell the vocabulary size")

    gemma = arch == "gemma3"
    n_swa = num("attention.sliding_window", 0, required=gemma) if gemma else 0
    kq_scale = 1.0 / math.sqrt(head_dim)
    if gemma and n_layer == 62:
        kq_scale = 1.0 / math.sqrt(n_embd / n_head)

    tok_model = md.get("tokenizer.ggml.model")
    add_bos_default = isinstance(tok_model, str) and tok_model == "llama"
    add_bos = md.get("tokenizer.ggml.add_bos_token", add_bos_default)
    if not isinstance(add_bos, bool | int | np.integer):
        raise MetadataError(f"metadata tokenizer.ggml.add_bos_token must be a bool, got "
                            f"{short(add_bos)}")
    return ModelConfig(
        arch=arch, n_vocab=n_vocab, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        n_head_kv=n_head_kv, head_dim=head_dim, head_dim_v=head_dim_v, n_ff=n_ff, n_rot=n_rot,
        eps=eps, rope_neox=arch in _NEOX, rope_base=real("rope.freq_base", 10000.0),
        rope_scale=rope_scale, rope_attn_factor=attn_factor, kq_scale=kq_scale,
        embd_scale=math.sqrt(n_embd) if gemma else 1.0, qk_norm=arch in _QK_NORM,
        post_norms=gemma, act="gelu" if gemma else "silu", n_expert=n_expert,
        n_expert_used=n_expert_used, n_ff_exp=n_ff_exp, n_swa=n_swa,
        swa_pattern=GEMMA3_SWA_PATTERN if gemma else 0,
        rope_base_local=GEMMA3_LOCAL_ROPE_BASE if gemma else 0.0,
        tied_output="output.weight" not in names,
        add_bos=bool(add_bos),
        bos_id=meta_int(md, "tokenizer.ggml.bos_token_id", 1 if add_bos_default else -1,
                        -(2**31), 2**32 - 1),
    )
