"""Streaming parser of llama-quantize output (ik_llama.cpp and mainline, real runs and --dry-run):
per-tensor lines (other threads' messages may land inside them) and the totals."""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from iqk_studio.jobs.events import TensorDone

_HEAD = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+) - \[([\d,\s]+)\], type =\s+(\w+),")
_CONVERT = re.compile(r"converting to (\w+) \.\.")
_SIZE_CONV = re.compile(r"size =\s+([\d.]+) MiB ->\s+([\d.]+) MiB")
_SIZE_KEEP = re.compile(r"size =\s+([\d.]+) MB")
_QUANTIZING = re.compile(r"quantizing '(.+)' to '(.+)' as (\S+)")
_TOTAL = re.compile(r"(model|quant) size\s+=\s+([\d.]+) MB")
_TIME = re.compile(r"quantize time =\s+([\d.]+) ms")
_BUILD = re.compile(r"^(?:main: build = |build: )(\d+) \((\w+)\)")


@dataclass(frozen=True)
class TensorLine:
    index: int
    count: int
    name: str
    shape: tuple[int, ...]
    src_type: str
    type: str  # the type written (src_type when kept)
    src_bytes: int
    bytes: int  # exact when our type table knows the type, else the log's rounded MiB
    exact: bool


def _nbytes(type_name: str, shape: tuple[int, ...], mib: float) -> tuple[int, bool]:
    from iqk_studio.quant.types import BY_NAME

    low = {n.lower(): t for n, t in BY_NAME.items()}
    t = BY_NAME.get(type_name) or low.get(type_name.lower())
    if t is not None:
        try:
            return int(t.nbytes(shape)), True
        except (ValueError, ZeroDivisionError):
            pass
    return int(round(mib * 2**20)), False


class QuantizeLogParser:
    """Feed output text as it arrives; feed returns a TensorDone per finished tensor line."""

    def __init__(self, clock: Callable[[], float] | None = None, tail: int = 40):
        self.tensors: list[TensorLine] = []
        self.facts: dict = {}
        self.totals: dict[str, float] = {}  # model_mib, quant_mib, quantize_ms (as printed)
        self.tail: deque[str] = deque(maxlen=tail)
        self._clock = clock
        self._t = clock() if clock else 0.0
        self._buf = ""
        self._cur: dict | None = None

    @property
    def count(self) -> int:
        return self._cur["count"] if self._cur else (self.tensors[-1].count if self.tensors else 0)

    @property
    def done(self) -> int:
        return len(self.tensors)

    @property
    def last_line(self) -> str:
        return self.tail[-1] if self.tail else ""

    def feed(self, text: str) -> list:
        self._buf += text
        out = []
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            out += self._line(line.rstrip("\r"))
        return out

    def close(self) -> list:
        rest, self._buf = self._buf, ""
        return self._line(rest) if rest.strip() else []

    def _line(self, line: str) -> list:
        if line.strip():
            self.tail.append(line)
        out = []
        pos = 0
        while True:
            h = _HEAD.search(line, pos)
            end = h.start() if h else len(line)
            out += self._body(line[pos:end])
            if not h:
                return out
            shape = tuple(int(x) for x in h.group(4).split(","))
            while len(shape) > 1 and shape[-1] == 1:
                shape = shape[:-1]
            self._cur = {"index": int(h.group(1)), "count": int(h.group(2)),
                         "name": h.group(3), "shape": shape, "src": h.group(5), "to": None}
            pos = h.end()

    def _body(self, text: str) -> list:
        self._facts(text)
        cur = self._cur
        if cur is None:
            return []
        m = _CONVERT.search(text)
        if m:
            cur["to"] = m.group(1)
            text = text[m.end():]
        m = _SIZE_CONV.search(text)
        if m and cur["to"]:
            return [self._done(cur["to"], float(m.group(1)), float(m.group(2)))]
        m = _SIZE_KEEP.search(text)
        if m and not cur["to"]:
            mib = float(m.group(1))
            return [self._done(cur["src"], mib, mib)]
        return []

    def _done(self, qtype: str, src_mib: float, mib: float) -> TensorDone:
        cur, self._cur = self._cur, None
        src_bytes, _ = _nbytes(cur["src"], cur["shape"], src_mib)
        nbytes, exact = _nbytes(qtype, cur["shape"], mib)
        t = TensorLine(cur["index"], cur["count"], cur["name"], cur["shape"], cur["src"],
                       qtype, src_bytes, nbytes, exact)
        self.tensors.append(t)
        secs = 0.0
        if self._clock:
            now = self._clock()
            secs, self._t = now - self._t, now
        return TensorDone(t.index, t.count, t.name, t.type, t.bytes, secs)

    def _facts(self, text: str) -> None:
        m = _QUANTIZING.search(text)
        if m:
            self.facts.update(model_in=m.group(1), model_out=m.group(2), ftype=m.group(3))
        m = _BUILD.search(text)
        if m:
            self.facts.update(build=int(m.group(1)), commit=m.group(2))
        for m in _TOTAL.finditer(text):
            self.totals[f"{m.group(1)}_mib"] = float(m.group(2))
        m = _TIME.search(text)
        if m:
            self.totals["quantize_ms"] = float(m.group(1))

    @property
    def finished(self) -> bool:
        """The totals were printed (llama-quantize got to its end)."""
        return "quant_mib" in self.totals

    def quant_bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    def source_bytes(self) -> int:
        return sum(t.src_bytes for t in self.tensors)

    def seconds(self) -> float:
        ms = self.totals.get("quantize_ms")
        return ms / 1000 if ms is not None else math.nan
