"""Solver against brute force on small random instances; compact rules plan to the assignment."""

import itertools
import random
import re

import pytest

from iqk_studio.optimize.solver import Choice, Group, Infeasible, lagrangian, solve, solve_one
from iqk_studio.recipe.compact import compact_rules, int_set_regex


def _brute(groups, budget):
    best = None
    for combo in itertools.product(*(g.choices for g in groups)):
        b = sum(c.bytes for c in combo)
        if b <= budget:
            cost = sum(c.cost for c in combo)
            if best is None or cost < best[0] - 1e-12:
                best = (cost, b)
    return best


def _instance(rng, n_groups):
    groups = []
    for i in range(n_groups):
        size = rng.randint(1000, 5000)
        s = rng.random()
        cs = []
        for bpw in rng.sample([2, 3, 4, 5, 6, 8], rng.randint(2, 4)):
            cs.append(Choice(f"t{bpw}", size * bpw, s * 2.0 ** -bpw * rng.uniform(0.5, 1.5)))
        groups.append(Group(f"g{i}", "all", tuple(cs)))
    return groups


def test_dp_matches_brute_force():
    rng = random.Random(7)
    for _ in range(40):
        groups = _instance(rng, rng.randint(1, 5))
        lo = sum(min(c.bytes for c in g.choices) for g in groups)
        hi = sum(max(c.bytes for c in g.choices) for g in groups)
        budget = rng.randint(lo, hi)
        want = _brute(groups, budget)
        picks, cost, used = solve_one(groups, budget, steps=1 << 16)
        assert used <= budget and used == sum(c.bytes for c in picks.values())
        assert cost == pytest.approx(sum(c.cost for c in picks.values()))
        assert cost == pytest.approx(want[0], rel=1e-9, abs=1e-12)
        lp, lcost, lused = lagrangian(groups, budget)
        assert lused <= budget and lcost >= cost - 1e-12  # DP is exact, the relaxation is not


def test_devices_and_fixed_bytes():
    g = [Group("a", "GPU", (Choice("q4", 400, 1.0), Choice("q8", 800, 0.1))),
         Group("b", "CPU", (Choice("q4", 400, 1.0), Choice("q8", 800, 0.1)))]
    s = solve(g, {"GPU": 1000, "CPU": 1000}, fixed={"GPU": 300})
    assert s.picks["a"].key == "q4" and s.picks["b"].key == "q8"
    assert s.bytes_by_device == {"GPU": 700, "CPU": 800} and s.total_bytes == 1500
    with pytest.raises(Infeasible, match="on GPU"):
        solve(g, {"GPU": 500, "CPU": 1000}, fixed={"GPU": 300})


def test_int_set_regex_exact():
    rng = random.Random(3)
    for k in range(400):
        s = set(rng.sample(range(0, 250), rng.randint(1, 30))) if k % 2 else set(
            range(rng.randint(0, 120), rng.randint(120, 240)))
        rx = re.compile("^" + int_set_regex(s) + "$")
        assert {v for v in range(0, 1100) if rx.match(str(v))} == s
    assert int_set_regex([0, 1, 2, 3, *range(10, 24)]) == "([0-3]|1[0-9]|2[0-3])"


def test_compact_rules_readable():
    t = {f"blk.{i}.{r}.weight": "q4_0" if i in (3, 4, 5, 17) else "q5_0"
         for i in range(18) for r in ("ffn_gate", "ffn_up")}
    t.update({f"blk.{i}.attn_q.weight": "q8_0" for i in range(18)})
    t["token_embd.weight"] = "q6_K"
    rules = [str(r) for r in compact_rules(t)]
    assert rules == [r"^token_embd\.weight$=q6_K", r"blk\.([3-5]|17)\.ffn_(gate|up)\.weight=q4_0",
                     r"\.ffn_(gate|up)\.weight=q5_0", r"\.attn_q\.weight=q8_0"]


def test_rounding_loss_taken_back():
    """A budget that the optimum fills to the byte: rounding every choice up would miss it."""
    rng = random.Random(11)
    for _ in range(30):
        groups = _instance(rng, 5)
        combo = [rng.choice(g.choices) for g in groups]
        budget = sum(c.bytes for c in combo)
        want = _brute(groups, budget)
        picks, cost, used = solve_one(groups, budget, steps=4096)
        assert used <= budget and cost == pytest.approx(want[0], rel=1e-9, abs=1e-12)
