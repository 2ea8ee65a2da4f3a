"""Per-position scores from logits, as llama-perplexity computes them (shared/docs/
perplexity-imatrix-tokenizer.md §1.5, §2.1, §2.3): NLL, 16-bit base log-probs, KLD / Δp / same-top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from iqk_studio._parallel import KERNEL_LOCK

_CACHE = True


@njit(nogil=True, cache=_CACHE, parallel=True, fastmath={"contract", "reassoc"})
def _nll_rows(out, logits, targets):
    # logits: f32 (R, V) | targets: i64 (R,) | out: f64 (R,) NLL of each row's target
    for r in prange(logits.shape[0]):
        row = logits[r]
        mx = row[0]
        for i in range(1, row.shape[0]):
            mx = max(mx, row[i])
        s = 0.0
        for i in range(row.shape[0]):
            s += np.exp(row[i] - mx)
        out[r] = -(np.float64(row[targets[r]] - mx) - np.log(s))


_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split so that n * _LN2_HI is exact
_LN2_LO = np.float32(-2.12194440e-4)


@njit(nogil=True, cache=_CACHE, inline="always")
def _exp_neg(x):
    # exp(x) for x <= 0 in float32 within 3e-7 relative (x < -87 gives ~1e-38, not 0): x = n·ln2
    # + r, |r| <= ln2/2, a degree-7 Taylor polynomial for e^r, 2^n from its exponent bits;
    # branch-free so that the caller's loop vectorizes (numba has no vector exp of its own)
    x = max(x, np.float32(-87.0))
    n = np.rint(x * _LOG2E)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)


@njit(nogil=True, cache=_CACHE, fastmath={"contract", "reassoc"})
def _lse_slice(mx, sx, tl, logits, v0, targets):
    # logits: f32 (R, n) = columns v0..v0+n of the full rows | mx: f32 (R,) running max |
    # sx: f64 (R,) running Σexp(l - mx) | tl: f32 (R,) target logit, set when in this slice;
    # serial: callers run slices on separate threads (engine.threads) and merge
    for r in range(logits.shape[0]):
        row = logits[r]
        m = row[0]
        for i in range(1, row.shape[0]):
            m = max(m, row[i])
        if m > mx[r]:
            sx[r] *= np.exp(np.float64(mx[r]) - np.float64(m))
            mx[r] = m
        m = mx[r]
        s = 0.0
        for i in range(row.shape[0]):
            s += _exp_neg(row[i] - m)
        sx[r] += s
        t = targets[r] - v0
        if 0 <= t < row.shape[0]:
            tl[r] = row[t]


class NllAccumulator:
    """NLL of each row's target from logits that arrive in vocabulary slices (online log-sum-exp,
    so the (rows, n_vocab) matrix never exists)."""

    def __init__(self, targets: np.ndarray, n_vocab: int):
        self.targets = np.ascontiguousarray(targets, dtype=np.int64).reshape(-1)
        if self.targets.size and (self.targets.min() < 0 or self.targets.max() >= n_vocab):
            raise ValueError("target token id out of the vocabulary")
        r = self.targets.size
        self.mx = np.full(r, -np.inf, np.float32)
        self.sx = np.zeros(r, np.float64)
        self.tl = np.full(r, np.nan, np.float32)

    def add(self, v0: int, logits: np.ndarray) -> None:
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if logits.shape[0] != self.targets.size:
            raise ValueError(f"logits {logits.shape} for {self.targets.size} rows")
        _lse_slice(self.mx, self.sx, self.tl, logits, v0, self.targets)

    def merge(self, other: NllAccumulator) -> None:
        """Fold in an accumulator of the same rows that saw other vocabulary slices."""
        m = np.maximum(self.mx, other.mx)
        with np.errstate(invalid="ignore"):
            self.sx = (self.sx * np.exp(self.mx.astype(np.float64) - m)
                       + other.sx * np.exp(other.mx.astype(np.float64) - m))
        self.mx = m
        self.tl = np.where(np.isnan(other.tl), self.tl, other.tl)

    def nll(self) -> np.ndarray:
        """float64 NLL per row; NaN/Inf when the logits were not finite."""
        return -((self.tl - self.mx).astype(np.float64) - np.log(self.sx))


def nll_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """NLL (float64) of targets[r] under softmax(logits[r]); max-shifted, Σexp in double."""
    logits, targets = _check(logits, targets)
    out = np.empty(logits.shape[0], dtype=np.float64)
    with KERNEL_LOCK:
        _nll_rows(out, logits, targets)
    return out


@njit(nogil=True, cache=_CACHE, parallel=True)
def _base_rows(scale, min_lp, q, nll, logits, targets):
    # one row of the reference file: scale:f32 | min_log_prob:f32 | q:u16[V] (+1 pad if V odd)
    # log p(i) = scale*q[i] + min_log_prob; logits below max-24 are clamped to q = 0
    for r in prange(logits.shape[0]):
        row = logits[r]
        mx = row[0]
        mn = row[0]
        for i in range(1, row.shape[0]):
            mx = max(mx, row[i])
            mn = min(mn, row[i])
        mn = max(mn, mx - np.float32(24.0))
        s = 0.0
        for i in range(row.shape[0]):
            s += np.exp(row[i] - mx)
        lse = np.float32(np.log(s))
        min_lp[r] = mn - mx - lse
        sc = (mx - mn) / np.float32(65535.0)
        scale[r] = sc
        if sc != 0:
            inv = np.float32(1.0) / sc
            for i in range(row.shape[0]):
                q[r, i] = np.uint16(np.rint(inv * (row[i] - mn))) if row[i] > mn else 0
        else:
            q[r, :] = 0
        nll[r] = np.float64(mx + lse - row[targets[r]])


@dataclass(frozen=True)
class BaseLogProbs:
    """Rows of base-model log-probs in llama-perplexity's 16-bit form (one row per position)."""

    scale: np.ndarray  # f32 (R,)
    min_log_prob: np.ndarray  # f32 (R,)
    q: np.ndarray  # u16 (R, n_vocab)
    nll: np.ndarray | None = None  # f64 (R,): NLL of each row's target, when known

    def log_probs(self, r: int) -> np.ndarray:
        return self.scale[r] * self.q[r].astype(np.float32) + self.min_log_prob[r]


