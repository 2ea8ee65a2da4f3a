"""Reading a llama-perplexity / KLD / llama-imatrix log as pasted into a forum or a model card:
quote markers, code fences, wrapped lines, a missing header, either final-line spelling."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from iqk_studio.external.pplparse import _KLD_ROW, PplLogParser

_QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_FRAGMENT = re.compile(r"^[\s\d.,\[\]+\-eE]*(?:(?:-?nan|inf)(?:\([a-z]*\))?[\s\d.,\[\]+\-eE]*)*$",
                       re.I)
_STREAM_START = re.compile(r"^\s*\[\d")
_KLD_START = re.compile(r"^\s*\d+\s+[-\d.]+\s*(?:±|\+/-)")


@dataclass(frozen=True)
class ImportedLog:
    kind: str  # "perplexity" | "kld" | "imatrix"
    chunks: tuple[float, ...]  # running PPL after each chunk (PPL(Q) for a KLD log)
    final: tuple[float, float] | None  # (ppl, ppl_err) as the log's final line / statistics
    n_ctx: int | None
    model: str | None  # the model file the log names, else its general.name
    kld: dict | None  # KLD statistics (fractions) and "chunks": running mean KLD per chunk
    facts: dict = field(default_factory=dict)  # every setting the log states
    kld_rows: tuple = ()  # KldChunk per table row

    @property
    def engine(self) -> str | None:
        return self.facts.get("flavour")

    @property
    def version(self) -> str:
        f = self.facts
        return f"build {f['build']} ({f['commit']})" if "build" in f else ""

    def to_json(self) -> dict:
        """The `import-log --json` object (NaN and infinities as null)."""
        f = self.facts
        out = {"kind": self.kind, "chunks": list(self.chunks),
               "final": None if self.final is None else
               {"ppl": self.final[0], "ppl_err": self.final[1]},
               "n_ctx": self.n_ctx, "model": self.model, "kld": self.kld,
               "model_name": f.get("model_name"), "engine": self.engine,
               "build": f.get("build"), "commit": f.get("commit"),
               "kv_type": _kv_type(f), "n_chunks": f.get("n_chunks"),
               "settings": {k: v for k, v in f.items() if k not in (
                   "model_name", "flavour", "build", "commit", "model_path")}}
        return _json_safe(out)


def _kv_type(f: dict) -> str | None:
    k, v = f.get("kv_k"), f.get("kv_v")
    return None if k is None else k if k == v else f"{k}/{v}"


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def clean_text(text: str) -> str:
    """Undo what pasting did: quote markers, code fences, lines wrapped by a forum or an editor
    (the `[i]x,` stream, KLD table rows, the final line)."""
    lines = [_QUOTE.sub("", ln) for ln in text.replace("\r\n", "\n").replace("\r", "\n")
             .split("\n")]
    lines = [ln for ln in lines if not _FENCE.match(ln)]
    out: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if _STREAM_START.match(ln):  # the `[i]x,` stream: join its wrapped pieces
            parts = [ln.strip()]
            while i + 1 < len(lines) and lines[i + 1].strip() and _FRAGMENT.match(lines[i + 1]):
                i += 1
                parts.append(lines[i].strip())
            out.append("".join(parts))
        elif _KLD_START.match(ln) and not _KLD_ROW.match(ln):
            joined = ln
            while i + 1 < len(lines) and not _KLD_ROW.match(joined) and joined.count("±") + \
                    joined.count("+/-") < 5:
                i += 1
                joined += " " + lines[i].strip()
            out.append(joined)
        elif "Final estimate" in ln and "+/-" not in ln and i + 1 < len(lines):
            i += 1
            out.append(ln.rstrip() + " " + lines[i].strip())
        else:
            out.append(ln)
        i += 1
    return "\n".join(out) + "\n"


def parse_log(text: str) -> ImportedLog:
    """The results a pasted log states; ValueError when it holds none."""
    p = PplLogParser()
    p.feed(clean_text(text))
    p.close()
    if not (p.chunks or p.kld_rows or p.final):
        raise ValueError("no llama-perplexity or llama-imatrix results found (no `[1]...,` "
                         "values, KLD table or `Final estimate` line)")
    f = p.facts
    model = f.get("model_path") or f.get("model_name")
    if p.kld_rows:
        st = p.kld_stats
        kld = dict(st)
        kld["chunks"] = [r.kld for r in p.kld_rows]
        last = p.kld_rows[-1]
        final = (st["ppl"], st.get("ppl_err", math.nan)) if "ppl" in st else (last.ppl,
                                                                               last.ppl_err)
        kld.setdefault("kld", last.kld)
        kld.setdefault("kld_err", last.kld_err)
        return ImportedLog("kld", tuple(r.ppl for r in p.kld_rows), final, p.n_ctx, model, kld,
                           dict(f), tuple(p.kld_rows))
    imatrix = "saved_to" in f or f.get("tool") == "compute_imatrix"
    final = p.final
    return ImportedLog("imatrix" if imatrix else "perplexity", tuple(p.chunks), final, p.n_ctx,
                       model, None, dict(f))


def read_log(path) -> ImportedLog:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return parse_log(fh.read())


def kld_result(p: PplLogParser, n_ctx: int, seconds: float):
    """A jobs.kld_stats.KldResult from a parsed KLD log (None when it has no statistics)."""
    from iqk_studio.jobs.kld_stats import (
        DP_PERCENTILES,
        KLD_PERCENTILES,
        KldResult,
        KldStats,
    )

    st = p.kld_stats
    if "kld" not in st:
        return None
    ctx = p.n_ctx or n_ctx
    n = len(p.kld_rows)

    def g(k):
        return st.get(k, math.nan)

    stats = KldStats(n * (ctx - 1 - ctx // 2), g("ppl"), g("ppl_err"), g("ppl_base"),
                     g("ppl_base_err"), g("cor"), g("ln_ratio"), g("ln_ratio_err"),
                     g("ppl_ratio"), g("ppl_ratio_err"), g("ppl_diff"), g("ppl_diff_err"),
                     g("kld"), g("kld_err"), g("mean_dp"), g("mean_dp_err"), g("rms_dp"),
                     g("rms_dp_err"), g("same_top"), g("same_top_err"))
    return KldResult(stats, n, ctx, g("kld_max"), g("kld_min"), g("kld_median"),
                     {q: g(f"kld_p{100 * q:.1f}") for q in KLD_PERCENTILES},
                     g("dp_max"), g("dp_min"), g("dp_median"),
                     {q: g(f"dp_p{100 * q:.1f}") for q in DP_PERCENTILES}, seconds)
