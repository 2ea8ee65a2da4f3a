"""`iqk-studio-cli inspect MODEL [--json]`: metadata, every tensor with its exact byte size, and
llama.cpp's "model size" / "repeating layers" totals (sum of ggml_nbytes, padding excluded)."""

from __future__ import annotations

import re
import sys

import numpy as np

from iqk_studio.commands._output import dump_json, printable
from iqk_studio.demo import resolve_model_arg
from iqk_studio.gguf.reader import GGUFModel, open_model
from iqk_studio.gguf.values import TYPE_NAMES, ValueType

GIB, MIB = 1024**3, 1024**2
SHOW_ITEMS = 8  # arrays up to this length are shown whole, longer ones by their length
SHOW_CHARS = 120  # longer strings (chat templates) are cut
_SURROGATE = re.compile(r"\\udc([89a-f][0-9a-f])")
MAX_WIDTH = 64  # name columns are padded to at most this width


def add_arguments(p) -> None:
    p.add_argument("model", help="GGUF file (for a split model, any of its parts)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-tensors", action="store_true", help="omit the per-tensor list")


def run(args) -> int:
    with open_model(resolve_model_arg(args.model)) as m:
        s = summarize(m)
    if args.no_tensors:
        s.pop("tensors")
    if args.json:
        dump_json(s, sys.stdout)
    else:
        sys.stdout.write(format_text(s))
    return 0


def _totals(n_bytes: int, n_params: int) -> dict:
    return {"bytes": n_bytes, "n_params": n_params, "mib": n_bytes / MIB, "gib": n_bytes / GIB,
            "bpw": n_bytes * 8 / n_params if n_params else 0.0}


def summarize(m: GGUFModel) -> dict:
    """Everything inspect shows, as plain JSON-able values."""
    tensors = [{"name": t.name, "type": t.qtype.name, "shape": list(t.shape), "bytes": t.nbytes,
                "n_params": t.n_elements, "file": t.file_index, "offset": t.offset}
               for t in m.tensors.values()]
    total = _totals(sum(t["bytes"] for t in tensors), sum(t["n_params"] for t in tensors))
    repeating = None
    if "token_embd.weight" in m.tensors and "output.weight" in m.tensors:  # as llama.cpp
        ends = [m.tensors["token_embd.weight"], m.tensors["output.weight"]]
        repeating = _totals(total["bytes"] - sum(t.nbytes for t in ends),
                            total["n_params"] - sum(t.n_elements for t in ends))
    type_counts: dict[str, int] = {}
    for t in tensors:
        type_counts[t["type"]] = type_counts.get(t["type"], 0) + 1
    return {
        "path": str(m.path), "files": [str(f.path) for f in m.files], "version": m.version,
        "arch": m.arch, "alignment": m.alignment,
        "metadata": {k: _json_value(v, m.metadata_types[k]) for k, v in m.metadata.items()},
        "n_tensors": len(tensors), "type_counts": type_counts,
        "total_bytes": total["bytes"], "gib": total["gib"], "bpw": total["bpw"],
        "n_params": total["n_params"], "repeating_layers": repeating, "tensors": tensors,
    }


def _type_label(vt: ValueType, item: ValueType | None, n: int | None = None) -> str:
    if vt is ValueType.ARRAY:
        return f"arr[{TYPE_NAMES[item]},{n}]"
    return TYPE_NAMES[vt]


def _json_value(v, types) -> dict:
    vt, item = types
    if vt is not ValueType.ARRAY:
        return {"type": TYPE_NAMES[vt], "value": v}
    n = len(v)
    out = {"type": _type_label(vt, item, n), "length": n}
    if n <= SHOW_ITEMS:
        out["value"] = v.tolist() if isinstance(v, np.ndarray) else list(v)
    return out


def _show(entry: dict) -> str:
    if "value" not in entry:
        return f"[{entry['length']} items]"
    v = entry["value"]
    if isinstance(v, str):
        v = v.encode("unicode_escape", "backslashreplace").decode("ascii")
        v = _SURROGATE.sub(r"\\x\1", v)  # invalid UTF-8 byte kept by the reader -> \xNN
        return v if len(v) <= SHOW_CHARS else v[:SHOW_CHARS] + "..."
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _size_line(label: str, t: dict, total_params: int | None = None) -> str:
    """llm_load_print_meta's size lines; the B/M choice looks at the whole model's count."""
    size = f"{t['gib']:.3f} GiB" if t["bytes"] >= GIB else f"{t['mib']:.3f} MiB"
    line = f"{label} = {size} ({t['bpw']:.3f} BPW"
    if total_params is not None:
        p = t["n_params"]
        line += f", {p * 1e-9:.3f} B parameters" if total_params >= 1e9 else \
            f", {p * 1e-6:.3f} M parameters"
    return line + ")"


def _params(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n * 1e-3:.3f} K"


def format_text(s: dict) -> str:
    arch = _show({"value": s["arch"]}) if isinstance(s["arch"], str) else "?"
    lines = [f"{printable(s['path'])}: GGUF v{s['version']}, {len(s['files'])} file(s), "
             f"architecture {arch or '?'}, {len(s['metadata'])} metadata keys, "
             f"{s['n_tensors']} tensors", "", "metadata:"]
    width = min(MAX_WIDTH, max((len(k) for k in s["metadata"]), default=0))
    for key, e in s["metadata"].items():
        lines.append(f"  {printable(key):<{width}} {e['type']:<16} = {_show(e)}")
    if "tensors" in s:
        lines += ["", "tensors:"]
        n = s["n_tensors"]
        nw = min(MAX_WIDTH, max((len(t["name"]) for t in s["tensors"]), default=0))
        shapes = ["[" + ", ".join(f"{d:6d}" for d in t["shape"]) + "]" for t in s["tensors"]]
        sw = max((len(x) for x in shapes), default=0)
        for i, (t, shape) in enumerate(zip(s["tensors"], shapes, strict=True), 1):
            lines.append(f"  [{i:4d}/{n:4d}] {printable(t['name']):<{nw}} {shape:<{sw}} {t['type']:>10} "
                         f"{t['bytes']:>15,d} bytes ({t['bytes'] / MIB:10.3f} MiB)")
    lines += ["", "types: " + ", ".join(f"{k}: {v}" for k, v in s["type_counts"].items())]
    total = {"bytes": s["total_bytes"], "gib": s["gib"], "mib": s["total_bytes"] / MIB,
             "bpw": s["bpw"], "n_params": s["n_params"]}
    lines += [f"model params     = {_params(s['n_params'])}",
              _size_line("model size      ", total) + f"  [{s['total_bytes']:,d} bytes]"]
    if s["repeating_layers"]:
        r = s["repeating_layers"]
        line = _size_line("repeating layers", r, s["n_params"])
        lines.append(f"{line}  [{r['bytes']:,d} bytes]")
    return "\n".join(lines) + "\n"
