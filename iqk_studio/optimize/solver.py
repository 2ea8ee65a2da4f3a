"""The multiple-choice knapsack of a mix: one choice per group (a type for its tensors), each with
bytes per device and a predicted cost; minimise the summed cost under byte budgets. Exact dynamic
programming over bytes rounded up to a fine unit (never over budget), Lagrangian as a check."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Choice:
    key: str  # what the group gets (a type name, or "q5_0+q4_K" when its tensors differ)
    bytes: int
    cost: float


@dataclass(frozen=True)
class Group:
    label: str
    device: str  # the budget it counts against ("all" for a single total budget)
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class Solution:
    picks: dict  # group label -> Choice
    cost: float
    bytes_by_device: dict

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_device.values())


class Infeasible(ValueError):
    """Even the smallest choice of every group exceeds a budget (message says by how much)."""


def _hull_pareto(choices: tuple[Choice, ...]) -> list[Choice]:
    """Choices not dominated (fewer-or-equal bytes and lower-or-equal cost), by bytes."""
    out: list[Choice] = []
    for c in sorted(choices, key=lambda c: (c.bytes, c.cost)):
        if not out or c.cost < out[-1].cost:
            out.append(c)
    return out


def solve_one(groups: list[Group], budget: int, steps: int = 1 << 15) -> tuple[dict, float, int]:
    """Minimum-cost picks of groups under one byte budget; (picks, cost, bytes).
    DP over bytes in units of ceil(room/steps); a choice's bytes are rounded up, so the picks
    always fit the exact budget (the optimum of a slightly smaller problem: up to len(groups)
    units are lost), then moves of one or two groups with exact bytes take back what the
    rounding lost."""
    gs = [(g, _hull_pareto(g.choices)) for g in groups]
    low = sum(cs[0].bytes for _, cs in gs)
    if low > budget:
        raise Infeasible(f"the smallest allowed types need {low} bytes, {low - budget} more than "
                         "the budget")
    if not gs:
        return {}, 0.0, 0
    base = low  # DP over bytes above the minimum
    room = budget - base
    unit = max(1, -(-room // steps))
    n = room // unit + 1
    inf = np.inf
    best = np.full(n, inf)
    best[0] = 0.0
    back = []
    for _, cs in gs:
        new = np.full(n, inf)
        arg = np.full(n, -1, np.int32)
        b0 = cs[0].bytes
        for k, c in enumerate(cs):
            w = -(-(c.bytes - b0) // unit)
            if w >= n:
                continue
            cand = np.full(n, inf)
            cand[w:] = best[:n - w] + c.cost
            better = cand < new
            new[better] = cand[better]
            arg[better] = k
        back.append(arg)
        best = new
    j = int(np.argmin(best))
    picks = {}
    for (g, cs), arg in zip(reversed(gs), reversed(back)):
        k = int(arg[j])
        c = cs[k]
        picks[g.label] = c
        j -= -(-(c.bytes - cs[0].bytes) // unit)
    if unit > 1:
        picks = improve(gs, picks, budget)
    return picks, sum(c.cost for c in picks.values()), sum(c.bytes for c in picks.values())


def improve(gs, picks: dict, budget: int) -> dict:
    """Best single-group change or two-group exchange that fits the exact budget and lowers the
    cost, repeated until none does (cost ties go to fewer bytes)."""
    picks = dict(picks)
    used = sum(c.bytes for c in picks.values())
    moves = [(g.label, c) for g, cs in gs for c in cs]
    for _ in range(10 * len(gs) + 10):
        best = (0.0, 0, None)  # (cost change, bytes change, moves)
        for i, (la, ca) in enumerate(moves):
            a = picks[la]
            da, ba = ca.cost - a.cost, ca.bytes - a.bytes
            if ca is a:
                continue
            if used + ba <= budget and (da, ba) < best[:2]:
                best = (da, ba, ((la, ca),))
            if da >= 0 and ba >= 0:
                continue
            for lb, cb in moves[i + 1:]:
                if lb == la:
                    continue
                b = picks[lb]
                d, bb = da + cb.cost - b.cost, ba + cb.bytes - b.bytes
                if used + bb <= budget and (d, bb) < best[:2] and d < -1e-15:
                    best = (d, bb, ((la, ca), (lb, cb)))
        if best[2] is None or best[0] > -1e-15:
            break
        for label, c in best[2]:
            picks[label] = c
        used += best[1]
    return picks


def solve(groups: list[Group], budgets: dict[str, int], fixed: dict[str, int] | None = None,
          steps: int = 8192) -> Solution:
    """Picks under a budget per device (groups of a device only count against its budget);
    fixed: bytes that no choice changes (never-quantized tensors), per device."""
    fixed = dict(fixed or {})
    picks, cost, by_dev = {}, 0.0, {}
    for dev in sorted({g.device for g in groups} | set(budgets)):
        if dev not in budgets:
            raise ValueError(f"no budget for device {dev}")
        mine = [g for g in groups if g.device == dev]
        room = budgets[dev] - fixed.get(dev, 0)
        try:
            p, c, b = solve_one(mine, room, steps)
        except Infeasible as e:
            where = "" if dev == "all" else f" on {dev}"
            raise Infeasible(f"budget too small{where}: {e}") from None
        picks.update(p)
        cost += c
        by_dev[dev] = b + fixed.get(dev, 0)
    return Solution(picks, cost, by_dev)


def lagrangian(groups: list[Group], budget: int) -> tuple[dict, float, int]:
    """Lagrangian relaxation with a greedy fill: the convex-hull solution (a bound and a second
    opinion on the DP; equal to it when the budget falls on a hull vertex)."""
    hulls = [(g, _hull_pareto(g.choices)) for g in groups]
    lo, hi = 0.0, 1.0
    total = lambda lam: sum(min(cs, key=lambda c: c.cost + lam * c.bytes).bytes  # noqa: E731
                            for _, cs in hulls)
    if sum(cs[0].bytes for _, cs in hulls) > budget:
        raise Infeasible("budget below the smallest choices")
    while total(hi) > budget:
        hi *= 4
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) > budget else (lo, mid)
    picks = {g.label: min(cs, key=lambda c: c.cost + hi * c.bytes) for g, cs in hulls}
    used = sum(c.bytes for c in picks.values())
    while True:  # greedy: the best cost drop per extra byte that still fits
        best = None
        for g, cs in hulls:
            cur = picks[g.label]
            for c in cs:
                extra = c.bytes - cur.bytes
                if extra > 0 and used + extra <= budget and c.cost < cur.cost:
                    r = (cur.cost - c.cost) / extra
                    if best is None or r > best[0]:
                        best = (r, g.label, c, extra)
        if best is None:
            break
        _, label, c, extra = best
        picks[label] = c
        used += extra
    return picks, sum(c.cost for c in picks.values()), used
