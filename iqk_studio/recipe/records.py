"""Frozen records of the recipe layer: Recipe (input), PlanEntry / Plan / Lint (output)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

# per-class options of llama-quantize: Recipe field -> command-line option
CLASS_OPTIONS: dict[str, str] = {
    "attn_q_type": "--attn-q-type",
    "attn_k_type": "--attn-k-type",
    "attn_v_type": "--attn-v-type",
    "attn_qkv_type": "--attn-qkv-type",
    "attn_output_type": "--attn-output-type",
    "ffn_gate_type": "--ffn-gate-type",
    "ffn_up_type": "--ffn-up-type",
    "ffn_down_type": "--ffn-down-type",
    "output_tensor_type": "--output-tensor-type",
    "token_embedding_type": "--token-embedding-type",
    "per_layer_token_embedding_type": "--per-layer-token-embedding-type",
    "ffn_gate_inp_type": "--ffn-gate-inp-type",
}
# boolean flags: Recipe field -> option
FLAG_OPTIONS: dict[str, str] = {
    "pure": "--pure",
    "leave_output_tensor": "--leave-output-tensor",
    "ignore_imatrix_rules": "--ignore-imatrix-rules",
    "allow_requantize": "--allow-requantize",
}


@dataclass(frozen=True)
class Rule:
    """One `--custom-q` item: regex (searched, ECMAScript) = ggml type name (case-sensitive)."""

    pattern: str
    type_name: str

    def __str__(self) -> str:
        return f"{self.pattern}={self.type_name}"


@dataclass(frozen=True)
class Placement:
    """One `--override-tensor` item: regex = buffer type (CPU, CUDA0, ...); first match wins."""

    pattern: str
    device: str

    def __str__(self) -> str:
        return f"{self.pattern}={self.device}"


@dataclass(frozen=True)
class Recipe:
    base: str = "Q8_0"  # llama-quantize's positional type (ftype name, case-insensitive, or id)
    rules: tuple[Rule, ...] = ()
    attn_q_type: str | None = None  # per-class options: raw text as typed (may be invalid)
    attn_k_type: str | None = None
    attn_v_type: str | None = None
    attn_qkv_type: str | None = None
    attn_output_type: str | None = None
    ffn_gate_type: str | None = None
    ffn_up_type: str | None = None
    ffn_down_type: str | None = None
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    per_layer_token_embedding_type: str | None = None
    ffn_gate_inp_type: str | None = None
    pure: bool = False
    leave_output_tensor: bool = False
    ignore_imatrix_rules: bool = False
    allow_requantize: bool = False
    imatrix: str | None = None  # path; its presence changes some defaults (has_imatrix)
    placement: tuple[Placement, ...] = ()
    extra_args: tuple[str, ...] = ()  # other llama-quantize options, passed through on export
    note: str = ""

    @property
    def has_imatrix(self) -> bool:
        return bool(self.imatrix)

    def options(self) -> dict[str, str]:
        """Per-class options that are set: field name -> raw type text."""
        return {k: getattr(self, k) for k in CLASS_OPTIONS if getattr(self, k) is not None}

    def with_(self, **changes) -> Recipe:
        return replace(self, **changes)


@dataclass(frozen=True)
class Lint:
    code: str  # stable identifier, e.g. "rule-unused"
    severity: str  # "error" (llama-quantize refuses or aborts), "warning", "info"
    message: str
    where: str = ""  # e.g. "rule 3 'blk\\.[0-2]\\.=iq4_ks', column 5" or an option name
    rule_index: int | None = None
    tensors: tuple[str, ...] = ()

    def __str__(self) -> str:
        loc = f" [{self.where}]" if self.where else ""
        return f"{self.severity}: {self.message}{loc}"


class PlanEntry(NamedTuple):
    """One tensor of a plan (a NamedTuple: plans are rebuilt on every keystroke)."""

    name: str
    shape: tuple[int, ...]
    source_type: str
    type: str  # final ggml type name as written to the GGUF
    bytes: int  # ggml_nbytes in the new file (row meta included, padding excluded)
    n_elements: int
    reason: str  # which rule / default mix / option / fallback decided, and from what
    cls: str  # breakdown class (see CLASSES)
    layer: int | None
    device: str = "GPU"
    quantized: bool = False  # False: copied unchanged (never a candidate, or same type)
    rule_index: int | None = None  # --custom-q rule that fired (index into Recipe.rules)
    fallback_from: str | None = None  # type replaced by the block-size / interleave fallback
    warnings: tuple[str, ...] = ()


CLASSES = ("attention", "ffn", "experts_gate", "experts_up", "experts_gate_up", "experts_down",
           "shared_experts", "router", "embeddings", "output", "norms_other")


@dataclass(frozen=True)
class Plan:
    entries: tuple[PlanEntry, ...]
    total_bytes: int
    source_bytes: int
    n_elements: int
    by_class: dict[str, int] = field(default_factory=dict)
    by_layer: dict[int, int] = field(default_factory=dict)  # -1 = tensors outside blk.N
    by_device: dict[str, int] = field(default_factory=dict)
    warnings: tuple[Lint, ...] = ()

    @property
    def gib(self) -> float:
        return self.total_bytes / 2**30

    @property
    def mib(self) -> float:
        return self.total_bytes / 2**20

    @property
    def bpw(self) -> float:
        return self.total_bytes * 8 / self.n_elements if self.n_elements else 0.0

    @property
    def cpu_bytes(self) -> int:
        return self.by_device.get("CPU", 0)

    @property
    def gpu_bytes(self) -> int:
        return self.total_bytes - self.cpu_bytes

    @property
    def errors(self) -> tuple[Lint, ...]:
        return tuple(w for w in self.warnings if w.severity == "error")

    def entry(self, name: str) -> PlanEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)
