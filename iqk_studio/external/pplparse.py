"""Streaming parser of llama-perplexity and llama-imatrix output (ik_llama.cpp and mainline): the
`[i]x,` values (they arrive without newlines), timing, both final-line spellings, the KLD table and
its final statistics, and the facts the log header states (build, model, KV type, n_ctx)."""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable

from iqk_studio.jobs.events import Chunk, KldChunk

_NUM = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?:nan|inf)(?:\([a-z]*\))?)"
_CHUNK_AT = re.compile(rf"\s*\[(\d+)\]\s*({_NUM})\s*,", re.I)
_PM = r"\s*(?:±|\+/-|Â±)\s*"
_KLD_ROW = re.compile(
    rf"^\s*(\d+)\s+({_NUM}){_PM}({_NUM})\s+({_NUM}){_PM}({_NUM})\s+({_NUM}){_PM}({_NUM})\s+"
    rf"({_NUM}){_PM}({_NUM})\s*%\s+({_NUM}){_PM}({_NUM})\s*%", re.I)
_FINAL_LONG = re.compile(rf"Final estimate: PPL over (\d+) chunks for n_ctx=(\d+) = ({_NUM})"
                         rf"\s*\+/-\s*({_NUM})", re.I)
_FINAL_SHORT = re.compile(rf"Final estimate: PPL = ({_NUM})\s*\+/-\s*({_NUM})", re.I)
_NEG_SD = "Unexpected negative standard deviation of log(prob)"
_STAT = re.compile(rf"^\s*(.+?)\s*:\s*({_NUM})\s*(%?)(?:{_PM}({_NUM})\s*%?)?\s*$", re.I)

# line regex -> facts key(s); values are converted by _FACT_TYPES
_FACTS = [
    (re.compile(r"^(?:main|\w+): build = (\d+) \((\w+)\)"), ("build", "commit")),
    (re.compile(r"^build: (\d+) \((\w+)\) with (.+) for (\S+)"),
     ("build", "commit", "compiler", "target")),
    (re.compile(r"^\w+: built with (.+) for (\S+)\s*$"), ("compiler", "target")),
    (re.compile(r"loaded meta data with \d+ key-value pairs and (\d+) tensors from (.+?)"
                r"(?: \(version [^)]*\)+)?\s*$"), ("n_tensors", "model_path")),
    (re.compile(r"- kv\s+\d+:\s+general\.name\s+str\s+= (.*?)\s*$"), ("model_name",)),
    (re.compile(r"- kv\s+\d+:\s+general\.architecture\s+str\s+= (.*?)\s*$"), ("arch",)),
    (re.compile(r"(?:model ftype|file type)\s+= (.*?)\s*$"), ("ftype",)),
    (re.compile(r"model params\s+= ([\d.]+) ([KMBT])"), ("params", "params_unit")),
    (re.compile(r"(?:model|file) size\s+= ([\d.]+) (MiB|GiB) \(([\d.]+) BPW\)"),
     ("model_size", "model_size_unit", "bpw")),
    (re.compile(r"K \((\w+)\):\s*[\d.]+ MiB, V \((\w+)\)"), ("kv_k", "kv_v")),
    (re.compile(r"flash_attn\s+= (\w+)"), ("flash_attn",)),
    (re.compile(r"^(?:llama_init_from_model|llama_context|llama_new_context_with_model): "
                r"n_ctx\s+= (\d+)"), ("ctx_total",)),
    (re.compile(r"n_ubatch\s+= (\d+)"), ("n_ubatch",)),
    (re.compile(r"system_info: n_threads = (\d+)"), ("threads",)),
    (re.compile(r"(?:calculating perplexity|computing) over (\d+) chunks"), ("n_chunks",)),
    (re.compile(r"over \d+ chunks.*?n_ctx=(\d+)"), ("n_ctx",)),
    (re.compile(r"over \d+ chunks.*?batch_size[= ](\d+)"), ("batch_size",)),
    (re.compile(r"over \d+ chunks.*?n_seq=(\d+)"), ("n_seq",)),
    (re.compile(r"^\S+: ([\d.]+) seconds per pass - ETA (?:(\d+) hours )?([\d.]+) minutes"),
     ("seconds_per_pass", "eta_hours", "eta_minutes")),
    (re.compile(r"stored collected data after (\d+) chunks in (.+?)\s*$"),
     ("saved_chunks", "saved_to")),
    (re.compile(r"llama-perplexity.*?\s(?:-c|--ctx-size)\s+(\d+)(?:\s|$)"), ("cmd_n_ctx",)),
]
_INT_FACTS = {"build", "n_tensors", "threads", "n_chunks", "n_ctx", "batch_size", "n_seq",
              "n_ubatch", "eta_hours", "saved_chunks",
              "cmd_n_ctx", "ctx_total"}
