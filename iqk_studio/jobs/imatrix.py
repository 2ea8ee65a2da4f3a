"""imatrix job, as llama-imatrix (shared/docs/perplexity-imatrix-tokenizer.md §3): mean of squared
activations per input column of every `blk.*` matmul (per expert for MoE), saved as legacy .dat."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from iqk_studio.engine.forward import Forward
from iqk_studio.gguf.imatrix import Imatrix, save_imatrix_dat, save_imatrix_gguf
from iqk_studio.jobs.events import Chunk, Failed, Finished, Progress
from iqk_studio.jobs.perplexity import (
    TextTooShort,
    chunk_nll,
    chunk_window,
    n_chunks_for,
    ppl_and_err,
    run_layers,
    tokenize_file,
)

MIN_ROWS = 16  # the reference ignores dense matmuls over fewer activation rows


class ActivationNaN(ValueError):
    """An activation row fed to a matmul holds NaN (the reference aborts)."""


class ImatrixCollector:
    """Forward observer accumulating Σx² and row counts per input column of every matmul."""

    def __init__(self, n_expert: int = 0):
        self.n_expert = n_expert
        self.sums: dict[str, np.ndarray] = {}  # (n_mat, n_in) float64
        self.counts: dict[str, np.ndarray] = {}  # (n_mat,) rows accumulated per matrix
        self.ncall: dict[str, int] = {}
        self._seen: set[str] = set()

    def new_chunk(self) -> None:
        """One decode per chunk: every entry seen in it counts one call."""
        self._seen.clear()

    def __call__(self, name: str, x: np.ndarray, expert: int | None = None) -> None:
        if not name.startswith("blk."):
            return
        if expert is None and x.shape[0] < MIN_ROWS:
            return
        if np.isnan(x).any():
            raise ActivationNaN(f"detected NaNs in {name}")
        n_mat = self.n_expert if expert is not None else 1
        s = self.sums.get(name)
        if s is None:
            s = self.sums[name] = np.zeros((n_mat, x.shape[1]), np.float64)
            self.counts[name] = np.zeros(n_mat, np.int64)
            self.ncall[name] = 0
        if name not in self._seen:
            self._seen.add(name)
            self.ncall[name] += 1
        e = 0 if expert is None else expert
        s[e] += np.einsum("ij,ij->j", x, x, dtype=np.float64)
        self.counts[name][e] += x.shape[0]

    def imatrix(self, dataset: str = "", chunks: int = 0,
                chunk_size: int = 0) -> tuple[Imatrix, list[str]]:
        """The entries the reference would store (values = mean x², expert-major; rows per
        matrix as counts, for the GGUF format), and messages about skipped or patched entries
        (partial MoE data)."""
        values, ncall, counts, notes = {}, {}, {}, []
        for name, s in self.sums.items():
            c = self.counts[name]
            zero = c == 0
            if zero.all():
                notes.append(f"entry '{name}' has no data - skipping")
                continue
            v = (s / np.maximum(c, 1)[:, None]).astype(np.float32)
            if zero.any():
                n_bad = int(zero.sum())
                msg = (f"entry '{name}' has partial data "
                       f"({100.0 * (len(c) - n_bad) / len(c):.2f}%)")
                if len(c) > 1 and n_bad < round(len(c) * 0.05):
                    # the reference stores count 1, value 1 for the missing experts
                    v[zero] = 1.0
                    c = np.where(zero, 1, c)
                    notes.append(msg + f" {n_bad} out of {len(c)} experts are missing data"
                                 " Storing **but be aware**")
                else:
                    notes.append(msg + " - skipping")
                    continue
            values[name] = v.reshape(-1)
            ncall[name] = self.ncall[name]
            counts[name] = c.astype(np.float32)
        return Imatrix(values, ncall, dataset, chunks, chunk_size, counts), notes


def run_imatrix(fw: Forward, collector: ImatrixCollector, tokens: np.ndarray,
                n_ctx: int = 512, chunks: int = -1, add_bos: bool | None = None,
                bos_id: int | None = None, dataset: str = "") -> Iterator[object]:
    """Events: Progress per layer, Chunk (the PPL llama-imatrix prints) per chunk, then
    Finished(result=Imatrix); fw must have `collector` as its observer."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    add_bos = fw.cfg.add_bos if add_bos is None else add_bos
    bos_id = fw.cfg.bos_id if bos_id is None else bos_id
    try:
        n_chunk = n_chunks_for(len(tokens), n_ctx, chunks, "compute_imatrix")
    except TextTooShort as e:
        yield Failed(str(e))
        return
    first, steps = n_ctx // 2, fw.cfg.n_layer + 1
    nll = nll2 = 0.0
    count = 0
    t0 = time.perf_counter()
    for i in range(n_chunk):
        collector.new_chunk()
        win = chunk_window(tokens, i, n_ctx, add_bos, bos_id)
        try:
            h = yield from run_layers(fw, win, first, n_ctx - 1, i * steps, n_chunk * steps,
                                      f"chunk {i + 1}/{n_chunk}", all_rows=True)
        except ActivationNaN as e:
            yield Failed(f"chunk {i + 1}: {e}")
            return
        v = chunk_nll(fw, h, tokens[i * n_ctx + first + 1:(i + 1) * n_ctx])
        nll += float(v.sum())
        nll2 += float(np.dot(v, v))
        count += v.size
        ppl, err = ppl_and_err(nll, nll2, count)
        dt = time.perf_counter() - t0
        yield Progress((i + 1) * steps, n_chunk * steps, f"chunk {i + 1}/{n_chunk}")
        yield Chunk(i + 1, n_chunk, float(v.mean()), ppl, err, (i + 1) * n_ctx / dt,
                    dt / (i + 1) * (n_chunk - i - 1))
    im, notes = collector.imatrix(dataset, n_chunk, n_ctx)
    ppl, err = ppl_and_err(nll, nll2, count)
    lines = notes + [f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}"]
    yield Finished("\n".join(lines), im)


def imatrix_job(model_path, text_path, out_path, n_ctx: int = 512, chunks: int = -1,
                weights=None, fmt: str | None = None, act_quant: str = "ik",
                ik_threads: int | None = None) -> Iterator[object]:
    """Collect an imatrix over a text file and write it atomically to out_path, as the legacy
    .dat (ik_llama.cpp, default) or mainline's GGUF format (fmt "gguf", or a .gguf name);
    Finished.result is the Imatrix record."""
    fmt = fmt or ("gguf" if str(out_path).lower().endswith(".gguf") else "dat")
    if fmt not in ("dat", "gguf"):
        raise ValueError(f"imatrix format must be dat or gguf, not {fmt!r}")
    from iqk_studio.gguf.reader import open_model

    with open_model(model_path) as model:
        yield Progress(0, 0, "tokenizing the input")
        tokens, add_bos, bos_id = tokenize_file(model, text_path)
        fw = Forward.from_model(model, weights=weights, act_quant=act_quant,
                                ik_threads=ik_threads)
        collector = ImatrixCollector(fw.cfg.n_expert)
        fw.observer = collector
        for ev in run_imatrix(fw, collector, tokens, n_ctx, chunks, add_bos, bos_id,
                              str(text_path)):
            if isinstance(ev, Finished):
                save = save_imatrix_gguf if fmt == "gguf" else save_imatrix_dat
                save(Path(out_path), ev.result)
                ev = Finished(ev.message + f"\nsave_imatrix: stored collected data after "
                              f"{ev.result.chunks} chunks in {out_path}", ev.result)
            yield ev
