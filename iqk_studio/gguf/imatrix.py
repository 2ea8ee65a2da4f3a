"""Importance matrix files: ik_llama.cpp's legacy `.dat` and mainline llama-imatrix's GGUF format,
loaded into one record whose values are already divided by ncall (what llama-quantize uses).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iqk_studio.gguf.errors import GGUFError
from iqk_studio.gguf.reader import GGUF_MAGIC, open_model
from iqk_studio.gguf.values import ValueType

KEY_TYPE = "general.type"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUM2, SUMS_OLD, COUNTS, SUM1 = ".in_sum2", ".sums", ".counts", ".in_sum"


@dataclass(frozen=True)
class Imatrix:
    """name -> importance per input column (n_in, or n_in * n_expert for MoE, expert-major),
    i.e. mean of x^2 over the activation rows seen (stored value / ncall)."""

    values: dict[str, np.ndarray]
    ncall: dict[str, int]
    dataset: str = ""
    chunks: int = 0  # last_call (.dat) or imatrix.chunk_count (GGUF)
    chunk_size: int = 0  # GGUF only: tokens per chunk
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # GGUF only: rows per matrix


def candidate_names(name: str) -> list[str]:
    """Entries llama-quantize looks up for a tensor: the exact name, then its fallbacks, in its
    order (src/llama-quantize.cpp:1626-1662; quant-formats.md §3.5)."""
    out = [name]
    for part in ("ffn_up_exps.weight", "ffn_gate_exps.weight"):
        if part in name:
            head = name[:name.find(part)]
            return out + [head + "ffn_gate_up_exps.weight", head + "ffn_up_exps.weight"]
    if "ffn_gate_up_exps.weight" in name:
        return out + [name[:name.find("ffn_gate_up_exps.weight")] + "ffn_up_exps.weight"]
    if "ffn_gate.weight" in name:
        return out + [name[:name.find("ffn_gate.weight")] + "ffn_up.weight"]
    for a, b in ((".attn_v_b.weight", ".attn_kv_b.weight"), (".attn_kv_b.weight",
                                                            ".attn_v_b.weight")):
        if a in name:
            return out + [name[:name.find(a)] + b]
    return out


def load_imatrix(path) -> Imatrix:
    """Load a `.dat` or GGUF imatrix (told apart by the GGUF magic)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{path}: is a directory, not an imatrix file") from None
    return load_imatrix_gguf(path) if magic == GGUF_MAGIC else load_imatrix_dat(path)


# ------------------------------------------------------------------------------- legacy .dat
# int32 n_entries | n_entries x (int32 name_len | name | int32 ncall | int32 nval | f32[nval])
# | optional trailer: int32 last_call | int32 dataset_len | dataset bytes

