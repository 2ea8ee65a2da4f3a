"""Per-tensor (or per-class, per-layer) sensitivity: quantize one group of tensors to a chosen type,
keep the rest at the file's precision, and measure KLD against the unchanged model over a few
chunks — the data a size-vs-quality optimizer needs. A job of Progress / Sensitivity events."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.scoring import BaseLogProbs, base_rows
from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.kld_stats import KldAccumulator, chunk_kld, result_of
from iqk_studio.jobs.perplexity import TextTooShort, chunk_window, n_chunks_for, tokenize_file
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


class BaseRun:
    """The unchanged model over a few chunks, kept in memory: each chunk's hidden rows entering
    every layer (n_layer x (n_ctx, n_embd) float32), its normalised final rows and its 16-bit
    base log-probs. A candidate that changes layers >= L only runs layers L.. again."""

    def __init__(self, fw: Forward, tokens: np.ndarray, n_ctx: int, n_chunk: int, add_bos: bool,
                 bos_id: int):
        self.fw, self.tokens, self.n_ctx, self.n_chunk = fw, tokens, n_ctx, n_chunk
        self.add_bos, self.bos_id = add_bos, bos_id
        self.inputs: list[list[np.ndarray]] = []  # [chunk][layer] -> (n_ctx, n_embd)
        self.final: list[np.ndarray] = []  # [chunk] -> normalised rows first..n_ctx-2
        self.base: list[BaseLogProbs] = []

    @property
    def first(self) -> int:
        return self.n_ctx // 2

    def window(self, i: int) -> np.ndarray:
        return chunk_window(self.tokens, i, self.n_ctx, self.add_bos, self.bos_id)

    def targets(self, i: int) -> np.ndarray:
        return self.tokens[i * self.n_ctx + self.first + 1:(i + 1) * self.n_ctx]

    def run(self) -> Iterator[Progress]:
        """Evaluate the base (a generator of Progress, one per layer)."""
        fw, n_layer = self.fw, self.fw.cfg.n_layer
        total = self.n_chunk * (n_layer + 1)
        for i in range(self.n_chunk):
            if hasattr(fw.observer, "new_chunk"):
                fw.observer.new_chunk()
            x = fw.embed(self.window(i))
            ins = []
            for il in range(n_layer):
                ins.append(x)
                x = fw.layer(x, il, (self.first, self.n_ctx - 1) if il == n_layer - 1 else None)
                yield Progress(i * (n_layer + 1) + il + 1, total,
                               f"base chunk {i + 1}/{self.n_chunk}: layer {il + 1}/{n_layer}")
            h = fw.output_norm(x)
            parts = [base_rows(lg, self.targets(i)[r0:r0 + lg.shape[0]])
                     for r0, lg in fw.iter_logits(h)]
            self.base.append(BaseLogProbs(*(np.concatenate([getattr(p[0], f) for p in parts])
                                            for f in ("scale", "min_log_prob", "q")),
                                          nll=np.concatenate([p[1] for p in parts])))
            self.inputs.append(ins)
            self.final.append(h)
            yield Progress((i + 1) * (n_layer + 1), total, f"base chunk {i + 1}/{self.n_chunk}")

    def start_for(self, names) -> int:
        """First step a change of these tensors affects: -1 the embedding (token_embd, or
        anything outside blk.N but the output), a layer, or n_layer (output only)."""
        n_layer = self.fw.cfg.n_layer
        start = n_layer
        for n in names:
            parts = n.split(".")
            if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit():
                start = min(start, int(parts[1]))
            elif n != "output.weight":
                return -1
        return start

    def evaluate(self, weights, start: int, label: str = ""):
        """KLD of the model with `weights` against the base: a generator of Progress returning
        a KldResult; only the steps from `start` (see start_for) are run again."""
        fw = Forward(self.fw.cfg, weights, None, self.fw.kv_f16, self.fw.mm.mode,
                     self.fw.mm.ik_threads)  # multiplied as the base is
        n_layer = fw.cfg.n_layer
        per = n_layer - max(start, 0) + 1
        acc, t0 = KldAccumulator(), time.perf_counter()
        for i in range(self.n_chunk):
            if start >= n_layer:
                h = self.final[i]
            else:
                x = fw.embed(self.window(i)) if start < 0 else self.inputs[i][start]
                for il in range(max(start, 0), n_layer):
                    x = fw.layer(x, il, (self.first, self.n_ctx - 1) if il == n_layer - 1
                                 else None)
                    yield Progress(i * per + il - max(start, 0) + 1, self.n_chunk * per,
                                   f"{label}: chunk {i + 1}/{self.n_chunk}, layer {il + 1}")
                h = fw.output_norm(x)
            b, t = self.base[i], self.targets(i)
            rows = chunk_kld(fw, h, b, t)
            if rows is None:
                raise FloatingPointError(f"{label}: NaN or Inf in the model's output")
            for r in rows:
                acc.add(r)
            yield Progress((i + 1) * per, self.n_chunk * per, f"{label}: chunk {i + 1}")
        return result_of(acc, self.n_chunk, self.n_ctx, time.perf_counter() - t0)


def open_base(model, text_path, n_ctx: int, chunks: int, observer=None) -> BaseRun:
    """A BaseRun of an open model over the first `chunks` chunks of a text (not yet run);
    TextTooShort when the text is too short. observer: sees every matmul of the base pass."""
    tokens, add_bos, bos_id = tokenize_file(model, text_path)
    n_chunk = n_chunks_for(len(tokens), n_ctx, chunks, "kl_divergence")
    fw = Forward.from_model(model, observer=observer, weights=GGUFWeights(model))
    return BaseRun(fw, np.asarray(tokens, np.int64).reshape(-1), n_ctx, n_chunk, add_bos,
                   bos_id)


def sensitivity_job(model_path, text_path, cands: list[Candidate], n_ctx: int = 512,
                    chunks: int = 2, imatrix=None) -> Iterator[object]:
    """Base hidden states and log-probs are computed once and kept in memory; each candidate
    runs only the layers from its first changed tensor on."""
    from iqk_studio.gguf.reader import open_model

    if not cands:
        yield Failed("no tensor to test: nothing matches, or every tensor already has that type")
        return
    with open_model(model_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        try:
            base = open_base(model, text_path, n_ctx, chunks)
        except TextTooShort as e:
            yield Failed(str(e))
            return
        steps = base.n_chunk * (base.fw.cfg.n_layer + 1)
        total = steps * (len(cands) + 1)
        yield from base.run()
        for k, cand in enumerate(cands):
            t0 = time.perf_counter()
            imp = tensor_importance(model, cand.types, imatrix)
            ws = QuantizedWeights(base.fw.ws, cand.types, imp)
            for _, _, name in ws.prepare():  # a cancel lands within one row block
                yield Progress((k + 1) * steps, total, f"{cand.label}: quantizing {name}")
            gen = base.evaluate(ws, base.start_for(cand.types), cand.label)
            try:
                while True:
                    ev = next(gen)
                    if ev.total:
                        yield Progress((k + 1) * steps + ev.done * steps // ev.total, total,
                                       ev.message)
            except StopIteration as stop:
                s = stop.value.stats
            except FloatingPointError as e:
                yield Failed(str(e))
                return
            before, after = _sizes(model, cand.types)
            yield Sensitivity(k + 1, len(cands), cand.label, before, after, s.kld, s.kld_err,
                              s.ln_ratio, s.same_top, time.perf_counter() - t0)
        yield Finished(f"{len(cands)} groups tested over {base.n_chunk} chunks of {n_ctx}")
