"""Finding the user's llama.cpp / ik_llama.cpp tools (a given path, a build folder, PATH) and
telling which flavour and build they are from `--version`, `--help` and their log header."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("llama-perplexity", "llama-quantize", "llama-imatrix")
ENV_BIN = "IQK_LLAMA_BIN"  # a build folder to look in when no path is given
# where binaries sit inside a build or install folder
_SUBDIRS = ("", "bin", "build/bin", "build/bin/Release", "build/bin/Debug", "bin/Release")
# options only ik_llama.cpp has (in `--help` of its tools)
_IK_HELP = ("--custom-q", "-fmoe", "--fused-moe", "-rtr", "--run-time-repack", "-mla",
            "--mla-use", "-amb")
_LLAMA_HELP = ("--model", "--tensor-type", "--allow-requantize", "--ctx-size")


class BinaryNotFound(FileNotFoundError):
    """No usable binary: the message says where we looked."""


@dataclass(frozen=True)
class Binary:
    path: Path
    tool: str  # llama-perplexity | llama-quantize | llama-imatrix
    flavour: str | None = None  # "ik_llama.cpp" | "llama.cpp" | None (unknown)
    build: int | None = None
    commit: str | None = None
    compiler: str | None = None

    @property
    def version(self) -> str:
        """`build 4840 (8337e4cd3)`, or "" when unknown."""
        if self.build is None and self.commit is None:
            return ""
        return f"build {self.build} ({self.commit})"

    @property
    def engine(self) -> str:
        return self.flavour or "llama.cpp (flavour unknown)"


def _exe_names(tool: str) -> tuple[str, ...]:
    return (tool + ".exe", tool) if os.name == "nt" else (tool,)


def _usable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def locate(tool: str, where: str | os.PathLike | None = None) -> Path:
    """The binary for `tool`: `where` is a file, a build/install folder, or a bare command name
    looked up on PATH; without it, the folder in $IQK_LLAMA_BIN, then PATH."""
    tried: list[str] = []
    if where is not None and str(where) != "":
        p = Path(os.path.expanduser(str(where)))
        if p.is_dir():
            hit = _in_folder(tool, p, tried)
            if hit:
                return hit
            raise BinaryNotFound(f"no {tool} in {p} (looked in {', '.join(tried)})")
        if p.exists():
            if not _usable(p):
                raise BinaryNotFound(f"{p} is not an executable file")
            return p.resolve()
        if os.sep not in str(where) and (found := shutil.which(str(where))):
            return Path(found).resolve()
        raise BinaryNotFound(f"{where}: no such file, folder or command")
    env = os.environ.get(ENV_BIN)
    if env:
        hit = _in_folder(tool, Path(env), tried)
        if hit:
            return hit
    for name in _exe_names(tool):
        found = shutil.which(name)
        if found:
            return Path(found).resolve()
    tried.append("PATH")
    raise BinaryNotFound(f"{tool} not found (looked in {', '.join(tried)}); give its path or "
                         f"build folder, or set {ENV_BIN}")


def _in_folder(tool: str, folder: Path, tried: list[str]) -> Path | None:
    for sub in _SUBDIRS:
        d = folder / sub if sub else folder
        for name in _exe_names(tool):
            if _usable(d / name):
                return (d / name).resolve()
        tried.append(str(d))
    return None


def _run_text(argv: list[str], timeout: float) -> str:
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (r.stdout + b"\n" + r.stderr).decode("utf-8", "replace")


def parse_version(text: str) -> dict:
    """build, commit, compiler from `--version` output or a log header (either flavour)."""
    out: dict = {}
    m = re.search(r"(?:^|\n)(?:version: |\w+: build = |build: )(\d+) \((\w+)\)", text)
    if m:
        out.update(build=int(m.group(1)), commit=m.group(2))
    m = re.search(r"built with (.+?) for \S+", text) or re.search(
        r"\n?build: \d+ \(\w+\) with (.+?) for \S+", text)
    if m:
        out["compiler"] = m.group(1)
    return out


def flavour_from_help(text: str) -> str | None:
    words = set(re.findall(r"(?<![\w-])--?[\w-]+", text))
    if any(o in words for o in _IK_HELP):
        return "ik_llama.cpp"
    if any(o in words for o in _LLAMA_HELP):  # a llama.cpp tool without ik's options
        return "llama.cpp"
    return None


def detect(tool: str, where=None, timeout: float = 20.0) -> Binary:
    """Locate `tool` and ask it its build (`--version`) and flavour (`--help`). llama-quantize
    has no --version: its build comes from the run's log header (see with_log)."""
    path = locate(tool, where)
    info: dict = {}
    if tool != "llama-quantize":
        info = parse_version(_run_text([str(path), "--version"], timeout))
    flavour = flavour_from_help(_run_text([str(path), "--help"], timeout))
    return Binary(path, tool, flavour, info.get("build"), info.get("commit"),
                  info.get("compiler"))


def with_log(b: Binary, facts: dict) -> Binary:
    """Fill what detection left unknown from the facts a log header stated."""
    from dataclasses import replace

    return replace(b, flavour=b.flavour or facts.get("flavour"),
                   build=b.build if b.build is not None else facts.get("build"),
                   commit=b.commit or facts.get("commit"),
                   compiler=b.compiler or facts.get("compiler"))
