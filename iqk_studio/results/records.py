"""Records of the results store: what a run is (RunSpec, known when it starts), what the store
holds about it (RunSummary), and its per-chunk and per-group values (ChunkRow, GroupRow)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

KINDS = ("perplexity", "kld", "imatrix", "sensitivity")
SOURCES = ("builtin", "external", "imported")
# running: in progress (or its process died: shown as "interrupted"); the others are final
STATUSES = ("running", "finished", "failed", "cancelled", "interrupted", "imported")

NAN = math.nan


@dataclass(frozen=True)
class RunSpec:
    """What makes a run comparable, as known when it starts. The recorder adds what the run
    states later (engine build, KV type, model name from an external tool's log)."""

    kind: str  # one of KINDS
    source: str = "builtin"  # one of SOURCES
    name: str = ""  # the user's label
    model_path: str | None = None
    model_name: str | None = None  # general.name
    model_id: str | None = None  # sha256 of the GGUF header bytes (identity.model_id)
    base_model_path: str | None = None  # KLD / sensitivity: the reference
    base_model_id: str | None = None
    recipe: str | None = None  # recipe text (recipe.textfile.dumps) when one was evaluated
    plan_bytes: int | None = None  # tensor bytes of what was evaluated (plan or file)
    plan_bpw: float | None = None
    text_path: str | None = None
    text_id: str | None = None  # sha256 of the text file's bytes
    n_ctx: int | None = None
    chunks: int | None = None  # chunks requested (None: all)
    kv_type: str | None = None  # "f16", "q8_0", "q8_0/f16" (K/V)
    engine: str = "iqk-studio"  # "iqk-studio" | "ik_llama.cpp" | "llama.cpp"
    engine_version: str = ""
    command: tuple[str, ...] = ()  # argv of an external tool
    facts: dict = field(default_factory=dict)  # anything else stated (threads, flash_attn...)


@dataclass(frozen=True)
class RunSummary:
    """One row of `results list`: the spec's fields plus status and final values."""

    id: int
    kind: str
    source: str
    status: str
    name: str
    created: float  # unix time
    finished: float | None
    model_path: str | None
    model_name: str | None
    model_id: str | None
    base_model_path: str | None
    base_model_id: str | None
    recipe: str | None
    plan_bytes: int | None
    plan_bpw: float | None
    text_path: str | None
    text_id: str | None
    n_ctx: int | None
    chunks: int | None  # requested
    n_done: int  # chunk (or group) rows recorded
    kv_type: str | None
    engine: str
    engine_version: str
    command: tuple[str, ...]
    final_ppl: float  # nan when unknown
    final_ppl_err: float
    final_kld: float
    final_kld_err: float
    same_top: float
    message: str  # failure message, or the final line
    facts: dict
    summary: dict  # final statistics (KLD percentiles, ...)

    @property
    def label(self) -> str:
        """The user's name, else the model's name or file name."""
        if self.name:
            return self.name
        if self.model_path:
            return self.model_path.replace("\\", "/").rsplit("/", 1)[-1]
        return self.model_name or f"run {self.id}"


@dataclass(frozen=True)
class ChunkRow:
    """Values after chunk `index` (running, as the tools print them); nan when not known."""

    index: int  # 1-based
    ppl: float = NAN
    ppl_err: float = NAN
    nll: float = NAN  # this chunk's mean NLL
    ppl_base: float = NAN
    ln_ratio: float = NAN
    ln_ratio_err: float = NAN
    kld: float = NAN
    kld_err: float = NAN
    rms_dp: float = NAN
    rms_dp_err: float = NAN
    same_top: float = NAN
    same_top_err: float = NAN
    seconds: float = NAN  # since the run started


CHUNK_FIELDS = tuple(f for f in ChunkRow.__dataclass_fields__ if f != "index")


@dataclass(frozen=True)
class GroupRow:
    """One tested group of a sensitivity run (jobs.sensitivity.Sensitivity)."""

    index: int
    label: str
    bytes_before: int
    bytes_after: int
    kld: float
    kld_err: float
    ln_ratio: float
    same_top: float
    seconds: float


@dataclass(frozen=True)
class Run:
    """A run with its values: `results show`, the GUI's overlays."""

    info: RunSummary
    chunks: tuple[ChunkRow, ...]
    groups: tuple[GroupRow, ...]


@dataclass(frozen=True)
class CostKey:
    """What makes optimizer measurements reusable: the same model, text, context, chunks,
    imatrix (its file_id, or "" for none) and method (engine version and measure settings)."""

    model_id: str
    text_id: str
    n_ctx: int
    chunks: int
    imatrix_id: str = ""
    method: str = ""


@dataclass(frozen=True)
class CostRow:
    """One measurement of a tensor group at a type: KLD against the unchanged model (nan when
    only the weighted quantization error is known), and that error."""

    group: str  # "blk.3.ffn_gate_up", "token_embd", or a recipe's "recipe:<sha256>"
    type: str  # the type its tensors were given ("" for a recipe)
    kld: float = NAN
    kld_err: float = NAN
    ln_ratio: float = NAN
    err: float = NAN  # weighted squared quantization error of the group's weights
    bytes: int = 0
    seconds: float = NAN
