"""The results list behind its interface (no Qt here): `Run` records, the `RunSource` protocol the
results store implements (gui/store_source.py), and how a run compares to a baseline — with the
ratio's error paired over the chunks two runs share when their per-chunk NLL is known.

The Qt model in results_model.py only ever talks to the RunSource protocol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from iqk_studio.jobs.evaluate import RunResult

FINAL_STATUSES = ("finished", "imported")


@dataclass(frozen=True)
class Run:
    """A run as listed: a stable id, the name the user sees (editable), the result, and where it
    came from (source builtin / external / imported; engine as it stated; status)."""

    id: str
    name: str
    result: RunResult
    source: str = "builtin"
    status: str = "finished"  # running | finished | failed | cancelled | interrupted | imported
    engine: str = ""  # "iqk-studio", "ik_llama.cpp build 4840 (8337e4cd3)", ...
    created: float = 0.0  # unix time
    requested: int | None = None  # chunks asked for (None: all); result.n_chunks were done

    @property
    def complete(self) -> bool:
        """Finished (or imported): its numbers are final, it can be a point on the chart."""
        return self.status in FINAL_STATUSES


class RunSource(Protocol):
    """Where the results list reads and writes runs. Order of runs() is the display order."""

    persistent: bool  # False: runs live only as long as the app
    warning: str  # why runs are not kept ("" when all is well)

    def runs(self) -> Sequence[Run]: ...

    def signature(self) -> tuple:
        """Changes whenever runs() would change (cheap; polled for runs of other processes)."""
        ...

    def record(self, job: Iterator, spec: Callable[[], object],
               on_error: Callable[[str], None] | None = None) -> Iterator:
        """The job, recording its run as it goes (called on the worker thread: spec() is
        computed there); its id is `recorded_id(job)` once iterating."""
        ...

    def add(self, result: RunResult, name: str, recorded_id: str | None = None) -> Run:
        """A finished run under a name (the one recorded as it ran, when recorded_id)."""
        ...

    def add_imported(self, log, name: str = "", source_path: str | None = None,
                     size_bytes: int | None = None) -> Run:
        """A published log (external.logimport.ImportedLog), with its size when the log has
        none."""
        ...

    def rename(self, run_id: str, name: str) -> Run: ...

    def remove(self, run_id: str) -> None: ...


def comparable(a: RunResult, b: RunResult) -> bool:
    """Same text, n_ctx and chunk count: their perplexities can be divided. The text is compared
    by its hash when both runs know it, else by path; a log that names no text is taken to be
    on the same one (published logs are wiki.test.raw almost always: the chart says so)."""
    if (a.n_ctx, a.n_chunks) != (b.n_ctx, b.n_chunks):
        return False
    if a.text_id and b.text_id:
        return a.text_id == b.text_id
    if a.text_path and b.text_path:
        return a.text_path == b.text_path
    return True


class Ratio(NamedTuple):
    """PPL(Q)/PPL(base) - 1 in %, its 1-sigma error in %, and how that error was obtained:
    "baseline", "kld" (the KLD run's own statistic over the same tokens), "paired" (from the
    per-chunk NLL differences of the two runs), "independent" (both runs' errors combined as if
    independent: an over-estimate, they share their text)."""

    pct: float
    err: float
    how: str


ERROR_KINDS = {
    "kld": "paired over tokens (the KLD run's own statistic)",
    "paired": "paired over chunks (per-chunk NLL differences of the two runs)",
    "independent": "both runs' errors combined as if independent (an over-estimate: same text)",
    "baseline": "the baseline itself",
}


def paired_ln_ratio_err(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standard error of mean(a - b) over chunks: the error of ln(PPL_a / PPL_b) when a and b are
    the per-chunk mean NLLs of two runs over the same chunks (each chunk scores as many tokens,
    so the mean of the differences is the log ratio). None with fewer than 2 finite pairs."""
    if len(a) != len(b):
        return None
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2 or not all(math.isfinite(v) for v in d):
        return None
    n = len(d)
    mean = sum(d) / n
    var = sum((v - mean) ** 2 for v in d) / (n - 1)
    return math.sqrt(var / n)


def ppl_ratio_pct(r: RunResult, base: RunResult | None) -> Ratio | None:
    """(PPL(Q)/PPL(base) - 1 in %, its error in %, its kind), or None when unknown.

    A KLD run carries its own, paired ratio (same tokens, llama-perplexity's statistic). A
    perplexity run is divided by the baseline run with the same settings; the error is paired
    over chunks when both runs have each chunk's NLL, else both errors are combined as if
    independent."""
    if r.kind == "kld" and math.isfinite(r.ppl_ratio):
        return Ratio(100 * (r.ppl_ratio - 1), 100 * r.ppl_ratio_err, "kld")
    if r.kind != "ppl" or base is None or base.kind != "ppl":
        return None
    if not comparable(r, base) or not (base.ppl > 0 and r.ppl > 0):
        return None
    if r is base:
        return Ratio(0.0, 0.0, "baseline")
    ratio = r.ppl / base.ppl
    ln_err = paired_ln_ratio_err(r.chunk_nll, base.chunk_nll)
    if ln_err is not None:
        return Ratio(100 * (ratio - 1), 100 * ratio * ln_err, "paired")
    err = ratio * math.hypot(r.ppl_err / r.ppl, base.ppl_err / base.ppl)
    return Ratio(100 * (ratio - 1), 100 * err, "independent")


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


def _norm(name: str | None) -> str:
    return "".join(ch for ch in (name or "").lower() if ch.isalnum())


def model_names(metadata: dict) -> set[str]:
    """The names a model goes by, normalised: general.name, and basename + size_label
    ("Qwen3 30B A3B", "Qwen3-30B-A3B" and "qwen3 + 30B-A3B" all read qwen330ba3b)."""
    names = {_norm(metadata.get("general.name"))}
    base, size = metadata.get("general.basename"), metadata.get("general.size_label")
    if base and size:
        names.add(_norm(f"{base}{size}"))
    return names - {""}


def published_points_for(metadata: dict | None) -> list:
    """Published (size, PPL) points of the library recipes written for the open model
    (recipe.published). Points without a model name are kept; with no model open, none."""
    from iqk_studio.recipe import published

    if not metadata:
        return []
    pts = published.published_points()
    names = model_names(metadata)
    return [p for p in pts if not p.model or _norm(p.model) in names]
