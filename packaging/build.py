"""Build the one-folder desktop app with PyInstaller and smoke-test the frozen programs offscreen.

    .venv/bin/pip install -e '.[package]'
    .venv/bin/python packaging/build.py [--skip-build] [--dist DIR]

Writes DIR/iqk-studio/ (default dist/): `iqk-studio` (the window), `iqk-studio-cli`, their shared
`_internal/`, and the desktop entry, icon and install-desktop.sh. Then, with QT_QPA_PLATFORM=
offscreen and a numba cache of its own (empty at first): `iqk-studio --self-test` twice (the first
start compiles the kernels, the second must load every one from the cache and rewrite nothing),
the frozen CLI on the same tiny model (plan, two chunks of perplexity, quantize one tensor), and,
when ../shared is there, two chunks of tiny-qwen2 against ik_llama.cpp's log. Prints the build's
size and the start-up times (frozen, and the source install as the baseline). Exit status 0 when
every check passes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_TINY = ROOT.parent / "shared" / "refs" / "ppl" / "tiny"
SHARED_TEXT = ROOT.parent / "shared" / "data" / "wiki.test.raw"


def build(dist: Path, work: Path) -> Path:
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise SystemExit("build: PyInstaller is missing: .venv/bin/pip install -e '.[package]'") from None
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level",
                    "WARN", "--distpath", str(dist), "--workpath", str(work),
                    str(HERE / "iqk-studio.spec")], check=True, cwd=ROOT)
    app = dist / "iqk-studio"
    for f in ("iqk-studio.desktop", "install-desktop.sh", "iqk-studio-mime.xml"):
        shutil.copy2(HERE / f, app / f)
    shutil.copy2(ROOT / "resources" / "icons" / "iqk-studio.png", app / "iqk-studio.png")
    print(f"build: {app} in {time.monotonic() - t0:.0f} s")
    return app


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


class Check:
    def __init__(self):
        self.failures: list[str] = []

    def __call__(self, ok: bool, what: str) -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)
        return ok


def run_timed(cmd: list[str], env: dict) -> tuple[int, list[str], float, float]:
    """(exit status, output lines, seconds to the first line, seconds in all)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, first = [], None
    for line in p.stdout:
        if first is None:
            first = time.monotonic() - t0
        lines.append(line.rstrip("\n"))
    rc = p.wait()
    return rc, lines, first or 0.0, time.monotonic() - t0


def cache_state(cache: Path) -> dict[str, int]:
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*")
            if p.is_file()}


def self_test(exe: Path, env: dict, work: Path, check: Check, label: str):
    rc, lines, first, total = run_timed([str(exe), "--self-test", str(work)], env)
    for ln in lines:
        print(f"    {ln}")
    check(rc == 0, f"{label}: iqk-studio --self-test exit status {rc}")
    return first, total, "\n".join(lines)


