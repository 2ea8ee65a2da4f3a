"""Reading `llama-quantize --dry-run` logs of ik_llama.cpp: the model it saw (tensor infos and
metadata, as a stand-in plan() accepts), what it chose per tensor, the total, and where it aborted;
and the comparison of a Plan against them."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from iqk_studio.gguf.types import BY_NAME

_HEAD = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+) - \[([\d,\s]+)\], type =\s+(\S+), ")
_KV = re.compile(r"- kv\s+\d+:\s+(\S+)\s+(\S+)\s+= (.*)$")
_ABORT = re.compile(r"failed to quantize: \s*(.+)")


@dataclass(frozen=True)
class Info:
    name: str
    shape: tuple
    type_id: int


@dataclass
class StandIn:
    """What plan() reads from a GGUFModel, rebuilt from a dry-run log."""

    tensors: dict
    metadata: dict


@dataclass(frozen=True)
class Logged:
    name: str
    type: str
    size_mib: str  # as printed: "%.2f" MiB for converted tensors, "%.3f" MB for copies
    converted: bool


@dataclass(frozen=True)
class DryRun:
    model: StandIn  # every tensor the log lists (up to the one it aborted on)
    logged: list  # Logged per tensor done (the aborted one excluded)
    total: str | None  # "quant size" in MiB as printed, None when it aborted
    abort: str | None  # llama-quantize's error message


def _value(typ: str, text: str):
    if typ.startswith("arr[str,"):
        return [""] * int(typ[len("arr[str,"):-1])
    if typ.startswith("arr["):
        return None
    if typ in ("u32", "i32", "u64", "i64", "u16", "u8", "i8", "i16"):
        return int(text)
    if typ in ("f32", "f64"):
        return float(text)
    if typ == "bool":
        return text.strip() == "true"
    return text.strip()


def read_text(path: Path) -> str:
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as f:
            return f.read()
    return path.read_text()


def parse_log(path) -> DryRun:
    text = read_text(path)
    meta = {}
    for line in text.splitlines():
        m = _KV.search(line)
        if m:
            meta[m.group(1)] = _value(m.group(2), m.group(3))
    heads = list(_HEAD.finditer(text))
    tensors, logged = {}, []
    abort = None
    for k, m in enumerate(heads):
        seg = text[m.end(): heads[k + 1].start() if k + 1 < len(heads) else len(text)]
        dims = [int(d) for d in m.group(4).split(",")]
        while len(dims) > 1 and dims[-1] == 1:
            dims.pop()
        name, src = m.group(3), m.group(5)
        tensors[name] = Info(name, tuple(dims), BY_NAME[src].id)
        conv = re.search(r"converting to (\S+) \.\. .*?size =\s+[\d.]+ MiB ->\s+([\d.]+) MiB",
                         seg, re.S)
        if conv:
            logged.append(Logged(name, conv.group(1), conv.group(2), True))
            continue
        size = re.match(r"size =\s+([\d.]+) MB", seg.strip())
        if size:
            logged.append(Logged(name, src, size.group(1), False))
            continue
        failed = _ABORT.search(seg)
        assert failed and k == len(heads) - 1, f"{path}: cannot read the record of {name}"
        abort = failed.group(1).strip()
    total = re.search(r"quant size\s+=\s+([\d.]+) MB", text)
    return DryRun(StandIn(tensors, meta), logged, total.group(1) if total else None, abort)


def assert_plan_matches(p, run: DryRun) -> None:
    """Every logged tensor's type, whether it is converted and its size as printed; the total;
    an abort as one of the plan's `abort` lints naming the same fault."""
    assert [e.name for e in p.entries][:len(run.logged)] == [x.name for x in run.logged]
    for e, x in zip(p.entries, run.logged):
        assert e.type == x.type, (e.name, e.reason)
        assert e.quantized == x.converted, e.name
        if x.converted:
            assert f"{e.bytes / 2**20:.2f}" == x.size_mib, e.name
        else:
            assert f"{e.bytes / 2**20:.3f}" == x.size_mib, e.name
    aborts = [w.message for w in p.warnings if w.code == "abort"]
    if run.abort is None:
        assert not aborts, aborts
        assert f"{p.total_bytes / 2**20:.2f}" == run.total
    else:
        assert any(run.abort in m for m in aborts), (run.abort, aborts)
