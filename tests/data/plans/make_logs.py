"""Make the `llama-quantize --dry-run` logs of tests/dry_run_cases.py with an ik_llama.cpp build
(commit 8337e4cd3): for each case, a header-only skeleton of its model (gguf/skeleton.py), then

    llama-quantize --dry-run [OPTIONS] MODEL.gguf out.gguf FTYPE > CASE.log 2>&1

run in a scratch folder (so the logged paths are MODEL.gguf / imatrix.dat). The logs are gzipped.
Usage: python tests/data/plans/make_logs.py /path/to/llama-quantize [CASE ...]
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/

import numpy as np  # noqa: E402
from dry_run_cases import CASES, IMATRIX, MODELS  # noqa: E402

from iqk_studio.gguf.imatrix import Imatrix, save_imatrix_dat  # noqa: E402
from iqk_studio.gguf.skeleton import build_skeleton  # noqa: E402
from iqk_studio.gguf.values import ValueType  # noqa: E402


def main(quantize: str, names: list[str]) -> None:
    for name in names or sorted(CASES):
        case = CASES[name]
        tensors, md = MODELS[case.model]()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            floats = {k: (ValueType.FLOAT32, None) for k, v in md.items() if isinstance(v, float)}
            build_skeleton(tmp / "model.gguf", tensors, md, floats)
            if IMATRIX in case.options:
                values = {n: np.ones(s[0] * (s[2] if len(s) > 2 else 1), np.float32)
                          for n, s, _ in tensors if len(s) >= 2}
                save_imatrix_dat(tmp / IMATRIX, Imatrix(values, {n: 1 for n in values}))
            argv = [quantize, "--dry-run", *case.options, "model.gguf", "out.gguf", case.ftype]
            r = subprocess.run(argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        log = r.stdout
        with gzip.open(HERE / f"{name}.log.gz", "wt") as f:
            f.write(f"# {' '.join(['llama-quantize', *argv[1:]])}  (exit {r.returncode})\n")
            f.write(log)
        print(name, r.returncode, len(log))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