def smoke(app: Path, check: Check) -> dict:
    gui, cli = app / "iqk-studio", app / "iqk-studio-cli"
    tmp = Path(tempfile.mkdtemp(prefix="iqk-studio-smoke-"))
    cache = tmp / "cache"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CACHE_HOME": str(cache),
           "IQK_STUDIO_DATA": str(tmp / "data")}
    env.pop("NUMBA_CACHE_DIR", None)
    figures = {}
    try:
        print("smoke: first start (empty numba cache)")
        f1, t1, out1 = self_test(gui, env, tmp / "w1", check, "first start")
        m = re.search(r"numba cache: (\S+)", out1)
        where = Path(m.group(1)) if m else None
        check(where is not None and cache / "iqk-studio" / "numba" in where.parents,
              f"the frozen app's numba cache is {where} (under $XDG_CACHE_HOME/iqk-studio/numba)")
        before = cache_state(cache)
        check(sum(k.endswith(".nbi") for k in before) > 0, f"{len(before)} cache files written")
        print("smoke: second start (the cache of the first)")
        f2, t2, _ = self_test(gui, env, tmp / "w2", check, "second start")
        after = cache_state(cache)
        changed = [k for k in after if before.get(k) != after[k]]
        check(not changed, f"second start loaded every kernel from the cache "
              f"({len(changed)} cache files written or rewritten: {changed[:3]})")
        figures.update(first_start=f1, first_total=t1, second_start=f2, second_total=t2)

        print("smoke: the frozen command line")
        model, text = tmp / "w1" / "tiny.gguf", tmp / "w1" / "tiny.txt"
        recipe = tmp / "one.recipe"
        recipe.write_text("@base Q8_0\nblk\\.0\\.ffn_down\\.weight=q8_0\n.*=f32\n")
        for args, want in (
                (["--help"], "perplexity"),
                (["plan", str(model), "--recipe", str(recipe)], "465152 bytes"),
                (["perplexity", str(model), "-f", str(text), "-c", "128", "--chunks", "2",
                  "--no-store"], "PPL over 2 chunks"),
                (["quantize", str(model), str(tmp / "q.gguf"), "Q8_0", "--recipe", str(recipe)],
                 "quant size")):
            r = subprocess.run([str(cli), *args], capture_output=True, text=True, env=env)
            tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
            check(r.returncode == 0 and want in r.stdout + r.stderr,
                  f"iqk-studio-cli {args[0]}: exit {r.returncode}, {tail[0][:90]}")
        check((tmp / "q.gguf").is_file() and (tmp / "q.gguf").stat().st_size ==
              (tmp / "w1" / "tiny-q8_0-one.gguf").stat().st_size,
              "the CLI's quantized file has the size of the window's")
        if (SHARED_TINY / "tiny-qwen2.gguf").is_file() and SHARED_TEXT.is_file():
            ref = (SHARED_TINY / "tiny-qwen2.wiki.c512.4chunks.log").read_text()
            want2 = re.findall(r"\[(\d+)\]([\d.]+),", ref)[:2]
            r = subprocess.run([str(cli), "perplexity", str(SHARED_TINY / "tiny-qwen2.gguf"),
                                "-f", str(SHARED_TEXT), "-c", "512", "--chunks", "2",
                                "--no-store"], capture_output=True, text=True, env=env)
            got = re.findall(r"\[(\d+)\]([\d.]+),", r.stdout)[:2]
            ok = len(got) == 2 and all(abs(float(g[1]) / float(w[1]) - 1) < 1e-3
                                       for g, w in zip(got, want2))
            check(ok, f"tiny-qwen2, 2 chunks of 512: {got} vs ik_llama.cpp {want2}")
        else:
            print("  (../shared absent: the tiny-qwen2 comparison is skipped)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def baseline(check: Check) -> tuple[float, float]:
    """The source install's start-up and self-test times, measured the same way (warm cache)."""
    exe = Path(sys.executable).with_name("iqk-studio")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with tempfile.TemporaryDirectory() as d:
        rc, lines, first, total = run_timed([str(exe), "--self-test", d], env)
    check(rc == 0, f"source install: iqk-studio --self-test exit status {rc}")
    return first, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", default=str(ROOT / "dist"))
    ap.add_argument("--work", default=str(ROOT / "build"))
    ap.add_argument("--skip-build", action="store_true", help="smoke-test an existing build")
    args = ap.parse_args()
    dist = Path(args.dist)
    app = dist / "iqk-studio" if args.skip_build else build(dist, Path(args.work))
    check = Check()
    figures = smoke(app, check)
    print("smoke: the source install, as the baseline")
    b_first, b_total = baseline(check)
    print(f"\nbuild size: {size_mb(app):.0f} MB in {sum(1 for _ in app.rglob('*'))} files "
          f"({size_mb(app / '_internal'):.0f} MB in _internal/)")
    if figures:
        print(f"start-up to a shown window: frozen {figures['first_start']:.2f} s (first start, "
              f"empty cache), {figures['second_start']:.2f} s (second); source install "
              f"{b_first:.2f} s (ratio frozen/source {figures['second_start'] / b_first:.2f})")
        print(f"whole self-test: frozen {figures['first_total']:.1f} s first (kernels "
              f"compiled), {figures['second_total']:.1f} s second (cache); source install "
              f"{b_total:.1f} s")
    if check.failures:
        print(f"\nsmoke test FAILED: {len(check.failures)} check(s)")
        return 1
    print("\nsmoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
