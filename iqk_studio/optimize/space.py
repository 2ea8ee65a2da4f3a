"""What the optimizer may choose: tensor groups (a role in a layer; ffn_gate and ffn_up of a layer
together), and per group the types it can really take, with exact bytes from plan() (fallbacks
and row meta included); bytes of tensors no rule can change are fixed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from iqk_studio.quant.types import BY_NAME
from iqk_studio.recipe.plan import plan
from iqk_studio.recipe.records import Recipe, Rule

# roles that must share a type within a layer -> the group's role name
TIED = {"ffn_gate": "ffn_gate_up", "ffn_up": "ffn_gate_up",
        "ffn_gate_exps": "ffn_gate_up_exps", "ffn_up_exps": "ffn_gate_up_exps"}
_BLK = re.compile(r"^blk\.(\d+)\.(.+?)(\.weight)?$")
DEFAULT_TYPES = ("q2_K", "q3_K", "iq4_xs", "q4_0", "q4_K", "q5_0", "q5_K", "q6_K", "q8_0")


def group_of(name: str) -> str:
    """blk.3.ffn_up.weight -> blk.3.ffn_gate_up; blk.3.attn_v.weight -> blk.3.attn_v;
    token_embd.weight -> token_embd."""
    m = _BLK.match(name)
    if m:
        return f"blk.{m.group(1)}.{TIED.get(m.group(2), m.group(2))}"
    return name[:-len(".weight")] if name.endswith(".weight") else name


def layer_of(group: str) -> int | None:
    m = re.match(r"^blk\.(\d+)\.", group)
    return int(m.group(1)) if m else None


def device_class(device: str) -> str:
    """Budgets are GPU or CPU: everything not placed on the CPU counts as GPU (as Plan does)."""
    return "CPU" if device == "CPU" else "GPU"


@dataclass(frozen=True)
class Option:
    key: str  # the effective type ("q5_0"), or "q5_0+q6_K" when the tensors' types differ
    types: tuple[str, ...]  # per tensor of the group (same order as Space.groups[label])
    bytes: int


@dataclass(frozen=True)
class Space:
    template: Recipe  # base, imatrix, placement, flags of the recipe to write
    groups: dict  # label -> tuple of tensor names
    options: dict  # label -> tuple[Option, ...] (distinct, by bytes)
    devices: dict  # label -> "GPU" | "CPU"
    sources: dict  # tensor name -> source type
    fixed: dict  # device -> bytes of tensors no rule changes
    n_elements: int

    def option(self, label: str, key: str) -> Option:
        for o in self.options[label]:
            if o.key == key:
                return o
        raise KeyError(f"{label} has no option {key}")


def build_space(model_like, types=DEFAULT_TYPES, template: Recipe | None = None,
                imatrix_names=None) -> Space:
    """Groups and options over the requested types. A type a tensor cannot take becomes what
    llama-quantize would write instead (plan() decides); a type that llama-quantize would refuse
    there (block size, very low bits without an imatrix) is no option for that tensor."""
    template = template or Recipe(base="Q8_0")
    bad = [t for t in types if t not in BY_NAME]
    if bad:
        raise ValueError(f"unknown type {bad[0]!r} (types are spelled as llama-quantize does, "
                         "e.g. q4_K, iq4_xs)")
    per_tensor: dict[str, dict[str, int]] = {}  # name -> effective type -> bytes
    entries = None
    for t in types:
        pl = plan(model_like, template.with_(rules=(Rule(".", t),)), imatrix_names)
        entries = pl.entries
        for e in pl.entries:
            if e.rule_index == 0 and not e.warnings:
                per_tensor.setdefault(e.name, {})[e.type] = e.bytes
    groups: dict[str, list[str]] = {}
    devices: dict[str, str] = {}
    sources, fixed = {}, {}
    for e in entries:
        sources[e.name] = e.source_type
        if e.rule_index != 0:  # no rule reaches it: never quantized, or a router, ...
            dev = device_class(e.device)
            fixed[dev] = fixed.get(dev, 0) + e.bytes
            continue
        if e.name not in per_tensor:
            raise ValueError(f"{e.name} can take none of the types {', '.join(types)} "
                             "(block size, or very low bits without an imatrix)")
        label = group_of(e.name)
        dev = device_class(e.device)
        if label in devices and devices[label] != dev:  # split over devices: one group each
            label = f"{label}@{dev}"
        devices[label] = dev
        groups.setdefault(label, []).append(e.name)
    options = {}
    for label, names in groups.items():
        seen = {}
        common = set.intersection(*(set(per_tensor[n]) for n in names))
        for t in common:
            seen[t] = Option(t, tuple(t for _ in names), sum(per_tensor[n][t] for n in names))
        if not seen:
            raise ValueError(f"the tensors of {label} share none of the types {', '.join(types)}")
        options[label] = tuple(sorted(seen.values(), key=lambda o: (o.bytes, o.key)))
    return Space(template, {k: tuple(v) for k, v in groups.items()}, options, devices, sources,
                 fixed, sum(e.n_elements for e in entries))


def assignment(space: Space, picks: dict) -> dict[str, str]:
    """Tensor name -> type for picks (group label -> option key)."""
    out = {}
    for label, key in picks.items():
        opt = space.option(label, key)
        out.update(zip(space.groups[label], opt.types))
    return out
