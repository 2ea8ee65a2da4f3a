"""The app's evaluation run with the user's llama-perplexity instead of the built-in engine (no Qt):
the open file as it is, perplexity or KL-divergence against a base (a GGUF, whose log-probs the
tool saves first into a temporary file, or a base log-prob file saved earlier). The same events
as jobs.evaluate and a RunResult in Finished, so the Evaluate tab cannot tell them apart."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from iqk_studio.external.binaries import Binary
from iqk_studio.external.runs import GRACE, kld_run, perplexity_run, save_base_run
from iqk_studio.jobs.evaluate import EvalSpec, collect
from iqk_studio.jobs.events import Chunk, Failed, Finished, Progress
from iqk_studio.results import evaluation_spec

Record = Callable[[Iterator, object], Iterator]  # (job, RunSpec) -> the job, recorded


def describe(b: Binary) -> str:
    """`ik_llama.cpp build 4840 (8337e4cd3)` (or what is known of it)."""
    return f"{b.engine} {b.version}".strip()


def external_evaluate(spec: EvalSpec, binary: Binary, extra_args: Sequence[str] = (),
                      stop_on_nan: bool = False, record: Record | None = None,
                      grace: float | None = None) -> Iterator[object]:
    """Events as jobs.evaluate.evaluate; `record(job, run_spec)` wraps each tool run (the base
    model's log-probs are a perplexity run of their own, then the KLD run)."""
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.kld import is_base_file

    if spec.plan is not None:
        yield Failed("llama-perplexity evaluates a GGUF file as it is: quantize the recipe first, "
                     "then open and measure the file")
        return
    record = record or (lambda job, _spec: job)
    grace = GRACE if grace is None else grace
    kw = dict(source="external", engine=binary.engine, engine_version=binary.version)
    t0 = time.perf_counter()
    with open_model(spec.model_path) as model:
        if spec.base_path is None:
            job = perplexity_run(binary, spec.model_path, spec.text_path, spec.n_ctx, spec.chunks,
                                 extra_args, stop_on_nan, grace)
            job = record(job, evaluation_spec("perplexity", spec.model_path, spec.text_path,
                                              spec.n_ctx, spec.chunks, **kw))
            yield from collect(job, spec, model, None, t0)
            return
        temp = None
        try:
            if is_base_file(spec.base_path):
                base_file, base_bytes = spec.base_path, 0
            else:
                with open_model(spec.base_path) as bm:
                    base_bytes = int(sum(t.nbytes for t in bm.tensors.values()))
                fd, temp = tempfile.mkstemp(prefix="iqk-kld-base-", suffix=".kld")
                os.close(fd)
                base_file = temp
                job = save_base_run(binary, spec.base_path, spec.text_path, temp, spec.n_ctx,
                                    spec.chunks, extra_args, grace)
                job = record(job, evaluation_spec("perplexity", spec.base_path, spec.text_path,
                                                  spec.n_ctx, spec.chunks, **kw))
                if not (yield from _base_phase(job)):
                    return
            job = kld_run(binary, spec.model_path, base_file, spec.n_ctx, spec.chunks,
                          extra_args, stop_on_nan, grace)
            job = record(job, evaluation_spec(
                "kld", spec.model_path, spec.text_path, spec.n_ctx, spec.chunks,
                base_model_path=None if temp is None else spec.base_path, **kw))
            yield from collect(job, spec, model, base_bytes, t0)
        finally:
            if temp is not None:
                Path(temp).unlink(missing_ok=True)


def _base_phase(job) -> Iterator[object]:
    """The base model's run as progress only (its chunks are not the KLD run's); returns
    whether it succeeded."""
    try:
        for ev in job:
            if isinstance(ev, Chunk):
                yield Progress(ev.index, ev.count, f"base model's log-probs: chunk {ev.index}/"
                               f"{ev.count}, PPL {ev.ppl:.4f}")
            elif isinstance(ev, Progress):
                yield Progress(ev.done, ev.total, f"base model: {ev.message}")
            elif isinstance(ev, Failed):
                yield Failed(f"saving the base model's log-probs: {ev.message}")
                return False
            elif isinstance(ev, Finished):
                return True
        yield Failed("saving the base model's log-probs: the tool ended without a result")
        return False
    finally:
        job.close()


def run_external(spec: EvalSpec, where: str, binary: Binary | None,
                 extra_args: Sequence[str] = (), stop_on_nan: bool = False,
                 record: Record | None = None, grace: float | None = None) -> Iterator[object]:
    """external_evaluate with the binary found first when it was not detected yet (`where`: a
    build folder, a file, or "" for $IQK_LLAMA_BIN then PATH)."""
    from iqk_studio.external.binaries import BinaryNotFound, detect

    if binary is None:
        yield Progress(0, 0, "llama-perplexity: looking for the binary...")
        try:
            binary = detect("llama-perplexity", where or None)
        except BinaryNotFound as e:
            yield Failed(str(e))
            return
    yield from external_evaluate(spec, binary, extra_args, stop_on_nan, record, grace)
