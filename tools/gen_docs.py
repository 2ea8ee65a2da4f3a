"""Generate the reference docs from the code, so they cannot drift: docs/CLI.md from the argparse
parsers of `iqk-studio-cli` and `iqk-studio`, and docs/types/ (a page per quant-type family with
each type's bpw, block and bytes, and PNG pictures of the value grids) from the type table
(gguf/types.py), the kernel index (quant/registry.py) and the grids (quant/grids.py).

    .venv/bin/python tools/gen_docs.py           # write them
    .venv/bin/python tools/gen_docs.py --check   # exit 1 and name the stale files

tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import cli_doc  # noqa: E402
import types_doc  # noqa: E402

REGENERATE = ".venv/bin/python tools/gen_docs.py"


def outputs() -> dict[Path, bytes]:
    """Every generated file (path under the repo -> its bytes)."""
    out = {ROOT / "docs" / "CLI.md": cli_doc.markdown().encode()}
    out.update({ROOT / "docs" / "types" / name: data
                for name, data in types_doc.pages().items()})
    return out


def stale() -> list[str]:
    """Generated files that are missing or differ from what the code gives now (PNGs compared
    by pixels, so another zlib's bytes do not count)."""
    bad = []
    for path, data in outputs().items():
        if not path.is_file():
            bad.append(str(path.relative_to(ROOT)))
        elif path.suffix == ".png":
            if not types_doc.same_pixels(path.read_bytes(), data):
                bad.append(str(path.relative_to(ROOT)))
        elif path.read_bytes() != data:
            bad.append(str(path.relative_to(ROOT)))
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say which files are stale")
    args = ap.parse_args()
    if args.check:
        bad = stale()
        for b in bad:
            print(f"stale: {b}")
        return 1 if bad else 0
    for path, data in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)} ({len(data) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
