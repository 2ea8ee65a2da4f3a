"""One evaluation run as the desktop app starts it: the open file as it is or a recipe quantized in
memory (imatrix / default / w = 1 weighting), perplexity or KL-divergence against a base model,
tokens from the on-disk cache. Events as jobs.perplexity / jobs.kld; Finished.result is a
RunResult, the record the results list and the size-vs-quality chart are built from."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, Progress
from iqk_studio.jobs.kld import model_base, run_kld
from iqk_studio.jobs.perplexity import run_perplexity
from iqk_studio.jobs.recipe_eval import plan_importance, plan_types
from iqk_studio.jobs.token_cache import cached_tokens
from iqk_studio.jobs.warmup import warm_types

IMPORTANCE_MODES = ("imatrix", "default", "uniform")
IMPORTANCE_LABELS = {"imatrix": "imatrix", "default": "no imatrix", "uniform": "w=1", "": ""}
NAN = float("nan")


@dataclass(frozen=True)
class EvalSpec:
    model_path: str
    text_path: str
    n_ctx: int = 512
    chunks: int = 8  # -1: every chunk of the text
    plan: object = None  # recipe.Plan to quantize in memory; None: the file as it is
    importance: str = "default"  # one of IMPORTANCE_MODES (a recipe's weighting)
    imatrix: object = None  # gguf.imatrix.Imatrix for importance "imatrix"
    base_path: str | None = None  # KL-divergence against this GGUF; None: perplexity only
    recipe_text: str = ""
    recipe_name: str = ""
    act_quant: str = "ik"  # engine.matmul.ACT_QUANT_MODES: "ik" as llama-perplexity, "none"
    ik_threads: int | None = None  # the llama-perplexity -t whose work split is emulated


@dataclass(frozen=True)
class RunResult:
    """A finished run: what was evaluated, on what, and what came out (per chunk and final)."""

    kind: str  # "ppl" or "kld"
    model_path: str
    recipe_text: str  # "" when the file was evaluated as it is
    recipe_name: str
    types: str  # the plan's types by bytes, e.g. "iq2_ks+iq4_ks+q6_K"
    importance: str  # "imatrix" / "default" / "uniform"; "" for the file as it is
    text_path: str
    n_ctx: int
    n_chunks: int
    total_bytes: int
    n_elements: int
    ppl: float
    ppl_err: float
    curve: tuple[float, ...] = ()  # running PPL after each chunk
    curve_err: tuple[float, ...] = ()
    chunk_nll: tuple[float, ...] = ()  # each chunk's mean NLL (nan when unknown): paired errors
    base_path: str = ""
    base_bytes: int = 0
    ppl_base: float = NAN
    ppl_base_err: float = NAN
    ppl_ratio: float = NAN  # mean PPL(Q)/PPL(base), paired over the same tokens (KLD runs)
    ppl_ratio_err: float = NAN
    kld: float = NAN
    kld_err: float = NAN
    same_top: float = NAN
    seconds: float = 0.0
    finished_at: float = field(default_factory=time.time)
    text_id: str = ""  # sha256 of the text when known (results store); "" compares by path

    @property
    def is_file(self) -> bool:
        return not self.recipe_text

    @property
    def gib(self) -> float:
        return self.total_bytes / 2**30

    @property
    def bpw(self) -> float:
        return self.total_bytes * 8 / self.n_elements if self.n_elements else 0.0

    def settings(self) -> tuple:
        """What must match for two runs to be compared: text, n_ctx, chunks."""
        return (self.text_path, self.n_ctx, self.n_chunks)

    def default_name(self) -> str:
        """Recipe name + types + importance mode (the file's name for the file as it is)."""
        if self.is_file:
            name = f"{Path(self.model_path).name} (file)"
        else:
            mode = IMPORTANCE_LABELS.get(self.importance, self.importance)
            name = f"{self.recipe_name or 'recipe'}: {self.types}, {mode}"
        return name + (" KLD" if self.kind == "kld" else "")


def type_mix(entries, limit: int = 3) -> str:
    """The types holding most of the bytes, largest first: 'iq2_ks+iq4_ks+q6_K'."""
    by: dict[str, int] = {}
    for e in entries:
        if len(e.shape) >= 2:
            by[e.type] = by.get(e.type, 0) + e.bytes
    names = sorted(by, key=lambda t: -by[t])
    return "+".join(names[:limit]) + ("+..." if len(names) > limit else "")


def _preload(ws, changed: dict) -> Iterator[Progress]:
    """Quantize the recipe's tensors before the first chunk, with progress and a cancel landing
    within one row block, so chunk times (and the ETA) measure evaluation only. The other
    tensors are left to the engine, which builds them from the stored bytes on first use."""
    if isinstance(ws, QuantizedWeights):
        for done, total, name in ws.prepare():
            yield Progress(done, total, f"quantizing {name} to {changed[name]}")


def evaluate(spec: EvalSpec) -> Iterator[object]:
    from iqk_studio.gguf.reader import open_model

    if spec.importance not in IMPORTANCE_MODES:
        raise ValueError(f"importance mode {spec.importance!r}: one of {IMPORTANCE_MODES}")
    t_start = time.perf_counter()
    with open_model(spec.model_path) as model:
        changed = plan_types(spec.plan) if spec.plan is not None else {}
        yield from warm_types(set(changed.values()))
        yield Progress(0, 0, "tokenizing the text (cached on disk afterwards)")
        tokens, add_bos, bos_id, _ = cached_tokens(model, spec.text_path)
        base_ws = GGUFWeights(model)
        ws = base_ws
        if changed:
            imp = plan_importance(model, spec.plan, spec.imatrix) if (
                spec.importance == "imatrix" and spec.imatrix is not None) else {}
            ws = QuantizedWeights(base_ws, changed, imp, uniform=spec.importance == "uniform")
        yield from _preload(ws, changed)
        engine = {"act_quant": spec.act_quant, "ik_threads": spec.ik_threads}
        fw = Forward.from_model(model, weights=ws, **engine)
        if spec.base_path is None:
            events = run_perplexity(fw, tokens, spec.n_ctx, spec.chunks, add_bos, bos_id)
            yield from _collect(events, spec, model, None, t_start)
            return
        same = Path(spec.base_path).resolve() == Path(spec.model_path).resolve()
        bmodel = model if same else open_model(spec.base_path)
        try:
            bfw = Forward.from_model(bmodel, weights=base_ws if same else None, **engine)
            if bfw.cfg.n_vocab != fw.cfg.n_vocab:
                yield Failed(f"the base model's vocabulary ({bfw.cfg.n_vocab}) differs from the "
                             f"model's ({fw.cfg.n_vocab})")
                return
            base = model_base(bfw, tokens, spec.n_ctx, add_bos, bos_id)
            events = run_kld(fw, tokens, base, spec.n_ctx, spec.chunks, add_bos, bos_id,
                             bfw.cfg.n_layer + 1)
            yield from _collect(events, spec, model, bmodel, t_start)
        finally:
            if not same:
                bmodel.close()


def collect(events, spec: EvalSpec, model, base_bytes: int | None,
            t_start: float) -> Iterator[object]:
    """Pass events through, turning the Finished result (PerplexityResult or KldResult) into a
    RunResult built with the curve of running values; base_bytes: the base model's tensor bytes
    (None for perplexity)."""
    curve, err, nll = [], [], []
    try:
        for ev in events:
            if isinstance(ev, (Chunk, KldChunk)):
                curve.append(ev.ppl)
                err.append(ev.ppl_err)
                nll.append(ev.nll if isinstance(ev, Chunk) else NAN)
            if isinstance(ev, Finished) and ev.result is not None:
                yield Finished(ev.message, run_result(spec, model, base_bytes, ev.result, curve,
                                                      err, nll, time.perf_counter() - t_start))
            else:
                yield ev
    finally:  # a cancel reaches the job now (an external tool is stopped), not at its collection
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _collect(events, spec: EvalSpec, model, bmodel, t_start: float) -> Iterator[object]:
    base_bytes = None if bmodel is None else int(sum(t.nbytes for t in bmodel.tensors.values()))
    yield from collect(events, spec, model, base_bytes, t_start)


def run_result(spec, model, base_bytes, r, curve, err, nll, seconds) -> RunResult:
    """The RunResult of a finished run of `spec` on `model` (an open GGUF, header enough)."""
    p = spec.plan
    entries = p.entries if p is not None else ()
    total = p.total_bytes if p is not None else sum(t.nbytes for t in model.tensors.values())
    n_el = p.n_elements if p is not None else sum(
        math.prod(t.shape) for t in model.tensors.values())
    if entries:
        types = type_mix(entries)
    else:
        types = type_mix([_Entry(t.qtype.name, t.shape, t.nbytes) for t in model.tensors.values()])
    common = dict(model_path=str(spec.model_path), recipe_text=spec.recipe_text if p else "",
                  recipe_name=spec.recipe_name if p else "", types=types,
                  importance=spec.importance if p else "", text_path=str(spec.text_path),
                  n_ctx=r.n_ctx, n_chunks=r.n_chunks, total_bytes=int(total),
                  n_elements=int(n_el), curve=tuple(curve), curve_err=tuple(err),
                  chunk_nll=tuple(float(v) for v in nll), seconds=seconds)
    if not hasattr(r, "stats"):  # PerplexityResult
        return RunResult("ppl", ppl=float(r.ppl), ppl_err=float(r.ppl_err), **common)
    s = r.stats
    stats = {k: float(getattr(s, k)) for k in ("ppl", "ppl_err", "ppl_base", "ppl_base_err",
                                               "ppl_ratio", "ppl_ratio_err", "kld", "kld_err",
                                               "same_top")}
    return RunResult("kld", base_path=str(spec.base_path), base_bytes=int(base_bytes or 0),
                     **stats, **common)


@dataclass(frozen=True)
class _Entry:
    type: str
    shape: tuple
    bytes: int


@dataclass(frozen=True)
class RecipePoint:
    """One point of the size-vs-quality chart."""

    label: str
    total_bytes: int
    bpw: float
    ppl: float
    ppl_err: float
    n_chunks: int
    n_ctx: int
    text: str


def evaluate_plan(model_path, plan, text_path, n_ctx: int = 512, chunks: int = -1,
                  imatrix=None, label: str = "", act_quant: str = "ik",
                  ik_threads: int | None = None) -> Iterator[object]:
    """Perplexity of the model as the plan would quantize it (evaluate() with the plan's imatrix,
    or the default weighting without one); Finished.result is a RecipePoint."""
    spec = EvalSpec(str(model_path), str(text_path), n_ctx, chunks, plan,
                    "imatrix" if imatrix is not None else "default", imatrix,
                    recipe_name=label, act_quant=act_quant, ik_threads=ik_threads)
    for ev in evaluate(spec):
        if isinstance(ev, Finished) and isinstance(ev.result, RunResult):
            r = ev.result
            yield Finished(ev.message, RecipePoint(label, plan.total_bytes, plan.bpw, r.ppl,
                                                   r.ppl_err, r.n_chunks, r.n_ctx,
                                                   str(text_path)))
        else:
            yield ev
