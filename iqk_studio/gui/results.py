"""The results list behind its interface (no Qt here): `Run` records, the `RunSource` protocol a
store implements, the in-memory source of one session, and how a run compares to a baseline.

A persistent store (iqk_studio/results/, SQLite) plugs in by implementing RunSource; the Qt model
in results_model.py only ever talks to that protocol.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from iqk_studio.jobs.evaluate import RunResult


@dataclass(frozen=True)
class Run:
    """A finished run as listed: a stable id, the name the user sees (editable), the result."""

    id: str
    name: str
    result: RunResult


class RunSource(Protocol):
    """Where the results list reads and writes runs. Order of runs() is the display order."""

    def runs(self) -> Sequence[Run]: ...

    def add(self, result: RunResult, name: str) -> Run:
        """Store a finished run under a name; returns it with its id."""
        ...

    def rename(self, run_id: str, name: str) -> Run: ...

    def remove(self, run_id: str) -> None: ...


class SessionRuns:
    """The runs of this session, in memory (lost at exit until a store backs the list)."""

    def __init__(self):
        self._runs: list[Run] = []
        self._ids = itertools.count(1)

    def runs(self) -> Sequence[Run]:
        return tuple(self._runs)

    def add(self, result: RunResult, name: str) -> Run:
        run = Run(f"s{next(self._ids)}", name, result)
        self._runs.append(run)
        return run

    def rename(self, run_id: str, name: str) -> Run:
        i = self._index(run_id)
        self._runs[i] = replace(self._runs[i], name=name)
        return self._runs[i]

    def remove(self, run_id: str) -> None:
        del self._runs[self._index(run_id)]

    def _index(self, run_id: str) -> int:
        for i, r in enumerate(self._runs):
            if r.id == run_id:
                return i
        raise KeyError(f"no run {run_id!r}")


def comparable(a: RunResult, b: RunResult) -> bool:
    """Same text, n_ctx and chunk count: their perplexities can be divided."""
    return a.settings() == b.settings()


def ppl_ratio_pct(r: RunResult, base: RunResult | None) -> tuple[float, float] | None:
    """(PPL(Q)/PPL(base) - 1 in %, its 1-sigma error in %), or None when unknown.

    A KLD run carries its own, paired ratio (same tokens, llama-perplexity's statistic). A
    perplexity run is divided by the baseline run with the same settings; its error combines
    both runs' errors as if independent (an over-estimate: the runs share their text)."""
    if r.kind == "kld" and math.isfinite(r.ppl_ratio):
        return 100 * (r.ppl_ratio - 1), 100 * r.ppl_ratio_err
    if base is None or not comparable(r, base) or not (base.ppl > 0 and r.ppl > 0):
        return None
    if r is base:
        return 0.0, 0.0
    ratio = r.ppl / base.ppl
    err = ratio * math.hypot(r.ppl_err / r.ppl, base.ppl_err / base.ppl)
    return 100 * (ratio - 1), 100 * err


def mean_kld(r: RunResult) -> tuple[float, float] | None:
    if r.kind == "kld" and math.isfinite(r.kld):
        return r.kld, r.kld_err
    return None


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats in both size and quality (smaller is better
    in both), ordered by size."""
    order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i]))
    front, best = [], math.inf
    for i in order:
        if ys[i] < best:
            front.append(i)
            best = ys[i]
    return front
