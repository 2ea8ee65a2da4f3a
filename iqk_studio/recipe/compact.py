"""A per-tensor type assignment as a short, readable list of `--custom-q` rules: per role a
default rule and, before it, exceptions over layer ranges (`blk\\.(1[0-9]|2[0-3])\\.`); roles
with identical layer maps share one rule (`\\.ffn_(gate|up)\\.weight`)."""

from __future__ import annotations

import re
from collections import Counter

from iqk_studio.recipe.records import Rule

_BLK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _digits_range(lo: str, hi: str) -> list[str]:
    """Patterns for the integers lo..hi written with the same number of digits."""
    if lo == hi:
        return [lo]
    if len(lo) == 1:
        return [f"[{lo}-{hi}]" if int(hi) > int(lo) + 1 else f"[{lo}{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + p for p in _digits_range(lo[1:], hi[1:])]
    n = len(lo) - 1
    out = []
    a, b = lo[0], hi[0]
    if lo[1:] != "0" * n:  # the partial first decade
        out += [a + p for p in _digits_range(lo[1:], "9" * n)]
        a = str(int(a) + 1)
    tail_full = hi[1:] == "9" * n
    last = hi[0] if tail_full else str(int(hi[0]) - 1)
    if int(last) >= int(a):
        head = a if a == last else f"[{a}-{last}]" if int(last) > int(a) + 1 else f"[{a}{last}]"
        out.append(head + "[0-9]" * n)
    if not tail_full:
        out += [b + p for p in _digits_range("0" * n, hi[1:])]
    return out


def int_range_regex(lo: int, hi: int) -> list[str]:
    """Alternatives that match exactly the decimal integers lo..hi (no leading zeros)."""
    out = []
    while lo <= hi:
        top = min(hi, 10 ** len(str(lo)) - 1)
        out += _digits_range(str(lo), str(top))
        lo = top + 1
    return out


def int_set_regex(values) -> str:
    """A regex (alternation in parentheses when needed) matching exactly these integers."""
    vals = sorted(set(int(v) for v in values))
    if not vals:
        raise ValueError("empty set")
    alts, start = [], vals[0]
    for prev, cur in zip(vals, vals[1:] + [None]):
        if cur is None or cur != prev + 1:
            alts += int_range_regex(start, prev)
            start = cur
    return alts[0] if len(alts) == 1 else "(" + "|".join(alts) + ")"


def _roles_regex(roles: list[str]) -> str:
    """`\\.(attn_q|attn_k)\\.weight` style; a common prefix is factored (`ffn_(gate|up)`)."""
    stems = [r[:-len(".weight")] if r.endswith(".weight") else r for r in roles]
    suffix = ".weight" if all(r.endswith(".weight") for r in roles) else ""
    if not suffix:
        stems = list(roles)
    if len(stems) == 1:
        body = re.escape(stems[0])
    else:
        pre = _common_prefix(stems)
        pre = pre[:pre.rfind("_") + 1] if "_" in pre else ""
        body = re.escape(pre) + "(" + "|".join(re.escape(s[len(pre):]) for s in stems) + ")"
    return r"\." + body + re.escape(suffix)


def _common_prefix(words: list[str]) -> str:
    p = words[0]
    for w in words[1:]:
        while not w.startswith(p):
            p = p[:-1]
    return p


def compact_rules(types: dict[str, str]) -> tuple[Rule, ...]:
    """Rules under which every named tensor gets its type (first match wins). Names outside
    blk.N get anchored rules; a role's most common type is its default rule, placed after the
    layer-range exceptions. Rules never match a tensor outside `types` with the same role
    suffix only if that tensor is not a candidate (the caller checks with plan())."""
    by_role: dict[str, dict[int, str]] = {}
    single: dict[str, str] = {}
    for name, t in types.items():
        m = _BLK.match(name)
        if m:
            by_role.setdefault(m.group(2), {})[int(m.group(1))] = t
        else:
            single[name] = t
    # roles with the same layer -> type map share their rules
    shared: dict[tuple, list[str]] = {}
    for r, lmap in sorted(by_role.items()):
        shared.setdefault(tuple(sorted(lmap.items())), []).append(r)
    exceptions, defaults = [], []
    for lmap_items, roles in shared.items():
        lmap = dict(lmap_items)
        counts = Counter(lmap.values())
        default = max(counts, key=lambda t: (counts[t], t))
        rx = _roles_regex(roles)
        by_type: dict[str, list[int]] = {}
        for layer, t in lmap.items():
            if t != default:
                by_type.setdefault(t, []).append(layer)
        for t, layers in sorted(by_type.items()):
            exceptions.append(Rule(rf"blk\.{int_set_regex(layers)}{rx}", t))
        defaults.append((default, roles))
    # role defaults of the same type share one rule
    merged: dict[str, list[str]] = {}
    for t, roles in defaults:
        merged.setdefault(t, []).extend(roles)
    out = [Rule("^" + re.escape(n) + "$", t) for n, t in sorted(single.items())]
    out += exceptions
    out += [Rule(_roles_regex(sorted(roles)), t) for t, roles in sorted(merged.items())]
    return tuple(out)
