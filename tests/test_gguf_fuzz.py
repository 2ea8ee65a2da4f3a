"""The GGUF header fuzzer (tests/gguf_fuzz.py) in a child process: seeded, bounded by case count
and time, ten mutation classes through inspect, plan and the forward pass's config/vocabulary
reads. Fails on any exception other than the project's error classes, on a long or unnamed
message, and when the child's peak RSS grows more than the caps allow (no 10 GiB allocations)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).with_name("gguf_fuzz.py")
RSS_CEILING = 384 << 20  # one 64 MiB string read three times (file pages, bytes, str) + slack


def run_fuzz(tmp_path, seed: int, cases: int, seconds: float, real: Path | None) -> dict:
    cmd = [sys.executable, str(FUZZ), "--seed", str(seed), "--cases", str(cases),
           "--seconds", str(seconds), "--dir", str(tmp_path)]
    if real is not None:
        cmd += ["--real", str(real)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\nfuzz seed {seed}: {result['cases']} cases in {result['seconds']} s, "
          f"{result['n_failures']} failures, peak RSS +"
          f"{(result['rss_peak'] - result['rss_base']) / 2**20:.0f} MiB")
    for cls, outcomes in result["by_class"].items():
        print(f"  {cls:<10} {outcomes}")
    return result


def check(result: dict, min_cases: int) -> None:
    assert result["n_failures"] == 0, json.dumps(result["failures"][:5], indent=1)
    assert result["cases"] >= min_cases
    assert result["rss_peak"] - result["rss_base"] < RSS_CEILING
    by = result["by_class"]
    n = {cls: sum(o.values()) for cls, o in by.items()}
    assert min(n.values()) >= min_cases // 10 - 1  # every class ran
    # both outcomes were exercised where both exist: the fuzzer is not only breaking files
    for cls in ("bytes", "truncate", "dims", "offsets", "alignment", "type_ids", "confusion",
                "utf8"):
        assert by[cls].get("accepted", 0) > 0 and len(by[cls]) > 1, (cls, by[cls])
    assert by["confusion"].get("refused: MetadataError", 0) > 0


def real_file():
    from conftest import SHARED

    p = SHARED / "refs" / "quant" / "out" / "iq4_ks.gguf"
    return p if p.exists() else None


def test_fuzz_headers(tmp_path):
    check(run_fuzz(tmp_path, seed=20251207, cases=3000, seconds=20, real=real_file()),
          min_cases=500)


@pytest.mark.slow
def test_fuzz_headers_long(tmp_path):
    check(run_fuzz(tmp_path, seed=8, cases=100_000, seconds=900, real=real_file()),
          min_cases=20_000)
