"""Event records that jobs yield; the CLI prints them, the GUI turns them into signals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class TensorDone:
    index: int
    count: int
    name: str
    qtype: str
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Chunk:
    index: int  # 1-based chunk number
    count: int
    nll: float  # mean NLL of this chunk's scored tokens
    ppl: float  # running PPL over all chunks so far
    ppl_err: float  # running uncertainty of the PPL (llama-perplexity's formula)
    tokens_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class Finished:
    message: str = ""
    result: object = None


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class KldChunk:
    """Running KL-divergence statistics after a chunk (llama-perplexity --kl-divergence's line);
    fractions, not percent."""

    index: int  # 1-based chunk number
    count: int
    ppl: float  # PPL(Q)
    ppl_err: float
    ppl_base: float
    ln_ratio: float  # mean ln(PPL(Q)/PPL(base))
    ln_ratio_err: float
    kld: float  # mean KL divergence
    kld_err: float
    rms_dp: float  # RMS of p(Q) - p(base) of the target token
    rms_dp_err: float
    same_top: float  # fraction of positions whose argmax agrees
    same_top_err: float
    tokens_per_second: float
    eta_seconds: float


@dataclass(frozen=True)
class RunInfo:
    """What a run states about itself, for the results store: yielded once by an external run
    when the tool's log header has been read (before its first chunk), and again with more facts
    if the tool states them later. `facts` keys: flavour, build, commit, model_path, model_name,
    kv_k, kv_v, n_ctx, n_chunks, n_seq, threads, ... (whatever the log said)."""

    engine: str  # "ik_llama.cpp" | "llama.cpp" | "iqk-studio"
    version: str  # "build 4840 (8337e4cd3)"
    command: tuple[str, ...]  # the argv as run
    facts: dict
