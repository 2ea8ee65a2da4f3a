"""The quantize job: a model + a plan -> a new GGUF, tensor by tensor, as a generator of events
(llama-quantize's llama_model_quantize_internal). Each tensor goes through quant.api.tensor_blocks,
one kernel call per row block; the kernels' own threads (numba prange) are the one level of
parallelism, so any numba threading layer (workqueue included) is safe."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from iqk_studio.gguf.imatrix import Imatrix
from iqk_studio.gguf.types import FTYPES, FType, QuantType, by_name
from iqk_studio.gguf.values import ValueType
from iqk_studio.gguf.writer import KV, GGUFWriter, TensorSpec, model_kvs, set_kv
from iqk_studio.jobs.events import Failed, Finished, Progress, TensorDone
from iqk_studio.quant import api, registry
from iqk_studio.quant.importance import importance_for

QNT_VERSION = 2  # GGML_QNT_VERSION
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
FLOAT_SOURCES = ("f32", "f16", "bf16")


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
    """Tensor name -> type name of every entry of a recipe.records.Plan."""
    return {e.name: e.type for e in plan.entries}


def _qtype(name: str) -> QuantType:
    try:
        return by_name(name)
    except KeyError as e:
        raise ValueError(e.args[0]) from None


def make_tasks(model, targets: Mapping[str, str], allow_requantize: bool) -> list[_Task]:
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


def output_kvs(model, ftype: FType | None, imatrix: Imatrix | None = None,
               imatrix_path: str | None = None):
    """llama-quantize's metadata: the source's, quantization_version, no split keys, imatrix
    keys (file, dataset, entries, chunks), general.file_type in place."""
    updates = [KV("general.quantization_version", QNT_VERSION, ValueType.UINT32)]
    if imatrix is not None:
        updates.append(KV("quantize.imatrix.file", str(imatrix_path or "")[:127], ValueType.STRING))
        if imatrix.dataset:
            updates.append(KV("quantize.imatrix.dataset", str(imatrix.dataset)[:127],
                              ValueType.STRING))
        updates.append(KV("quantize.imatrix.entries_count", len(imatrix.values), ValueType.INT32))
        if imatrix.chunks > 0:
            updates.append(KV("quantize.imatrix.chunks_count", int(imatrix.chunks),
                              ValueType.INT32))
    if ftype is not None:
        updates.append(KV("general.file_type", ftype.id, ValueType.UINT32))
    return set_kv(model_kvs(model), updates, remove=SPLIT_KEYS)


@contextmanager
def _numba_threads(n: int):
    """numba's thread count for the kernels called inside (thread-local in numba)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def quantize_tensor_blocks(model, t: _Task, imatrix: Imatrix | None, uniform: bool,
                           threads: int) -> Iterator:
    """Yield (rows done, rows total, bytes) per row block (api.tensor_blocks: experts one by one
    with their imatrix slices), each block quantized by one kernel call on `threads` threads."""
    ne0 = t.shape[0]
    ne2 = t.shape[2] if len(t.shape) > 2 else 1
    raw = model.tensor_data(t.name)
    total = raw.shape[0]
    qw_all = importance_for(imatrix.values, t.name, ne0, ne2) if imatrix is not None else None
    for e, r0, r1 in api.tensor_blocks(t.shape, t.dst.name, threads):
        qw = api.expert_importance(qw_all, e, ne0)
        with _numba_threads(threads):
            x = api.dequantize(raw[r0:r1], t.src.name, ne0)
            q = api.quantize(x, t.dst.name, qw, uniform)
        yield r1, total, q


def quantize_model(model_path, targets: Mapping[str, str], out_path,
                   imatrix: Imatrix | None = None, uniform: bool = False,
                   threads: int | None = None, *, allow_requantize: bool = False,
                   ftype: FType | None = None, imatrix_path: str | None = None) -> Iterator:
    """Generator of Progress (per row block), TensorDone (per tensor), then Finished or Failed.
    Stop iterating or call .close() to cancel: the temp file is removed, out_path untouched.

    targets: tensor name -> type name (plan_targets(plan)); tensors it omits are copied;
    imatrix: values already / ncall; ftype: general.file_type (default: the ftype of the
    dominant quantized type); threads: the kernels' threads (default: all cores)."""
    from iqk_studio.gguf.reader import open_model

    writer = model = None
    t_start = time.perf_counter()
    try:
        model = open_model(model_path)
        tasks = make_tasks(model, targets, allow_requantize)
        if uniform:
            imatrix = None  # weights 1: no imatrix is used, none is recorded in the metadata
        ftype = ftype or infer_ftype(tasks)
        kvs = output_kvs(model, ftype, imatrix, imatrix_path)
        specs = [TensorSpec(t.name, t.shape, t.dst.id) for t in tasks]
        writer = GGUFWriter(out_path, kvs, specs, getattr(model, "alignment", None)).open()
        threads = max(1, int(threads or os.cpu_count() or 1))
        n_quant = 0
        for i, t in enumerate(tasks, 1):
            t0 = time.perf_counter()
            if t.copy:
                writer.write_tensor(t.name, model.tensor_data(t.name))
            else:
                n_quant += 1
                for done, total, q in quantize_tensor_blocks(model, t, imatrix, uniform, threads):
                    writer.write(t.name, q)
                    yield Progress(done, total, t.name)
            yield TensorDone(i, len(tasks), t.name, t.dst.name, t.dst.nbytes(t.shape),
                             time.perf_counter() - t0)
        path = writer.finish()
        src_bytes = sum(t.src.nbytes(t.shape) for t in tasks)
        result = QuantizeResult(path, len(tasks), n_quant, src_bytes,
                                sum(s.nbytes for s in specs), time.perf_counter() - t_start)
        yield Finished(f"wrote {path}", result)
    except (ValueError, KeyError, OSError) as e:  # QuantError, GGUFError are ValueErrors
        if writer is not None:
            writer.abort()  # before reporting: no temp file outlives the failure
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        yield Failed(str(msg))
    finally:
        if writer is not None and not writer.finished:
            writer.abort()
        if model is not None:
            model.close()
