"""Checks the commands run before any work starts: nonsense options, an output that would replace
one of the inputs, a run that cannot fit in memory. Each failure is one CliError line."""

from __future__ import annotations

import os
from pathlib import Path

from iqk_studio.cli import CliError


def max_threads() -> int:
    return max(64, 4 * (os.cpu_count() or 1))


def check_threads(n: int | None, option: str = "--threads") -> None:
    """At least 1; at most max_threads() (thousands of threads, each starting a parallel kernel,
    abort the process: "libgomp: Thread creation failed")."""
    if n is not None and n < 1:
        raise CliError(f"{option} {n}: the thread count must be at least 1")
    if n is not None and n > max_threads():
        raise CliError(f"{option} {n}: more than {max_threads()} threads (this machine has "
                       f"{os.cpu_count()} cores)")


def check_text_file(path, option: str = "-f") -> None:
    """A text input must be a regular file: /dev/zero or a FIFO would be read forever."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise CliError(f"{option} {path}: no such file")
    if p.is_dir():
        raise CliError(f"{option} {path}: is a directory, not a text file")
    if not p.is_file():
        raise CliError(f"{option} {path}: not a regular file")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_output(out, inputs: dict[str, object]) -> Path:
    """`out` must not be (a symlink or hard link to) any input: writing it would replace the
    source. inputs: what each is -> path (None entries are skipped). Returns out as a Path."""
    out = Path(out)
    if out.is_dir():
        raise CliError(f"output {str(out)!r} is a directory")
    if not out.parent.is_dir():
        raise CliError(f"output directory {str(out.parent)!r} does not exist")
    for what, p in inputs.items():
        if p is not None and _same(out, Path(p)):
            plain = out.resolve() == Path(p).resolve() and not out.is_symlink()
            link = "" if plain else " (through a link)"
            raise CliError(f"output {str(out)!r} is the {what}{link}: refusing to overwrite "
                           "it; choose another output name")
    return out


def model_files(model) -> dict[str, Path]:
    """The input entries of an open GGUFModel (every split part)."""
    files = [f.path for f in model.files]
    if len(files) == 1:
        return {"input model": files[0]}
    return {f"input model's part {i + 1}": p for i, p in enumerate(files)}


def check_context(n_ctx: int) -> None:
    if n_ctx < 4:
        raise CliError(f"-c {n_ctx}: the context size must be at least 4 tokens")


def check_memory(model_paths, n_ctx: int, copies: int = 1, per_vocab_token: int = 0) -> None:
    """Refuse a forward-pass run whose peak memory (jobs/memory.py) exceeds what is available,
    naming the figure and the largest context that fits. IQK_MEMORY_CHECK=0 skips the check.
    model_paths: every model the run holds at once (KLD: base and model); copies: 2 when a
    recipe keeps quantized weights beside the originals; per_vocab_token: bytes per token and
    vocabulary entry the job keeps (a KLD base's 16-bit log-probs: 2)."""
    check_context(n_ctx)
    if os.environ.get("IQK_MEMORY_CHECK", "1") == "0":
        return
    from iqk_studio.engine.model import config_from_metadata
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.memory import check_fits, weight_bytes

    cfg, weights = None, 0
    for path in model_paths:
        with open_model(path) as m:
            emb = m.tensors.get("token_embd.weight")
            c = config_from_metadata(m.metadata, m.tensors, tuple(emb.shape) if emb else None)
            cfg = cfg or c
            weights += weight_bytes(m, copies)
    reason = check_fits(cfg, n_ctx, weights, per_vocab_token * cfg.n_vocab)
    if reason:
        raise CliError(reason)
