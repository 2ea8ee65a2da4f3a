"""Memory a forward-pass job (perplexity, KLD, imatrix, recipe evaluation) needs for a context size,
and what the machine can give: a run that cannot fit is refused before it starts, with the figure
and the largest context that fits (bench/bench_memory.py compares the estimate with peak RSS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

F32 = 4
OVERHEAD = 320 << 20  # interpreter, numpy/numba/BLAS, tokenizer tables, compiled kernels
MARGIN = 1.1  # numpy temporaries the terms below do not name
VOCAB_BYTES = 640  # tokenizer tables (Python dicts of tokens and merges) per vocabulary entry
CTX_STEP = 64  # suggested contexts are rounded down to a multiple of this
LOGIT_COLS = 16384  # Forward.iter_logit_slices


@dataclass(frozen=True)
class MemoryNeed:
    total: int  # bytes the run needs at its peak
    weights: int  # float32 weights kept in memory
    attention: int  # one layer's scores (n_head, T, T) and the cached causal masks
    activations: int  # everything else that grows with T


def weight_bytes(model, copies: int = 1) -> int:
    """float32 bytes of every tensor (the engine dequantizes each once and keeps it); copies=2
    when a recipe keeps quantized-then-dequantized versions beside the originals."""
    return copies * F32 * sum(t.n_elements for t in model.tensors.values())


def need(cfg, n_ctx: int, weights: int, per_token: int = 0) -> MemoryNeed:
    """Peak bytes of one window of n_ctx tokens through Forward with config `cfg` (ModelConfig).
    Inside a layer: the attention scores (n_head, T, T) float32 with the cached (T, T) and
    (T/2, T) masks, plus the layer's per-token rows; after the layers: the logits of a
    vocabulary slice (T/2 rows, and a temporary). The larger phase counts, plus per_token bytes
    the job keeps per token (a KLD base's log-probs)."""
    t = int(n_ctx)
    attention = int((cfg.n_head + 1.5) * t * t * F32)
    q = cfg.n_head * cfg.head_dim
    kv = cfg.n_head_kv * (cfg.head_dim + cfg.head_dim_v)
    ff = max(cfg.n_ff, cfg.n_ff_exp * max(cfg.n_expert_used, 1))
    layer = t * F32 * (6 * cfg.n_embd + 4 * q + 3 * kv + 3 * ff)
    logits = t * F32 * min(cfg.n_vocab, LOGIT_COLS)
    activations = layer + max(0, logits - attention)
    fixed = weights + OVERHEAD + VOCAB_BYTES * cfg.n_vocab
    total = int(MARGIN * (attention + activations)) + t * per_token + fixed
    return MemoryNeed(total, weights, attention, activations)


def largest_ctx(cfg, budget: int, weights: int, per_token: int = 0) -> int:
    """The largest n_ctx (a multiple of CTX_STEP) whose need() fits in `budget` bytes; 0 if none."""
    if need(cfg, CTX_STEP, weights, per_token).total > budget:
        return 0
    lo, hi = 1, 2
    while need(cfg, hi * CTX_STEP, weights, per_token).total <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # need() grows with n_ctx: bisect on multiples of CTX_STEP
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if need(cfg, mid * CTX_STEP, weights, per_token).total <= budget \
            else (lo, mid)
    return lo * CTX_STEP


def available_bytes() -> int | None:
    """Memory this process can still use: MemAvailable, capped by a cgroup limit (containers);
    the physical memory where /proc is absent; None when nothing tells."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    limit = _cgroup_room()
    return min(avail, limit) if limit is not None else avail


def _cgroup_room() -> int | None:
    """limit - usage of this process's cgroup (v2, then v1), None when unlimited or unknown."""
    for lim, cur in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                     ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                      "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(lim).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:
                return None
            return max(0, int(text) - int(Path(cur).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_fits(cfg, n_ctx: int, weights: int, per_token: int = 0,
               available: int | None = None) -> str | None:
    """None when a run at n_ctx fits in the available memory (or it is unknown), else the
    one-line reason with the figures and the largest context that fits."""
    avail = available_bytes() if available is None else available
    if avail is None:
        return None
    m = need(cfg, n_ctx, weights, per_token)
    if m.total <= avail:
        return None
    best = largest_ctx(cfg, avail, weights, per_token)
    hint = (f"the largest context that fits is -c {best}" if best >= 4 else
            f"the weights alone (float32) need {gib(weights)}")
    return (f"a context of {n_ctx} needs about {gib(m.total)} of memory (attention "
            f"{gib(m.attention)}, weights {gib(m.weights)}), {gib(avail)} is available; {hint}")
