"""Re-planning time after an edit (what the GUI pays per keystroke), median of many runs.

    .venv/bin/python bench/bench_plan.py [--runs 200]

Targets: < 10 ms on the 579-tensor Qwen3-30B-A3B skeleton, < 30 ms on the ~1,150-tensor
DeepSeek-V3 skeleton. Each run edits the recipe (a new regex text or a new type) and re-plans
the whole model, lint included; compiled regexes and per-model match sets are cached.
"""

from __future__ import annotations

import argparse
import statistics
import time

from iqk_studio.gguf.skeleton import deepseek_v3, qwen3_30b_a3b
from iqk_studio.recipe import Placement, Recipe, Rule, plan
from iqk_studio.recipe.model import stand_in

BASE_RULES = (
    Rule(r"blk\..*\.attn_.*", "iq4_ks"),
    Rule(r"blk\..*\.ffn_.*_shexp\.weight", "iq4_ks"),
    Rule(r"blk\.[0-2]\.ffn_(gate|up|down)\.weight", "iq4_ks"),
    Rule(r"blk\.[3-5]\.ffn_down_exps\.weight", "iq4_ks"),
    Rule(r"blk\..*\.ffn_down_exps\.weight", "iq3_k"),
    Rule(r"blk\..*\.ffn_(gate|up)_exps\.weight", "iq2_ks"),
    Rule(r"token_embd\.weight", "iq4_k"),
    Rule(r"output\.weight", "iq6_k"),
)
TYPES = ("iq2_ks", "iq3_k", "iq4_ks", "iq2_kl", "iq3_ks")


def edits(n: int):
    """n recipes, each one edit away from the previous: new layer ranges and new types."""
    for k in range(n):
        rules = list(BASE_RULES)
        lo = k % 40
        rules[3] = Rule(rf"blk\.({lo}|{lo + 1}|{lo + 2}{k % 10})\.ffn_down_exps\.weight", "iq4_ks")
        rules[5] = Rule(rules[5].pattern, TYPES[k % len(TYPES)])
        yield Recipe("IQ4_KS", rules=tuple(rules), placement=(Placement("exps", "CPU"),))


def bench(name: str, model, runs: int) -> float:
    """Median wall time and median CPU time (thread_time: robust when other processes share
    the cores) of a re-plan; returns the CPU median in ms."""
    plan(model, Recipe("IQ4_KS", rules=BASE_RULES))  # first open: per-model facts, warm caches
    wall, cpu = [], []
    for r in edits(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        p = plan(model, r)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)
    w, c = statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3
    print(f"{name:<16} {len(p.entries):>5} tensors  re-plan median {w:6.2f} ms wall, "
          f"{c:6.2f} ms CPU  (p90 wall {sorted(wall)[int(0.9 * len(wall))] * 1e3:6.2f} ms, "
          f"{runs} edits)  last plan {p.gib:.2f} GiB")
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    q = bench("Qwen3-30B-A3B", stand_in(*qwen3_30b_a3b()[:2]), args.runs)
    d = bench("DeepSeek-V3", stand_in(*deepseek_v3()[:2]), args.runs)
    ok = {True: "ok", False: "MISSED"}
    print(f"targets: < 10 ms ({ok[q < 10]}), < 30 ms ({ok[d < 30]})")


if __name__ == "__main__":
    main()