_FLOAT_FACTS = {"params", "model_size", "bpw", "seconds_per_pass", "eta_minutes"}
# markers of each flavour in a log (ik_llama.cpp keeps the older llama.cpp log prefixes)
IK_MARKERS = ("llm_load_print_meta:", "llm_load_tensors:", "HAVE_FANCY_SIMD",
              "Final estimate: PPL over", "fused_moe", "llama_init_from_model: attn_max_b")
MAINLINE_MARKERS = ("print_info: file format", "load_tensors:", "llama_context:",
                    "llama_kv_cache:", "common_init_from_params:")


def to_float(text: str) -> float:
    """A number as printf wrote it (`nan`, `-nan`, `-nan(ind)`, `inf` included)."""
    t = text.strip().lower()
    if "nan" in t:
        return math.nan
    if "inf" in t:
        return -math.inf if t.startswith("-") else math.inf
    return float(t)


class PplLogParser:
    """Feed output text as it arrives; each feed returns the events it completed.

    Chunk per `[i]x,` value (nll derived from the running PPLs, ppl_err nan: the tools do not
    print it per chunk), KldChunk per KLD table row. `clock` (e.g. time.monotonic) times the run
    live; without it, speed and ETA come from the log's `seconds per pass`.
    """

    def __init__(self, n_ctx: int | None = None, clock: Callable[[], float] | None = None,
                 tail: int = 40):
        self.facts: dict = {}
        self.kv: dict[str, str] = {}  # general.* metadata as printed
        self.chunks: list[float] = []  # running PPL after each chunk
        self.kld_rows: list[KldChunk] = []
        self.final: tuple[float, float] | None = None  # (ppl, ppl_err)
        self.kld_stats: dict[str, float] = {}
        self.tail: deque[str] = deque(maxlen=tail)
        self._n_ctx = n_ctx
        self._clock = clock
        self._t0 = clock() if clock else None
        self._buf = ""
        self._section = ""

    # ------------------------------------------------------------------ properties
    @property
    def n_ctx(self) -> int | None:
        f = self.facts
        total = f.get("ctx_total", 0) // f.get("n_seq", 1)
        return f.get("n_ctx") or self._n_ctx or f.get("cmd_n_ctx") or total or None

    @property
    def count(self) -> int:
        """Chunks the run will evaluate (0 while unknown)."""
        n = self.facts.get("n_chunks", 0)
        return max(n, len(self.chunks), len(self.kld_rows))

    @property
    def done(self) -> int:
        return max(len(self.chunks), len(self.kld_rows))

    @property
    def flavour(self) -> str | None:
        return self.facts.get("flavour")

    @property
    def last_line(self) -> str:
        return self.tail[-1] if self.tail else ""

    # ------------------------------------------------------------------ feeding
    def feed(self, text: str) -> list:
        self._buf += text
        out: list = []
        while self._buf:
            m = _CHUNK_AT.match(self._buf)
            if m:
                out.append(self._chunk(int(m.group(1)), to_float(m.group(2))))
                self._buf = self._buf[m.end():]
                continue
            nl = self._buf.find("\n")
            if nl < 0:
                break
            line, self._buf = self._buf[:nl].rstrip("\r"), self._buf[nl + 1:]
            out += self._line(line)
        return out

    def close(self) -> list:
        """End of output: a last line without a newline is parsed too."""
        rest, self._buf = self._buf, ""
        out = []
        for line in rest.split("\n"):
            out += self.feed(line + "\n") if line.strip() else []
        return out

    def _line(self, line: str) -> list:
        if line.strip():
            self.tail.append(line)
        out = []
        if "[" in line and _CHUNK_AT.search(line):  # values after other text on the line
            for m in re.finditer(_CHUNK_AT, line):
                out.append(self._chunk(int(m.group(1)), to_float(m.group(2))))
            line = _CHUNK_AT.sub(" ", line)
        row = _KLD_ROW.match(line)
        if row:
            return out + [self._kld_row(row)]
        self._facts(line)
        self._final(line)
        if line.startswith("======"):
            self._section = line
        elif self._section:
            self._stat(line)
        return out

    # ------------------------------------------------------------------ pieces
    def _facts(self, line: str) -> None:
        for rx, keys in _FACTS:
            m = rx.search(line)
            if not m:
                continue
            for k, v in zip(keys, m.groups()):
                if v is None:
                    continue
                if k == "n_chunks" and k not in self.facts:
                    self.start_clock()  # the evaluation starts: time chunks from here
                self.facts[k] = (int(v) if k in _INT_FACTS else
                                 float(v) if k in _FLOAT_FACTS else v)
        m = re.match(r"^(perplexity|compute_imatrix|kl_divergence): ", line)
        if m:
            self.facts.setdefault("tool", m.group(1))
        m = re.search(r"- kv\s+\d+:\s+(general\.\S+)\s+\S+\s+= (.*?)\s*$", line)
        if m:
            self.kv[m.group(1)] = m.group(2)
        if "flavour" not in self.facts:
            if any(k in line for k in IK_MARKERS):
                self.facts["flavour"] = "ik_llama.cpp"
            elif any(k in line for k in MAINLINE_MARKERS) or re.match(r"^build: \d+ \(", line):
                self.facts["flavour"] = "llama.cpp"

    def _final(self, line: str) -> None:
        m = _FINAL_LONG.search(line)
        if m:
            self.facts.setdefault("n_chunks", int(m.group(1)))
            self.facts["n_ctx"] = int(m.group(2))
            self.final = (to_float(m.group(3)), to_float(m.group(4)))
            return
        m = _FINAL_SHORT.search(line)
        if m:
            self.final = (to_float(m.group(1)), to_float(m.group(2)))
        elif _NEG_SD in line and self.chunks:
            self.final = (self.chunks[-1], math.nan)

    def _stat(self, line: str) -> None:
        m = _STAT.match(line)
        if not m:
            return
        label = re.sub(r"\s+", " ", m.group(1))
        val, pct, err = to_float(m.group(2)), m.group(3), m.group(4)
        key = _stat_key(label)
        if key is None:
            return
        scale = 0.01 if (pct or key.startswith(("dp", "rms_dp", "same_top", "mean_dp", "cor"))) \
            else 1.0
        self.kld_stats[key] = val * scale
        if err is not None:
            self.kld_stats[key + "_err"] = to_float(err) * scale

    def _chunk(self, i: int, ppl: float) -> Chunk:
        prev = self.chunks[-1] if self.chunks else None
        self.chunks.append(ppl)
        nll = math.nan
        if ppl > 0 and math.isfinite(ppl):
            nll = math.log(ppl) * i
            if i > 1:
                nll = nll - (math.log(prev) * (i - 1) if prev and prev > 0 else math.nan)
        count = max(self.facts.get("n_chunks", 0), i)
        tps, eta = self._speed(i, count)
        return Chunk(i, count, nll, ppl, math.nan, tps, eta)

    def _kld_row(self, m: re.Match) -> KldChunk:
        v = [to_float(x) for x in m.groups()[1:]]
        i = int(m.group(1))
        count = max(self.facts.get("n_chunks", 0), i)
        ppl_base = v[0] / math.exp(v[2]) if math.isfinite(v[2]) else math.nan
        tps, eta = self._speed(i, count)
        row = KldChunk(i, count, v[0], v[1], ppl_base, v[2], v[3], v[4], v[5], v[6] / 100,
                       v[7] / 100, v[8] / 100, v[9] / 100, tps, eta)
        self.kld_rows.append(row)
        return row

    def _speed(self, i: int, count: int) -> tuple[float, float]:
        """(tokens per second, seconds left) after chunk i of count; the tools evaluate n_seq
        chunks per pass, so chunk i arrives with the rest of its pass."""
        n_ctx, n_seq = self.n_ctx or 0, max(self.facts.get("n_seq", 1), 1)
        done = -(-i // n_seq)  # passes done
        left = max(-(-count // n_seq) - done, 0)
        if self._clock is not None:
            dt = max(self._clock() - self._t0, 1e-9)
            return min(done * n_seq, count) * n_ctx / dt, dt / done * left
        spp = self.facts.get("seconds_per_pass")
        if not spp:
            return 0.0, 0.0
        return n_seq * n_ctx / spp, spp * left

    def start_clock(self) -> None:
        """Time chunks from now (call when the evaluation starts, after model loading)."""
        if self._clock is not None:
            self._t0 = self._clock()

    def eta_seconds(self) -> float | None:
        """The ETA the tool printed after its first pass."""
        if "eta_minutes" not in self.facts:
            return None
        return 3600 * self.facts.get("eta_hours", 0) + 60 * self.facts["eta_minutes"]

    @property
    def kv_type(self) -> str | None:
        k, v = self.facts.get("kv_k"), self.facts.get("kv_v")
        if k is None:
            return None
        return k if k == v else f"{k}/{v}"


def _stat_key(label: str) -> str | None:
    """Field name of a line of the KLD final statistics (fractions, as KldStats/KldResult)."""
    fixed = {"Mean PPL(Q)": "ppl", "Mean PPL(base)": "ppl_base",
             "Cor(ln(PPL(Q)), ln(PPL(base)))": "cor", "Mean ln(PPL(Q)/PPL(base))": "ln_ratio",
             "Mean PPL(Q)/PPL(base)": "ppl_ratio", "Mean PPL(Q)-PPL(base)": "ppl_diff",
             "Same top p": "same_top"}
    if label in fixed:
        return fixed[label]
    m = re.match(r"^(Mean|Maximum|Minimum|Median|RMS|[\d.]+%) (KLD|\S*p)$", label)
    if not m:
        return None
    what = "kld" if m.group(2) == "KLD" else "dp"
    pos = m.group(1)
    if pos == "Mean":
        return "kld" if what == "kld" else "mean_dp"
    if pos == "RMS":
        return "rms_dp" if what == "dp" else None
    if pos.endswith("%"):
        return f"{what}_p{pos[:-1]}"
    return f"{what}_{pos.lower()[:3] if pos != 'Median' else 'median'}"