def base_rows(logits: np.ndarray, targets: np.ndarray) -> tuple[BaseLogProbs, np.ndarray]:
    """Encode rows of logits as the reference's 16-bit log-probs; also the rows' NLL (float64)."""
    logits, targets = _check(logits, targets)
    r, v = logits.shape
    scale = np.empty(r, np.float32)
    min_lp = np.empty(r, np.float32)
    q = np.empty((r, v), np.uint16)
    nll = np.empty(r, np.float64)
    with KERNEL_LOCK:
        _base_rows(scale, min_lp, q, nll, logits, targets)
    return BaseLogProbs(scale, min_lp, q), nll


@njit(nogil=True, cache=_CACHE, parallel=True)
def _kld_rows(nll, nll_base, kld, p_diff, same, logits, scale, min_lp, q, targets):
    # logits f32 (R, V) of the model under test; base row r: log p(i) = scale[r]*q[r,i] + min_lp[r]
    for r in prange(logits.shape[0]):
        row = logits[r]
        mx = row[0]
        imax = 0
        for i in range(1, row.shape[0]):
            if row[i] > mx:
                mx = row[i]
                imax = i
        s = 0.0
        for i in range(row.shape[0]):
            s += np.exp(row[i] - mx)
        lse = np.float32(np.log(s))
        t = targets[r]
        a = mx + lse - row[t]
        b = -(scale[r] * np.float32(q[r, t]) + min_lp[r])
        nll[r] = a
        nll_base[r] = b
        mxl = mx + lse
        acc = 0.0
        imax_b = 0
        best = np.float32(0.0)
        for i in range(row.shape[0]):
            lpb = scale[r] * np.float32(q[r, i]) + min_lp[r]
            if i == 0 or lpb > best:
                best = lpb
                imax_b = i
            if lpb > np.float32(-16.0):
                acc += np.exp(lpb) * (lpb - row[i] + mxl)
        kld[r] = acc
        same[r] = imax == imax_b
        p_diff[r] = np.exp(-a) - np.exp(-b)


@dataclass(frozen=True)
class KldRows:
    """Per-position results of comparing a model against base log-probs."""

    nll: np.ndarray  # f32: the tested model's NLL
    nll_base: np.ndarray  # f32
    kld: np.ndarray  # f64
    p_diff: np.ndarray  # f32: p(target) - p_base(target)
    same_top: np.ndarray  # bool


def kld_rows(logits: np.ndarray, base: BaseLogProbs, targets: np.ndarray) -> KldRows:
    logits, targets = _check(logits, targets)
    r, v = logits.shape
    if base.q.shape != (r, v):
        raise ValueError(f"base log-probs {base.q.shape} do not match logits {(r, v)}")
    out = KldRows(np.empty(r, np.float32), np.empty(r, np.float32), np.empty(r, np.float64),
                  np.empty(r, np.float32), np.empty(r, np.bool_))
    with KERNEL_LOCK:
        _kld_rows(out.nll, out.nll_base, out.kld, out.p_diff, out.same_top, logits,
                  np.ascontiguousarray(base.scale), np.ascontiguousarray(base.min_log_prob),
                  np.ascontiguousarray(base.q), targets)
    return out


def _check(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    targets = np.ascontiguousarray(targets, dtype=np.int64).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"logits {logits.shape} and targets {targets.shape} do not match")
    if targets.size and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        raise ValueError("target token id out of the vocabulary")
    return logits, targets
