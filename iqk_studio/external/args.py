"""llama-quantize options realising a recipe, in the dialect of the binary's flavour: ik_llama.cpp's
`--custom-q`, mainline's `--tensor-type` (or one `--tensor-type-file` when the list is long)."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

from iqk_studio.recipe.cmdline import export_ik, export_mainline

# more rules than this (or a longer option text) go to a --tensor-type-file for mainline
TYPE_FILE_RULES = 16
TYPE_FILE_CHARS = 2000


def _options(cmd: str) -> list[str]:
    """The options of an exported command line: without the program and IN OUT TYPE."""
    return shlex.split(cmd)[1:-3]


def quantize_args(recipe, flavour: str | None, workdir=None) -> tuple[list[str], Path | None]:
    """(options, type file written or None). The caller removes the type file when done.
    ValueError when the recipe cannot be said in that dialect (ik-only types for mainline...)."""
    if flavour != "llama.cpp":  # ik_llama.cpp, or unknown: the fork this app is made for
        return _options(export_ik(recipe, "IN", "OUT", multiline=False)), None
    cmd, lints = export_mainline(recipe, "IN", "OUT", multiline=False)
    errors = [lint for lint in lints if lint.severity == "error"]
    if errors:
        e = errors[0]
        raise ValueError(f"mainline llama-quantize cannot do this recipe: {e.message}"
                         + (f" [{e.where}]" if e.where else ""))
    opts = _options(cmd)
    pairs = [opts[k + 1] for k in range(len(opts) - 1) if opts[k] == "--tensor-type"]
    if len(pairs) <= TYPE_FILE_RULES and sum(map(len, pairs)) <= TYPE_FILE_CHARS:
        return opts, None
    if any(c.isspace() for p in pairs for c in p):
        return opts, None  # a type file is split at whitespace: keep the options
    rest, k = [], 0
    while k < len(opts):
        if opts[k] == "--tensor-type":
            k += 2
            continue
        rest.append(opts[k])
        k += 1
    fd, name = tempfile.mkstemp(prefix="iqk-tensor-types-", suffix=".txt", dir=workdir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(pairs) + "\n")
    return rest + ["--tensor-type-file", name], Path(name)
