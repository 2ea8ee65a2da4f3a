"""Perplexity job, exactly as llama-perplexity chunks and scores a text (shared/docs/
perplexity-imatrix-tokenizer.md §1): a generator of Progress / Chunk events, then Finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.scoring import NllAccumulator
from iqk_studio.jobs.events import Chunk, Failed, Finished, Progress


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    ppl_err: float  # σ of the mean NLL times PPL (nan when the variance is not positive)
    n_chunks: int
    n_ctx: int
    n_scored: int  # tokens scored (n_ctx - 1 - n_ctx/2 per chunk)
    chunk_ppl: tuple[float, ...]  # running PPL after each chunk
    seconds: float


class TextTooShort(ValueError):
    """Fewer than 2*n_ctx tokens; the message is llama-perplexity's."""


def n_chunks_for(n_tokens: int, n_ctx: int, chunks: int = -1, who: str = "perplexity") -> int:
    """Number of whole n_ctx chunks evaluated (`--chunks` only reduces it)."""
    if n_ctx < 4:
        raise ValueError(f"context size {n_ctx} is too small")
    if n_tokens < 2 * n_ctx:
        raise TextTooShort(
            f"{who}: you need at least {2 * n_ctx} tokens to evaluate perplexity with a context "
            f"of {n_ctx}\n{who}: the data file you provided tokenizes to only {n_tokens} tokens")
    n_max = n_tokens // n_ctx
    if chunks == 0:
        raise ValueError("--chunks 0: nothing to evaluate")
    return n_max if chunks < 0 else min(chunks, n_max)


def chunk_window(tokens: np.ndarray, i: int, n_ctx: int, add_bos: bool, bos_id: int) -> np.ndarray:
    """Tokens of chunk i as evaluated: the first one replaced by BOS when add_bos."""
    win = np.array(tokens[i * n_ctx:(i + 1) * n_ctx], dtype=np.int64)
    if add_bos:
        win[0] = bos_id
    return win


def run_layers(fw: Forward, win: np.ndarray, first: int, last: int, step0: int, total: int,
               label: str, all_rows: bool = False) -> Generator[Progress, None, np.ndarray]:
    """Drive fw.steps over one window, yielding a Progress per layer; returns the hidden rows
    first..last-1. The last layer computes every row from `first` to the window's end, as the
    reference's does (its batch size decides how ik multiplies); the rows past `last` are
    dropped."""
    gen = fw.steps(win, first, len(win), all_rows)
    n = fw.cfg.n_layer
    while True:
        try:
            done = next(gen)
        except StopIteration as stop:
            return stop.value[:last - first]
        yield Progress(step0 + done, total, f"{label}: layer {done}/{n}")


def ppl_and_err(nll: float, nll2: float, count: int) -> tuple[float, float]:
    """llama-perplexity's PPL and its uncertainty from Σnll, Σnll² over count tokens."""
    m = nll / count
    ppl = math.exp(m)
    var = nll2 / count - m * m
    if var > 0 and count > 1:
        return ppl, math.sqrt(var / (count - 1)) * ppl
    return ppl, math.nan


