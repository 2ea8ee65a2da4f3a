"""KL-divergence statistics as llama-perplexity --kl-divergence accumulates and prints them
(shared/docs/perplexity-imatrix-tokenizer.md §2.3-§2.6), and its base log-prob file format (§2.1).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iqk_studio.engine.scoring import BaseLogProbs, KldRows, kld_rows

MAGIC = b"_logits_"
KLD_PERCENTILES = (0.999, 0.99, 0.95, 0.90, 0.10, 0.05, 0.01, 0.001)
DP_PERCENTILES = (0.999, 0.99, 0.95, 0.90, 0.75, 0.25, 0.10, 0.05, 0.01, 0.001)


def chunk_kld(fw, h, base: BaseLogProbs, targets) -> list[KldRows] | None:
    """One chunk's KLD rows: the model's logits from hidden states `h` (the scored half), in the
    engine's blocks of rows, against the base's log-probs of the same positions; None when
    the model's output has a NaN or Inf."""
    out = []
    for r0, lg in fw.iter_logits(h):
        r1 = r0 + lg.shape[0]
        rows = kld_rows(lg, BaseLogProbs(base.scale[r0:r1], base.min_log_prob[r0:r1],
                                         base.q[r0:r1]), targets[r0:r1])
        if not (np.isfinite(rows.nll).all() and np.isfinite(rows.kld).all()):
            return None
        out.append(rows)
    return out


def mean_and_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    if n < 1:
        return 0.0, 0.0
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def covariance(sa: float, sb: float, sab: float, n: int) -> float:
    if n < 10:
        return 0.0
    return (sab / n - (sa / n) * (sb / n)) / (n - 1)


@dataclass(frozen=True)
class KldStats:
    """Cumulative statistics; probabilities as fractions."""

    count: int
    ppl: float
    ppl_err: float
    ppl_base: float
    ppl_base_err: float
    cor: float  # correlation of per-token ln p
    ln_ratio: float
    ln_ratio_err: float
    ppl_ratio: float
    ppl_ratio_err: float
    ppl_diff: float
    ppl_diff_err: float
    kld: float
    kld_err: float
    mean_dp: float
    mean_dp_err: float
    rms_dp: float
    rms_dp_err: float
    same_top: float
    same_top_err: float


@dataclass
class KldAccumulator:
    """Running double sums over scored tokens plus the per-token KLD and Δp values."""

    s: dict = field(default_factory=lambda: dict.fromkeys(
        ("nll", "nll2", "nb", "nb2", "nnb", "kld", "kld2", "dp", "dp2", "dp4"), 0.0))
    count: int = 0
    same: int = 0
    kld_values: list = field(default_factory=list)
    dp_values: list = field(default_factory=list)

    def add(self, r: KldRows) -> None:
        a, b = r.nll.astype(np.float64), r.nll_base.astype(np.float64)
        dp = r.p_diff.astype(np.float64)
        s = self.s
        s["nll"] += a.sum()
        s["nll2"] += (a * a).sum()
        s["nb"] += b.sum()
        s["nb2"] += (b * b).sum()
        s["nnb"] += (a * b).sum()
        s["kld"] += r.kld.sum()
        s["kld2"] += (r.kld * r.kld).sum()
        s["dp"] += dp.sum()
        s["dp2"] += (dp * dp).sum()
        s["dp4"] += (dp ** 4).sum()
        self.count += len(a)
        self.same += int(r.same_top.sum())
        self.kld_values.append(r.kld.astype(np.float32))
        self.dp_values.append(r.p_diff.astype(np.float32))

    def stats(self) -> KldStats:
        s, n = self.s, self.count
        lq, lq_u = mean_and_unc(s["nll"], s["nll2"], n)
        lb, lb_u = mean_and_unc(s["nb"], s["nb2"], n)
        cov = covariance(s["nll"], s["nb"], s["nnb"], n)
        ppl, ppl_b = math.exp(lq), math.exp(lb)
        ratio_u = math.sqrt(max(lq_u * lq_u + lb_u * lb_u - 2 * cov, 0.0))
        diff_u2 = (ppl * lq_u) ** 2 + (ppl_b * lb_u) ** 2 - 2 * ppl * ppl_b * cov
        kld, kld_u = mean_and_unc(s["kld"], s["kld2"], n)
        dp, dp_u = mean_and_unc(s["dp"], s["dp2"], n)
        mse, mse_u = mean_and_unc(s["dp2"], s["dp4"], n)
        rms = math.sqrt(mse)
        top = self.same / n if n else 0.0
        return KldStats(
            n, ppl, ppl * lq_u, ppl_b, ppl_b * lb_u,
            cov / (lq_u * lb_u) if lq_u > 0 and lb_u > 0 else math.nan,
            lq - lb, ratio_u, math.exp(lq - lb), math.exp(lq - lb) * ratio_u,
            ppl - ppl_b, math.sqrt(max(diff_u2, 0.0)), kld, kld_u, dp, dp_u, rms,
            0.5 / rms * mse_u if rms > 0 else 0.0, top,
            math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0)


def percentile(sorted_vals: np.ndarray, fraction: float) -> float:
    """The reference's float interpolation at fraction·(n-1)."""
    v = sorted_vals
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    p = np.float32(fraction) * np.float32(len(v) - 1)
    ip = int(p)
    p = np.float32(p - np.float32(ip))
    return float((np.float32(1) - p) * v[ip] + p * v[min(ip + 1, len(v) - 1)])


