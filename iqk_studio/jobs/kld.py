"""KL-divergence job, as llama-perplexity --kl-divergence (shared/docs/perplexity-imatrix-
tokenizer.md §2): base and tested model over the same chunks, streaming running statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import numpy as np

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.scoring import BaseLogProbs, base_rows
from iqk_studio.jobs.events import Chunk, Failed, Finished, KldChunk, Progress
from iqk_studio.jobs.kld_stats import (
    MAGIC,
    BaseFileReader,
    BaseFileWriter,
    KldAccumulator,
    KldResult,
    chunk_kld,
    result_of,
)
from iqk_studio.jobs.perplexity import (
    PerplexityResult,
    TextTooShort,
    bos_of,
    chunk_window,
    final_line,
    n_chunks_for,
    ppl_and_err,
    run_layers,
    tokenize_file,
)

# base(i, step0, total) -> generator of Progress returning chunk i's BaseLogProbs
BaseSource = Callable[[int, int, int], Generator[Progress, None, BaseLogProbs]]


def model_base(fw: Forward, tokens: np.ndarray, n_ctx: int, add_bos: bool, bos_id: int,
               writer: BaseFileWriter | None = None) -> BaseSource:
    """Base log-probs computed by a base model (optionally also written to a base file)."""
    first = n_ctx // 2

    def base(i: int, step0: int, total: int):
        win = chunk_window(tokens, i, n_ctx, add_bos, bos_id)
        h = yield from run_layers(fw, win, first, n_ctx - 1, step0, total, f"base chunk {i + 1}")
        targets = tokens[i * n_ctx + first + 1:(i + 1) * n_ctx]
        parts = [base_rows(lg, targets[r0:r0 + lg.shape[0]]) for r0, lg in fw.iter_logits(h)]
        b = BaseLogProbs(*(np.concatenate([getattr(p[0], f) for p in parts])
                           for f in ("scale", "min_log_prob", "q")),
                         nll=np.concatenate([p[1] for p in parts]))
        if writer is not None:
            writer.write(b)
        return b

    return base


def file_base(reader: BaseFileReader) -> BaseSource:
    def base(i: int, step0: int, total: int):
        yield Progress(step0, total, f"reading base log-probs of chunk {i + 1}")
        return reader.chunk(i)

    return base


def run_kld(fw: Forward, tokens: np.ndarray, base: BaseSource, n_ctx: int = 512,
            chunks: int = -1, add_bos: bool | None = None, bos_id: int | None = None,
            base_steps: int = 0, file_chunks: int | None = None) -> Iterator[object]:
    """Events: Progress, KldChunk per chunk (running values), Finished(result=KldResult).
    base_steps: progress steps the base source takes per chunk (its model's layers, or 0);
    file_chunks: the chunk count a base file holds (then the text-length rule does not apply)."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    add_bos = fw.cfg.add_bos if add_bos is None else add_bos
    bos_id = fw.cfg.bos_id if bos_id is None else bos_id
    if file_chunks is not None:
        n_chunk = file_chunks if chunks < 0 else min(chunks, file_chunks)
    else:
        try:
            n_chunk = n_chunks_for(len(tokens), n_ctx, chunks, "kl_divergence")
        except TextTooShort as e:
            yield Failed(str(e))
            return
    first = n_ctx // 2
    steps = base_steps + fw.cfg.n_layer + 1
    acc = KldAccumulator()
    t0 = time.perf_counter()
    for i in range(n_chunk):
        b = yield from base(i, i * steps, n_chunk * steps)
        if b.q.shape[1] != fw.cfg.n_vocab:
            yield Failed(f"inconsistent vocabulary ({b.q.shape[1]} vs {fw.cfg.n_vocab})")
            return
        win = chunk_window(tokens, i, n_ctx, add_bos, bos_id)
        h = yield from run_layers(fw, win, first, n_ctx - 1, i * steps + base_steps,
                                  n_chunk * steps, f"chunk {i + 1}/{n_chunk}")
        targets = tokens[i * n_ctx + first + 1:(i + 1) * n_ctx]
        rows = chunk_kld(fw, h, b, targets)
        if rows is None:
            yield Failed(f"chunk {i + 1}: NaN or Inf in the model's output")
            return
        for r in rows:
            acc.add(r)
        s = acc.stats()
        dt = time.perf_counter() - t0
        yield Progress((i + 1) * steps, n_chunk * steps, f"chunk {i + 1}/{n_chunk}")
        yield KldChunk(i + 1, n_chunk, s.ppl, s.ppl_err, s.ppl_base, s.ln_ratio, s.ln_ratio_err,
                       s.kld, s.kld_err, s.rms_dp, s.rms_dp_err, s.same_top, s.same_top_err,
                       (i + 1) * n_ctx / dt, dt / (i + 1) * (n_chunk - i - 1))
    res = result_of(acc, n_chunk, n_ctx, time.perf_counter() - t0)
    yield Finished(format_summary(res) if acc.count >= 100 else "", res)


def is_base_file(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == MAGIC
    except OSError:
        return False


def kld_job(base_path, model_path, text_path=None, n_ctx: int = 512, chunks: int = -1,
            save_base=None, weights=None, act_quant: str = "ik",
            ik_threads: int | None = None) -> Iterator[object]:
    """KLD of model_path against base_path: a GGUF (evaluated on text_path, optionally saving
    its log-probs to save_base) or a base log-prob file (its tokens are used; text ignored).
    act_quant / ik_threads: as engine.forward.Forward, for both models."""
    from iqk_studio.gguf.reader import open_model

    with open_model(model_path) as model:
        fw = Forward.from_model(model, weights=weights, act_quant=act_quant,
                                ik_threads=ik_threads)
        add_bos, bos_id = bos_of(model, fw)  # the tested model's vocabulary decides
        if is_base_file(base_path):
            reader = BaseFileReader(base_path)
            yield from run_kld(fw, reader.tokens, file_base(reader), reader.n_ctx,
                               chunks, add_bos, bos_id, file_chunks=reader.n_chunk)
            return
        if text_path is None:
            raise ValueError("a text file is needed when the base is a model")
        with open_model(base_path) as bmodel:
            yield Progress(0, 0, "tokenizing the input")
            tokens, b_bos, b_bos_id = tokenize_file(bmodel, text_path)
            bfw = Forward.from_model(bmodel, act_quant=act_quant, ik_threads=ik_threads)
            writer = None
            if save_base is not None:
                n = n_chunks_for(len(tokens), n_ctx, chunks, "kl_divergence")
                writer = BaseFileWriter(save_base, n_ctx, bfw.cfg.n_vocab, tokens[:n * n_ctx])
            ok = False
            try:
                base = model_base(bfw, tokens, n_ctx, b_bos, b_bos_id, writer)
                for ev in run_kld(fw, tokens, base, n_ctx, chunks, add_bos, bos_id,
                                  bfw.cfg.n_layer + 1):
                    ok = isinstance(ev, Finished)
                    yield ev
            finally:
                if writer is not None:
                    writer.close(ok)


def save_base_job(base_path, text_path, out_path, n_ctx: int = 512, chunks: int = -1,
                  act_quant: str = "ik", ik_threads: int | None = None) -> Iterator[object]:
    """Evaluate the base model once and write its log-probs for reuse across candidates; yields
    Progress and a Chunk per chunk (the base's running PPL), then Finished."""
    from iqk_studio.gguf.reader import open_model

    with open_model(base_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        tokens, add_bos, bos_id = tokenize_file(model, text_path)
        fw = Forward.from_model(model, act_quant=act_quant, ik_threads=ik_threads)
        n = n_chunks_for(len(tokens), n_ctx, chunks)
        writer = BaseFileWriter(Path(out_path), n_ctx, fw.cfg.n_vocab, tokens[:n * n_ctx])
        ok = False
        try:
            base = model_base(fw, tokens, n_ctx, add_bos, bos_id, writer)
            steps, nll, nll2, count, t0 = fw.cfg.n_layer + 1, 0.0, 0.0, 0, time.perf_counter()
            for i in range(n):
                b = yield from base(i, i * steps, n * steps)
                v = b.nll
                nll, nll2, count = nll + float(v.sum()), nll2 + float(v @ v), count + v.size
                ppl, err = ppl_and_err(nll, nll2, count)
                dt = time.perf_counter() - t0
                yield Chunk(i + 1, n, float(v.mean()), ppl, err, (i + 1) * n_ctx / dt,
                            dt / (i + 1) * (n - i - 1))
            res = PerplexityResult(ppl, err, n, n_ctx, count, (), time.perf_counter() - t0)
            ok = True
            yield Finished(final_line(res), res)
        finally:
            writer.close(ok)


def format_header() -> str:
    return ("\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence"
            "              \u0394p RMS            Same top p")


def format_chunk(e: KldChunk) -> str:
    return (f"{e.index:4d}    {e.ppl:9.4f} \u00b1 {e.ppl_err:9.4f}    {e.ln_ratio:10.5f} \u00b1 "
            f"{e.ln_ratio_err:10.5f}    {e.kld:10.5f} \u00b1 {e.kld_err:10.5f}    "
            f"{100 * e.rms_dp:6.3f} \u00b1 {100 * e.rms_dp_err:6.3f} %    "
            f"{100 * e.same_top:6.3f} \u00b1 {100 * e.same_top_err:6.3f} %")


def format_summary(r: KldResult) -> str:
    s, pm = r.stats, "\u00b1"
    lines = ["====== Perplexity statistics ======",
             f"Mean PPL(Q)                   : {s.ppl:10.6f} {pm} {s.ppl_err:10.6f}",
             f"Mean PPL(base)                : {s.ppl_base:10.6f} {pm} {s.ppl_base_err:10.6f}",
             f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * s.cor:6.2f}%",
             f"Mean ln(PPL(Q)/PPL(base))     : {s.ln_ratio:10.6f} {pm} {s.ln_ratio_err:10.6f}",
             f"Mean PPL(Q)/PPL(base)         : {s.ppl_ratio:10.6f} {pm} {s.ppl_ratio_err:10.6f}",
             f"Mean PPL(Q)-PPL(base)         : {s.ppl_diff:10.6f} {pm} {s.ppl_diff_err:10.6f}",
             "", "====== KL divergence statistics ======",
             f"Mean    KLD: {s.kld:10.6f} {pm} {s.kld_err:10.6f}",
             f"Maximum KLD: {r.kld_max:10.6f}"]
    for f in (0.999, 0.99, 0.95, 0.90):
        lines.append(f"{_pct(f)}   KLD: {r.kld_percentiles[f]:10.6f}")
    lines.append(f"Median  KLD: {r.kld_median:10.6f}")
    for f in (0.10, 0.05, 0.01, 0.001):
        lines.append(f"{_pct(f)}   KLD: {r.kld_percentiles[f]:10.6f}")
    lines += [f"Minimum KLD: {r.kld_min:10.6f}", "", "====== Token probability statistics ======",
              f"Mean    \u0394p: {100 * s.mean_dp:6.3f} {pm} {100 * s.mean_dp_err:5.3f} %",
              f"Maximum \u0394p: {100 * r.dp_max:6.3f}%"]
    for f in (0.999, 0.99, 0.95, 0.90, 0.75):
        lines.append(f"{_pct(f)}   \u0394p: {100 * r.dp_percentiles[f]:6.3f}%")
    lines.append(f"Median  \u0394p: {100 * r.dp_median:6.3f}%")
    for f in (0.25, 0.10, 0.05, 0.01, 0.001):
        lines.append(f"{_pct(f)}   \u0394p: {100 * r.dp_percentiles[f]:6.3f}%")
    lines += [f"Minimum \u0394p: {100 * r.dp_min:6.3f}%",
              f"RMS \u0394p    : {100 * s.rms_dp:6.3f} {pm} {100 * s.rms_dp_err:5.3f} %",
              f"Same top p: {100 * s.same_top:6.3f} {pm} {100 * s.same_top_err:5.3f} %"]
    return "\n".join(lines)


def _pct(f: float) -> str:
    return f"{100 * f:4.1f}%"