def chunk_nll(fw: Forward, h: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """NLL of each scored position (float64), logits computed in vocabulary slices (on the
    engine's threads, each slice's log-sum-exp beside its GEMM, then merged)."""
    n_vocab = fw.cfg.n_vocab
    NllAccumulator(targets, n_vocab)  # checks the targets

    def slice_acc(v0: int, logits: np.ndarray) -> NllAccumulator:
        acc = NllAccumulator(targets, n_vocab)
        acc.add(v0, logits)
        return acc

    parts = fw.map_logit_slices(h, slice_acc)
    acc = parts[0]
    for p in parts[1:]:
        acc.merge(p)
    return acc.nll()


def run_perplexity(fw: Forward, tokens: np.ndarray, n_ctx: int = 512, chunks: int = -1,
                   add_bos: bool | None = None, bos_id: int | None = None) -> Iterator[object]:
    """Events: Progress per layer, Chunk per chunk, then Finished(result=PerplexityResult);
    Failed when the text is too short or a chunk's NLL is NaN/Inf. Stop iterating to cancel."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    add_bos = fw.cfg.add_bos if add_bos is None else add_bos
    bos_id = fw.cfg.bos_id if bos_id is None else bos_id
    try:
        n_chunk = n_chunks_for(len(tokens), n_ctx, chunks)
    except TextTooShort as e:
        yield Failed(str(e))
        return
    first = n_ctx // 2
    steps = fw.cfg.n_layer + 1
    nll = nll2 = 0.0
    count = 0
    running: list[float] = []
    t0 = time.perf_counter()
    for i in range(n_chunk):
        win = chunk_window(tokens, i, n_ctx, add_bos, bos_id)
        h = yield from run_layers(fw, win, first, n_ctx - 1, i * steps, n_chunk * steps,
                                  f"chunk {i + 1}/{n_chunk}")
        v = chunk_nll(fw, h, tokens[i * n_ctx + first + 1:(i + 1) * n_ctx])
        if not np.isfinite(v).all():
            yield Failed(f"chunk {i + 1}: NaN or Inf in the model's output (non-finite NLL)")
            return
        nll += float(v.sum())
        nll2 += float(np.dot(v, v))
        count += v.size
        ppl, err = ppl_and_err(nll, nll2, count)
        running.append(ppl)
        dt = time.perf_counter() - t0
        yield Progress((i + 1) * steps, n_chunk * steps, f"chunk {i + 1}/{n_chunk}")
        yield Chunk(i + 1, n_chunk, float(v.mean()), ppl, err, (i + 1) * n_ctx / dt,
                    dt / (i + 1) * (n_chunk - i - 1))
    ppl, err = ppl_and_err(nll, nll2, count)
    res = PerplexityResult(ppl, err, n_chunk, n_ctx, count, tuple(running),
                           time.perf_counter() - t0)
    yield Finished(final_line(res), res)


def final_line(res: PerplexityResult) -> str:
    if not math.isfinite(res.ppl_err):
        return "Unexpected negative standard deviation of log(prob)"
    return (f"Final estimate: PPL over {res.n_chunks} chunks for n_ctx={res.n_ctx} = "
            f"{res.ppl:.4f} +/- {res.ppl_err:.5f}")


def tokenize_file(model, path) -> tuple[np.ndarray, bool, int]:
    """(token ids, add_bos, bos_id) of a text file read as llama-perplexity's `-f` reads it (one
    trailing newline removed, escapes processed) and tokenized with the model's own vocabulary."""
    from iqk_studio.engine.tokenizer import Tokenizer, read_perplexity_text

    tok = Tokenizer.from_model(model)
    ids = tok.encode(read_perplexity_text(Path(path)), add_special=True)
    return np.asarray(ids, dtype=np.int64), bool(tok.add_bos), int(tok.bos_id)


def bos_of(model, fw: Forward) -> tuple[bool, int]:
    """(add_bos, bos_id) as the model's vocabulary says (llama_should_add_bos_token), falling
    back to the parsed config when the vocabulary cannot be read."""
    from iqk_studio.engine.tokenizer import parse_vocab

    try:
        v = parse_vocab(model.metadata)
    except ValueError:
        return fw.cfg.add_bos, fw.cfg.bos_id
    return bool(v.add_bos), int(v.bos_id)


def perplexity_job(model_path, text_path, n_ctx: int = 512, chunks: int = -1,
                   weights=None, act_quant: str = "ik",
                   ik_threads: int | None = None) -> Iterator[object]:
    """Open a model, tokenize a text file and run perplexity over it (events as run_perplexity).
    weights: an optional weight source replacing the file's tensors (e.g. a recipe's);
    act_quant / ik_threads: as engine.forward.Forward."""
    from iqk_studio.gguf.reader import open_model

    with open_model(model_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        tokens, add_bos, bos_id = tokenize_file(model, text_path)
        fw = Forward.from_model(model, weights=weights, act_quant=act_quant,
                                ik_threads=ik_threads)
        yield from run_perplexity(fw, tokens, n_ctx, chunks, add_bos, bos_id)
