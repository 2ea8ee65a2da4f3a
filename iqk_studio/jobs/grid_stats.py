"""Per tensor: which iq4k variant IQ4_KS and IQ4_K blocks choose, and how well the blocks fit the fp4
grids against iq4k; summed over a model. A job of Progress / TensorGridStats events, then Finished
with a ModelGridStats."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.jobs.type_errors import MAX_SAMPLE, sample_rows
from iqk_studio.quant import api
from iqk_studio.quant.grid_fit import BLOCK, DECODERS, VARIANTS, fit_stats, variant_counts
from iqk_studio.quant.importance import imatrix_values, importance_for


class _FitTotals:
    """What a tensor's and a model's fit statistics derive alike from their sums (grids, errors,
    energy, n_blocks, distance_sum)."""

    def rel(self) -> dict[str, float]:
        """Grid -> relative squared error Σerr / Σx² (fit quality of the whole sample)."""
        return {g: (e / self.energy if self.energy else 0.0) for g, e in zip(self.grids,
                                                                             self.errors)}

    @property
    def mean_distance(self) -> float:
        return self.distance_sum / self.n_blocks if self.n_blocks else 0.0


@dataclass(frozen=True)
class TensorGridStats(_FitTotals):
    name: str
    n_weights: int  # weights sampled
    variants: dict  # "iq4_ks" / "iq4_k" -> (4,) block counts in VARIANTS order
    variant_source: dict  # type -> "file" (the file's own bytes) or the quantization mode used
    grids: tuple[str, ...]  # fit grids: e2m1, fe1m2, nf4, iq4k
    errors: tuple[float, ...]  # Σ best-fit squared error per grid over the sampled blocks
    energy: float  # Σx² of those blocks
    n_blocks: int
    fp4_better: int  # blocks whose best fp4 fit beats the best iq4k variant
    distance_sum: float  # Σ over blocks of (best fp4 - best iq4k error) / the block's Σx²
    distances: np.ndarray | None = None  # per block (kept for the GUI's histogram, not the CLI)


@dataclass(frozen=True)
class ModelGridStats(_FitTotals):
    n_tensors: int
    variants: dict  # type -> (4,) summed counts
    grids: tuple[str, ...]
    errors: tuple[float, ...]
    energy: float
    n_blocks: int
    fp4_better: int
    distance_sum: float


def eligible(model, pattern: str | None = None) -> list[str]:
    """Weight matrices IQ4_KS / IQ4_K can hold (rows a multiple of 256), optionally filtered."""
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as e:
        raise ValueError(f"bad regex {pattern!r}: {e}") from None
    return [n for n, t in model.tensors.items()
            if len(t.shape) >= 2 and t.shape[0] % 256 == 0 and n.endswith("weight")
            and (rx is None or rx.search(n))]


def _codes(model, name: str, x: np.ndarray, qtype: str, qw, uniform: bool):
    """Decoded blocks of the tensor's sample as `qtype` stores it: the file's bytes when the file
    has that type, else quantized now (imatrix / default weighting / w = 1)."""
    info = model.tensors[name]
    n = x.shape[1]
    if info.qtype.name == qtype:
        return DECODERS[qtype](model.tensor_data(name)[:x.shape[0]], n), "file"
    mode = "w = 1" if uniform else ("imatrix" if qw is not None else "default weights")
    raw = api.quantize(x, qtype, None if uniform else qw, uniform)
    return DECODERS[qtype](raw, n), f"quantized ({mode})"


def tensor_grid_stats(model, name: str, imatrix=None, uniform: bool = False,
                      max_elements: int = MAX_SAMPLE, block: int = 32,
                      x: np.ndarray | None = None) -> TensorGridStats:
    """Statistics of (the first rows of) one tensor; `x` gives the sample when already read."""
    if x is None:
        x = sample_rows(model, name, max_elements)
    n = x.shape[1]
    if n % 256:
        raise ValueError(f"{name}: rows of {n} are not a multiple of 256 (IQ4_KS / IQ4_K)")
    qw = None
    if imatrix is not None:
        info = model.tensors[name]
        imp = importance_for(imatrix_values(imatrix), name, n,
                             info.shape[2] if len(info.shape) > 2 else 1)
        qw = None if imp is None else imp[:n]  # the first expert's slice: the sample's rows
    variants, sources = {}, {}
    for qtype in BLOCK:
        codes, sources[qtype] = _codes(model, name, x, qtype, qw, uniform)
        # blocks whose weights are all zero have no variant to speak of
        nz = np.abs(x.reshape(x.shape[0], -1, BLOCK[qtype])).max(axis=2) > 0
        variants[qtype] = variant_counts(codes, nz)
    fs = fit_stats(x, block)
    d = fs.distance()
    return TensorGridStats(name, int(x.size), variants, sources, fs.names,
                           tuple(float(e) for e in fs.errors.sum(axis=0)), float(fs.energy.sum()),
                           len(d), int((d < 0).sum()), float(d.sum()), d)


def grid_stats_job(model, names: list[str], imatrix=None, uniform: bool = False,
                   max_elements: int = MAX_SAMPLE) -> Iterator[object]:
    """TensorGridStats per tensor (first rows, up to max_elements weights each), then
    Finished(result=ModelGridStats) with everything summed."""
    if not names:
        yield Failed("no tensor to analyse: none has rows that are a multiple of 256")
        return
    counts = {q: np.zeros(len(VARIANTS), np.int64) for q in BLOCK}
    err = None
    energy = dist = 0.0
    nblocks = better = 0
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        yield Progress(i, len(names), name)
        s = tensor_grid_stats(model, name, imatrix, uniform, max_elements)
        for q in counts:
            counts[q] += s.variants[q]
        err = np.array(s.errors) if err is None else err + s.errors
        energy += s.energy
        nblocks += s.n_blocks
        better += s.fp4_better
        dist += s.distance_sum
        yield replace(s, distances=None)  # events stay small
    yield Progress(len(names), len(names), "done")
    total = ModelGridStats(len(names), counts, s.grids, tuple(float(e) for e in err), energy,
                           nblocks, better, dist)
    yield Finished(f"{len(names)} tensors in {time.perf_counter() - t0:.1f} s", total)