def load_imatrix_dat(path) -> Imatrix:
    path = Path(path)
    buf = path.read_bytes()
    size, pos = len(buf), 0

    def i32(what: str) -> int:
        nonlocal pos
        if pos + 4 > size:
            raise GGUFError(f"{path} at offset {pos}: truncated imatrix: {what} needs 4 bytes, "
                            f"{size - pos} remain")
        (v,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        return v

    def nbytes(n: int, what: str) -> int:
        if n < 0 or n > size - pos:
            raise GGUFError(f"{path} at offset {pos - 4}: {what} {n} does not fit in the "
                            f"{size - pos} bytes left")
        return n

    n_entries = i32("entry count")
    if n_entries < 0 or n_entries > size // 12:
        raise GGUFError(f"{path}: entry count {n_entries} cannot fit in a {size}-byte file "
                        "(a truncated file, or not an imatrix)")
    values, ncall = {}, {}
    for i in range(n_entries):
        n = nbytes(i32(f"name length of entry {i}"), f"name length of entry {i}")
        name = buf[pos:pos + n].decode("utf-8", "replace")
        pos += n
        nc = i32(f"ncall of {name!r}")
        nval = i32(f"nval of {name!r}")
        nbytes(nval * 4 if nval >= 0 else -1, f"{name!r}: {nval} values need")
        v = np.frombuffer(buf, "<f4", nval, pos).astype(np.float32)
        pos += 4 * nval
        if name in values:
            raise GGUFError(f"{path}: duplicate imatrix entry {name!r}")
        values[name] = v / np.float32(nc) if nc > 0 else v
        ncall[name] = nc
    chunks, dataset = 0, ""
    if pos < size:
        chunks = i32("last_call")
        n = nbytes(i32("dataset name length"), "dataset name length")
        dataset = buf[pos:pos + n].decode("utf-8", "replace")
    return Imatrix(values, ncall, dataset, chunks)


def write_imatrix_dat(path, entries: dict[str, tuple[int, np.ndarray]], last_call: int = 0,
                      dataset: str = "") -> Path:
    """Write the exact `.dat` layout: name -> (ncall, stored values = mean(x^2) * ncall)."""
    parts = [struct.pack("<i", len(entries))]
    for name, (nc, stored) in entries.items():
        b = name.encode()
        v = np.ascontiguousarray(stored, dtype="<f4").reshape(-1)
        parts += [struct.pack("<i", len(b)), b, struct.pack("<ii", nc, v.size), v.tobytes()]
    d = dataset.encode()
    parts += [struct.pack("<ii", last_call, len(d)), d]
    return _write_atomic(path, b"".join(parts))


def save_imatrix_dat(path, imatrix: Imatrix) -> Path:
    """Save an Imatrix as `.dat`: stored = value * ncall (ncall 0 stores the values as they are)."""
    entries = {}
    for name, v in imatrix.values.items():
        nc = int(imatrix.ncall.get(name, 1))
        v = np.asarray(v, np.float32)
        entries[name] = (nc, v * np.float32(nc) if nc > 0 else v)
    return write_imatrix_dat(path, entries, imatrix.chunks, imatrix.dataset)


def _write_atomic(path, data: bytes) -> Path:
    from iqk_studio.gguf.writer import remove_stale_temps, temp_path

    path = Path(path)
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ------------------------------------------------------------------------ mainline GGUF format
# KV general.type = "imatrix", imatrix.datasets [str], imatrix.chunk_count u32,
# imatrix.chunk_size u32; per entry NAME.in_sum2 f32 {n_in, n_mat} = sum x^2 and
# NAME.counts f32 {1, n_mat} = activation rows per matrix (n_mat = n_expert for MoE, else 1).

def load_imatrix_gguf(path) -> Imatrix:
    with open_model(path) as m:
        md = m.metadata
        sums = {}
        for tname in m.tensors:
            for suffix in (SUM2, SUMS_OLD):
                if tname.endswith(suffix):
                    sums[tname[: -len(suffix)]] = tname
        if not sums:
            raise GGUFError(f"{path}: GGUF file has no '*.in_sum2' tensors: not an imatrix")
        chunk_size = int(md.get(KEY_CHUNK_SIZE, 0) or 0)
        values, ncall, counts = {}, {}, {}
        for name, sname in sums.items():
            cname = name + COUNTS
            if cname not in m.tensors:
                raise GGUFError(f"{path}: imatrix entry {name!r} has no {cname!r} tensor")
            s, c = _f32(m, sname, path), _f32(m, cname, path)
            n_in = m.tensors[sname].shape[0]
            if s.size % max(n_in, 1) or s.size // max(n_in, 1) != c.size:
                raise GGUFError(f"{path}: {sname} has {s.size} values but {cname} has "
                                f"{c.size} counts for rows of {n_in}")
            s = s.reshape(c.size, n_in)
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(c[:, None] > 0, s / c[:, None], np.float32(1)).astype(np.float32)
            values[name] = v.reshape(-1)
            counts[name] = c
            mx = float(c.max()) if c.size else 0.0
            ncall[name] = int(-(-mx // chunk_size)) if chunk_size else int(mx)
        ds = md.get(KEY_DATASETS, [])
        dataset = ds[0] if isinstance(ds, list) and ds else str(ds) if ds else ""
        chunks = int(md.get(KEY_CHUNK_COUNT, 0) or 0)
    return Imatrix(values, ncall, dataset, chunks, chunk_size, counts)


def _f32(m, name: str, path) -> np.ndarray:
    t = m.tensors[name]
    if t.qtype.name != "f32":
        raise GGUFError(f"{path}: imatrix tensor {name!r} is {t.qtype.name}, expected f32")
    return m.tensor_data(name).reshape(-1).view("<f4").astype(np.float32)


def save_imatrix_gguf(path, imatrix: Imatrix, datasets: list[str] | None = None) -> Path:
    """Save in mainline's GGUF layout (entries sorted by name). in_sum2 = value * count per
    matrix; counts come from imatrix.counts, else ncall * chunk_size (or ncall) for one matrix."""
    from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf

    specs, arrays = [], []
    for name in sorted(imatrix.values):
        v = np.asarray(imatrix.values[name], np.float32).reshape(-1)
        c = imatrix.counts.get(name)
        if c is None:
            nc = imatrix.ncall.get(name, 1)
            c = np.array([nc * imatrix.chunk_size if imatrix.chunk_size else nc], np.float32)
        c = np.asarray(c, np.float32).reshape(-1)
        if c.size == 0 or v.size % c.size:
            raise ValueError(f"{name}: {v.size} values do not split into {c.size} matrices")
        n_in = v.size // c.size
        specs += [TensorSpec(name + SUM2, (n_in, c.size), 0),  # f32
                  TensorSpec(name + COUNTS, (1, c.size), 0)]
        arrays += [(v.reshape(c.size, n_in) * c[:, None]).astype(np.float32), c]
    if datasets is None:
        datasets = [imatrix.dataset] if imatrix.dataset else []
    kvs = [KV(KEY_TYPE, "imatrix"), KV(KEY_DATASETS, list(datasets), ValueType.ARRAY,
                                          ValueType.STRING),
           KV(KEY_CHUNK_COUNT, int(imatrix.chunks), ValueType.UINT32),
           KV(KEY_CHUNK_SIZE, int(imatrix.chunk_size), ValueType.UINT32)]
    return write_gguf(path, kvs, specs, arrays)