def median(sorted_vals: np.ndarray) -> float:
    n = len(sorted_vals)
    if n % 2:
        return float(sorted_vals[n // 2])
    return float(np.float32(0.5) * (sorted_vals[n // 2] + sorted_vals[n // 2 - 1]))


@dataclass(frozen=True)
class KldResult:
    stats: KldStats
    n_chunks: int
    n_ctx: int
    kld_max: float
    kld_min: float
    kld_median: float
    kld_percentiles: dict  # fraction -> value
    dp_max: float
    dp_min: float
    dp_median: float
    dp_percentiles: dict
    seconds: float


def result_of(acc: KldAccumulator, n_chunks: int, n_ctx: int, seconds: float) -> KldResult:
    k = np.sort(np.concatenate(acc.kld_values)) if acc.kld_values else np.zeros(1, np.float32)
    d = np.sort(np.concatenate(acc.dp_values)) if acc.dp_values else np.zeros(1, np.float32)
    return KldResult(acc.stats(), n_chunks, n_ctx, float(k[-1]), float(k[0]), median(k),
                     {f: percentile(k, f) for f in KLD_PERCENTILES}, float(d[-1]), float(d[0]),
                     median(d), {f: percentile(d, f) for f in DP_PERCENTILES}, seconds)


# ------------------------------------------------------------------ base log-prob file
# "_logits_" | n_ctx:i32 | n_vocab:i32 | n_chunk:i32 | tokens:i32[n_chunk*n_ctx] |
# per chunk, per scored position: u16[nv], nv = 2*((n_vocab+1)/2) + 4:
#   scale:f32 (2 u16) | min_log_prob:f32 (2 u16) | q:u16[n_vocab] | pad u16 if n_vocab odd

def row_u16(n_vocab: int) -> int:
    return 2 * ((n_vocab + 1) // 2) + 4


def encode_rows(b: BaseLogProbs) -> np.ndarray:
    r, v = b.q.shape
    out = np.zeros((r, row_u16(v)), np.uint16)
    out[:, 0:2] = np.ascontiguousarray(b.scale, "<f4").view(np.uint16).reshape(r, 2)
    out[:, 2:4] = np.ascontiguousarray(b.min_log_prob, "<f4").view(np.uint16).reshape(r, 2)
    out[:, 4:4 + v] = b.q
    return out


def decode_rows(rows: np.ndarray, n_vocab: int) -> BaseLogProbs:
    r = rows.shape[0]
    scale = np.ascontiguousarray(rows[:, 0:2]).view("<f4").reshape(r).astype(np.float32)
    min_lp = np.ascontiguousarray(rows[:, 2:4]).view("<f4").reshape(r).astype(np.float32)
    return BaseLogProbs(scale, min_lp, np.ascontiguousarray(rows[:, 4:4 + n_vocab]))


class BaseFileWriter:
    """Writes the base file chunk by chunk to a temp file (.NAME.PID.tmp), renamed into place by
    close()."""

    def __init__(self, path, n_ctx: int, n_vocab: int, tokens: np.ndarray):
        from iqk_studio.gguf.writer import remove_stale_temps, temp_path

        self.path = Path(path)
        remove_stale_temps(self.path)  # left by a kill -9 of an earlier run
        self.tmp = temp_path(self.path)
        self.f = open(self.tmp, "wb")
        n_chunk = len(tokens) // n_ctx
        self.f.write(MAGIC + struct.pack("<iii", n_ctx, n_vocab, n_chunk))
        self.f.write(np.ascontiguousarray(tokens[:n_chunk * n_ctx], "<i4").tobytes())

    def write(self, b: BaseLogProbs) -> None:
        self.f.write(encode_rows(b).astype("<u2").tobytes())

    def close(self, ok: bool = True) -> None:
        self.f.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class BaseFileReader:
    """Reads a base file (ours or llama-perplexity's --kl-divergence-base output)."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            head = f.read(20)
        if len(head) < 20 or head[:8] != MAGIC:
            raise ValueError(f"{path} does not look like a file containing log-probabilities")
        self.n_ctx, self.n_vocab, self.n_chunk = struct.unpack("<iii", head[8:20])
        if self.n_ctx < 4 or self.n_vocab < 1 or self.n_chunk < 0:
            raise ValueError(f"{path}: bad header (n_ctx {self.n_ctx}, n_vocab {self.n_vocab})")
        self.n_rows = self.n_ctx - 1 - self.n_ctx // 2
        self.data_offset = 20 + 4 * self.n_ctx * self.n_chunk
        need = self.data_offset + 2 * self.n_rows * row_u16(self.n_vocab) * self.n_chunk
        if self.path.stat().st_size < self.data_offset:
            raise ValueError(f"{path}: failed reading evaluation tokens")
        self.complete_chunks = self.n_chunk if self.path.stat().st_size >= need else (
            (self.path.stat().st_size - self.data_offset) // (2 * self.n_rows * row_u16(
                self.n_vocab)))
        self.tokens = np.fromfile(self.path, "<i4", self.n_ctx * self.n_chunk, offset=20).astype(
            np.int64)

    def chunk(self, i: int) -> BaseLogProbs:
        if i >= self.complete_chunks:
            raise ValueError(f"{self.path}: failed reading log-probs for chunk {i}")
        nv = row_u16(self.n_vocab)
        off = self.data_offset + 2 * self.n_rows * nv * i
        rows = np.fromfile(self.path, "<u2", self.n_rows * nv, offset=off).reshape(self.n_rows, nv)
        return decode_rows(rows, self.n_vocab)
