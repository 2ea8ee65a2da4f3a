"""The quantize job: a model + a plan -> a new GGUF, tensor by tensor, as a generator of events
(llama-quantize's llama_model_quantize_internal); and quantize-then-dequantize of one tensor in
memory, which is how a recipe is evaluated without writing a file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqk_studio.gguf.types import FTYPES, FType, QuantType, by_name, parse_ftype
from iqk_studio.gguf.values import ValueType
from iqk_studio.gguf.writer import KV, GGUFWriter, TensorSpec, model_kvs, set_kv
from iqk_studio.jobs.events import Failed, Finished, Progress, TensorDone
from iqk_studio.quant import api, registry
from iqk_studio.quant.importance import imatrix_values, importance_for

QNT_VERSION = 2  # GGML_QNT_VERSION
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
FLOAT_SOURCES = ("f32", "f16", "bf16")
ELEMENTS_PER_BLOCK = 1 << 18  # row block size: a few ms (q8_0) to ~100 ms (slow types) of work


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    n_tensors: int
    n_quantized: int
    source_bytes: int  # sum of the source tensors' ggml_nbytes
    bytes: int  # sum of the written tensors' ggml_nbytes (no padding)
    seconds: float


@dataclass(frozen=True)
class _Task:
    name: str
    shape: tuple[int, ...]
    src: QuantType
    dst: QuantType

    @property
    def copy(self) -> bool:
        return self.src.name == self.dst.name


def plan_targets(plan) -> dict[str, str]:
    """name -> type name from a Plan (entries with .name and .type), or any iterable of
    (name, type) pairs / objects with .name and .type_name; types as names or QuantType."""
    out = {}
    for e in getattr(plan, "entries", plan):
        if hasattr(e, "name"):  # PlanEntry (dataclass or NamedTuple) or alike
            name = e.name
            t = getattr(e, "type", None) or getattr(e, "type_name", None)
        else:
            name, t = e[0], e[1]
        out[str(name)] = t.name if isinstance(t, QuantType) else str(t)
    return out


def _qtype(name: str) -> QuantType:
    try:
        return by_name(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None


def make_tasks(model, targets: dict[str, str], allow_requantize: bool) -> list[_Task]:
    """One task per tensor in file order; checks every tensor before anything is written."""
    unknown = sorted(set(targets) - set(model.tensors))
    if unknown:
        raise ValueError(f"plan names {len(unknown)} tensors the model lacks, e.g. {unknown[0]!r}")
    tasks = []
    for name, info in model.tensors.items():
        src = info.qtype
        dst = _qtype(targets.get(name, src.name))
        t = _Task(name, tuple(int(d) for d in info.shape), src, dst)
        if not t.copy:
            _check_task(t, allow_requantize)
        tasks.append(t)
    return tasks


def _check_task(t: _Task, allow_requantize: bool) -> None:
    if t.src.name not in FLOAT_SOURCES:
        if not allow_requantize:
            raise ValueError(f"{t.name}: requantizing from type {t.src.name} is disabled "
                             "(use --allow-requantize)")
        if not registry.can_dequantize(t.src.name):
            raise ValueError(f"{t.name}: dequantizing {t.src.name} is not implemented")
    if not registry.can_quantize(t.dst.name):
        raise ValueError(f"{t.name}: quantizing to {t.dst.name} is not implemented")
    if t.shape[0] % t.dst.block:
        raise ValueError(f"{t.name}: row length {t.shape[0]} is not a multiple of "
                         f"{t.dst.name}'s block size {t.dst.block}")
    ne1 = t.shape[1] if len(t.shape) > 1 else 1
    if ne1 % t.dst.interleave:
        raise ValueError(f"{t.name}: {t.dst.name} interleaves rows by {t.dst.interleave}, the "
                         f"tensor has {ne1} (llama-quantize uses {t.dst.base} then)")
    if len(t.shape) > 3 and any(d != 1 for d in t.shape[3:]):
        raise ValueError(f"{t.name}: 4-D tensors are not supported")


def infer_ftype(tasks: list[_Task]) -> FType | None:
    """The llama_ftype whose default type holds the most quantized bytes (None if nothing is)."""
    by_type: dict[str, int] = {}
    for t in tasks:
        if not t.copy:
            by_type[t.dst.name] = by_type.get(t.dst.name, 0) + t.dst.nbytes(t.shape)
    for name, _ in sorted(by_type.items(), key=lambda kv: -kv[1]):
        for f in FTYPES:
            if f.default_type == name:
                return f
    return None


def output_kvs(model, ftype: FType | None, imatrix=None, imatrix_path: str | None = None):
    """llama-quantize's metadata: the source's, quantization_version, no split keys, imatrix
    keys (file, dataset, entries, chunks), general.file_type in place."""
    updates = [KV("general.quantization_version", QNT_VERSION, ValueType.UINT32)]
    if imatrix is not None:
        updates.append(KV("quantize.imatrix.file", str(imatrix_path or "")[:127], ValueType.STRING))
        dataset = getattr(imatrix, "dataset", "")
        if dataset:
            updates.append(KV("quantize.imatrix.dataset", str(dataset)[:127], ValueType.STRING))
        updates.append(KV("quantize.imatrix.entries_count", len(imatrix_values(imatrix)),
                          ValueType.INT32))
        if getattr(imatrix, "chunks", 0) > 0:
            updates.append(KV("quantize.imatrix.chunks_count", int(imatrix.chunks),
                              ValueType.INT32))
    if ftype is not None:
        updates.append(KV("general.file_type", ftype.id, ValueType.UINT32))
    return set_kv(model_kvs(model), updates, remove=SPLIT_KEYS)


def to_f32(raw: np.ndarray, src: QuantType, n: int) -> np.ndarray:
    """Rows of a source tensor as float32 (rows, n): exact for f32/f16/bf16, else dequantized."""
    if src.name == "f32":
        return np.ascontiguousarray(raw).view(np.float32).reshape(-1, n)
    if src.name == "f16":
        return np.ascontiguousarray(raw).view(np.float16).reshape(-1, n).astype(np.float32)
    if src.name == "bf16":
        u = np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16
        return u.view(np.float32).reshape(-1, n)
    return api.dequantize(raw, src.name, n)


def _quantize_rows(x, qtype, importance, uniform, pool, threads, group=1) -> np.ndarray:
    """Rows quantized on `threads` workers, split at multiples of `group` (interleaved types)."""
    if pool is None or threads <= 1 or x.shape[0] < 2 * threads * group:
        return api.quantize(x, qtype, importance, uniform)
    bounds = group * np.linspace(0, x.shape[0] // group, threads + 1).astype(int)
    parts = pool.map(lambda ab: api.quantize(x[ab[0]:ab[1]], qtype, importance, uniform),
                     [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a])
    return np.concatenate(list(parts))


def _rows_per_block(n: int, threads: int, group: int = 1) -> int:
    rows = max(1, ELEMENTS_PER_BLOCK * max(1, threads) // n)
    return max(group, rows // group * group)


def quantize_tensor_blocks(model, t: _Task, imatrix, uniform, pool, threads) -> Iterator:
    """Yield (rows done, rows total, bytes) per row block; experts one by one with their slice."""
    ne0 = t.shape[0]
    ne1 = t.shape[1] if len(t.shape) > 1 else 1
    ne2 = t.shape[2] if len(t.shape) > 2 else 1
    raw = model.tensor_data(t.name)
    total = ne1 * ne2
    qw_all = (importance_for(imatrix_values(imatrix), t.name, ne0, ne2)
              if imatrix is not None else None)
    group = t.dst.interleave
    step = _rows_per_block(ne0, threads, group)
    for e in range(ne2):
        qw = None if qw_all is None else qw_all[e * ne0:(e + 1) * ne0]
        for r0 in range(e * ne1, (e + 1) * ne1, step):
            r1 = min((e + 1) * ne1, r0 + step)
            x = to_f32(raw[r0:r1], t.src, ne0)
            yield r1, total, _quantize_rows(x, t.dst.name, qw, uniform, pool, threads, group)


def quantize_model(model, plan, out_path, imatrix=None, uniform=False, threads=None, *,
                   allow_requantize=False, ftype=None, imatrix_path=None) -> Iterator:
    """Generator of Progress (per row block), TensorDone (per tensor), then Finished or Failed.
    Stop iterating or call .close() to cancel: the temp file is removed, out_path untouched.

    model: GGUFModel or a path; plan: see plan_targets (tensors it omits are copied);
    imatrix: Imatrix or dict name -> values (already / ncall); ftype: FType, name or id for
    general.file_type (default: the ftype of the dominant quantized type)."""
    from iqk_studio.gguf.reader import open_model

    own = not hasattr(model, "tensors")
    writer = pool = None
    t_start = time.perf_counter()
    try:
        if own:
            model = open_model(model)
        tasks = make_tasks(model, plan_targets(plan), allow_requantize)
        if uniform:
            imatrix = None  # weights 1: no imatrix is used, none is recorded in the metadata
        if imatrix is not None and not hasattr(imatrix, "values") and not isinstance(imatrix, dict):
            from iqk_studio.gguf.imatrix import load_imatrix
            imatrix_path = imatrix_path or str(imatrix)
            imatrix = load_imatrix(imatrix)
        if isinstance(ftype, (str, int)):
            ftype = parse_ftype(str(ftype))
        ftype = ftype or infer_ftype(tasks)
        kvs = output_kvs(model, ftype, imatrix, imatrix_path)
        specs = [TensorSpec(t.name, t.shape, t.dst.id) for t in tasks]
        writer = GGUFWriter(out_path, kvs, specs, getattr(model, "alignment", None)).open()
        threads = max(1, int(threads or os.cpu_count() or 1))
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        n_quant = 0
        for i, t in enumerate(tasks, 1):
            t0 = time.perf_counter()
            if t.copy:
                writer.write_tensor(t.name, model.tensor_data(t.name))
            else:
                n_quant += 1
                for done, total, q in quantize_tensor_blocks(model, t, imatrix, uniform, pool,
                                                             threads):
                    writer.write(t.name, q)
                    yield Progress(done, total, t.name)
            yield TensorDone(i, len(tasks), t.name, t.dst.name, t.dst.nbytes(t.shape),
                             time.perf_counter() - t0)
        path = writer.finish()
        src_bytes = sum(t.src.nbytes(t.shape) for t in tasks)
        result = QuantizeResult(path, len(tasks), n_quant, src_bytes,
                                sum(s.nbytes for s in specs), time.perf_counter() - t_start)
        yield Finished(f"wrote {path}", result)
    except (ValueError, KeyError, OSError, api.QuantError) as e:
        if writer is not None:
            writer.abort()  # before reporting: no temp file outlives the failure
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        yield Failed(str(msg))
    finally:
        if writer is not None and not writer.finished:
            writer.abort()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if own and hasattr(model, "close"):
            model.close()


# ------------------------------------------------------------------ in memory, for evaluation

_CACHE: dict[tuple, np.ndarray] = {}
_CACHE_LIMIT = 1 << 30  # bytes of float32 kept (least recently used dropped first)


def _imatrix_key(qw: np.ndarray | None) -> str:
    import hashlib

    return "none" if qw is None else hashlib.blake2b(qw.tobytes(), digest_size=16).hexdigest()


def quantize_dequantize_tensor(model, name: str, qtype: str, imatrix=None, uniform: bool = False,
                               allow_requantize: bool = True) -> np.ndarray:
    """Tensor `name` quantized to `qtype` and dequantized back, float32 in numpy order
    (ne2, ne1, ne0); experts use their imatrix slices as in quantize_model. Cached by (file,
    tensor, type, imatrix contents, mode): evaluating a recipe again is free."""
    info = model.tensors[name]
    dst = _qtype(qtype)
    t = _Task(name, tuple(int(d) for d in info.shape), info.qtype, dst)
    ne0 = t.shape[0]
    ne2 = t.shape[2] if len(t.shape) > 2 else 1
    qw = importance_for(imatrix_values(imatrix), name, ne0, ne2) if imatrix is not None else None
    mode = "uniform" if uniform else ("imatrix" if qw is not None else "default")
    key = (str(getattr(model, "path", id(model))), name, dst.name,
           _imatrix_key(None if uniform else qw), mode)
    hit = _CACHE.pop(key, None)
    if hit is not None:
        _CACHE[key] = hit  # most recently used last
        return hit
    raw = model.tensor_data(name)
    if t.copy:
        out = to_f32(raw, t.src, ne0)
    else:
        _check_task(t, allow_requantize)
        if not registry.can_dequantize(dst.name):
            raise ValueError(f"{name}: dequantizing {dst.name} is not implemented")
        out = np.empty((raw.shape[0], ne0), dtype=np.float32)
        for r1, _, q in quantize_tensor_blocks(model, t, imatrix, uniform, None, 1):
            out[r1 - q.shape[0]:r1] = api.dequantize(q, dst.name, ne0)
    out = out.reshape(tuple(reversed(t.shape)))
    out.setflags(write=False)
    _CACHE[key] = out
    while sum(a.nbytes for a in _CACHE.values()) > _CACHE_LIMIT and len(_CACHE) > 1:
        _CACHE.pop(next(iter(_CACHE)))
    return out


def clear_cache() -> None:
    _CACHE.clear()
