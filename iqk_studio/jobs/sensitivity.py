"""Per-tensor (or per-class, per-layer) sensitivity: quantize one group of tensors to a chosen type,
keep the rest at the file's precision, and measure KLD against the unchanged model over a few
chunks — the data a size-vs-quality optimizer needs. A job of Progress / Sensitivity events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.kld import model_base, run_kld
from iqk_studio.jobs.perplexity import TextTooShort, n_chunks_for, tokenize_file
from iqk_studio.jobs.recipe_eval import tensor_importance
from iqk_studio.quant.types import by_name


@dataclass(frozen=True)
class Candidate:
    label: str
    types: dict  # tensor name -> type name


@dataclass(frozen=True)
class Sensitivity:
    index: int  # 1-based
    count: int
    label: str
    bytes_before: int  # the group's bytes as stored in the file
    bytes_after: int  # with the candidate type
    kld: float  # mean KLD against the unchanged model
    kld_err: float
    ln_ratio: float  # mean ln(PPL(Q)/PPL(base))
    same_top: float
    seconds: float


GROUPINGS = ("tensor", "role", "layer")  # role: the name without blk.N. (attn_v, ffn_down_exps)


def candidates(model, qtype: str, by: str = "role", pattern: str | None = None) -> list[Candidate]:
    """Groups of quantizable 2-D+ weights (those a type can hold) set to qtype."""
    import re

    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    t = by_name(qtype)
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as e:
        raise ValueError(f"bad regex {pattern!r}: {e}") from None
    groups: dict[str, dict] = {}
    for name, info in model.tensors.items():
        if (len(info.shape) < 2 or not name.endswith("weight") or "_norm" in name
                or info.shape[0] % t.block or info.qtype.name == t.name
                or (rx is not None and not rx.search(name))):
            continue
        if by == "tensor":
            key = name
        elif by == "role":
            key = role(name)
        else:
            key = name.split(".")[1] if name.startswith("blk.") else "non-layer"
            key = f"layer {key}" if key.isdigit() else key
        groups.setdefault(key, {})[name] = t.name
    return [Candidate(k, v) for k, v in groups.items()]


def role(name: str) -> str:
    """blk.12.ffn_down_exps.weight -> ffn_down_exps; output.weight -> output."""
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit():
        parts = parts[2:]
    if parts[-1] == "weight":
        parts = parts[:-1]
    return ".".join(parts)


def _sizes(model, types: dict) -> tuple[int, int]:
    before = sum(model.tensors[n].nbytes for n in types)
    after = sum(by_name(t).nbytes(tuple(model.tensors[n].shape)) for n, t in types.items())
    return before, after


def sensitivity_job(model_path, text_path, cands: list[Candidate], n_ctx: int = 512,
                    chunks: int = 2, imatrix=None) -> Iterator[object]:
    """Base log-probs are computed once and kept in memory (chunks x scored positions x vocab
    16-bit values), then each candidate is evaluated against them."""
    from iqk_studio.gguf.reader import open_model

    if not cands:
        yield Failed("no tensor to test: nothing matches, or every tensor already has that type")
        return
    with open_model(model_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        tokens, add_bos, bos_id = tokenize_file(model, text_path)
        try:
            n_chunk = n_chunks_for(len(tokens), n_ctx, chunks, "kl_divergence")
        except TextTooShort as e:
            yield Failed(str(e))
            return
        base_ws = GGUFWeights(model)
        fw0 = Forward.from_model(model, weights=base_ws)
        steps = fw0.cfg.n_layer + 1
        total = n_chunk * steps * (len(cands) + 1)
        src = model_base(fw0, tokens, n_ctx, add_bos, bos_id)
        stored = []
        for i in range(n_chunk):
            stored.append((yield from src(i, i * steps, total)))

        def cached(i, step0, _total):
            yield Progress(step0, total, f"base chunk {i + 1}")
            return stored[i]

        for k, cand in enumerate(cands):
            t0 = time.perf_counter()
            imp = tensor_importance(model, cand.types, imatrix)
            ws = QuantizedWeights(base_ws, cand.types, imp)
            offset = (k + 1) * n_chunk * steps
            for _, _, name in ws.prepare():  # a cancel lands within one row block
                yield Progress(offset, total, f"{cand.label}: quantizing {name}")
            fw = Forward.from_model(model, weights=ws)
            result = None
            for ev in run_kld(fw, tokens, cached, n_ctx, n_chunk, add_bos, bos_id):
                if isinstance(ev, Failed):
                    yield Failed(f"{cand.label}: {ev.message}")
                    return
                if isinstance(ev, Finished):
                    result = ev.result
                elif isinstance(ev, Progress) and ev.total:
                    yield Progress(offset + ev.done * n_chunk * steps // ev.total, total,
                                   f"{cand.label}: {ev.message}")
            s = result.stats
            before, after = _sizes(model, cand.types)
            yield Sensitivity(k + 1, len(cands), cand.label, before, after, s.kld, s.kld_err,
                              s.ln_ratio, s.same_top, time.perf_counter() - t0)
        yield Finished(f"{len(cands)} groups tested over {n_chunk} chunks of {n_ctx}")
