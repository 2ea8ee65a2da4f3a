"""plan() against ik_llama.cpp's own `llama-quantize --dry-run` logs (shared/refs/plans): every
tensor's type and size and the final `quant size` must match."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from iqk_studio.quant.types import BY_NAME
from iqk_studio.recipe import Recipe, Rule, plan

_HEAD = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+) - \[([\d,\s]+)\], type =\s+(\S+), ")
_KV = re.compile(r"- kv\s+\d+:\s+(\S+)\s+(\S+)\s+= (.*)$")


@dataclass(frozen=True)
class Info:
    name: str
    shape: tuple
    type_id: int


@dataclass
class StandIn:
    """What plan() reads from a GGUFModel, rebuilt from a dry-run log."""

    tensors: dict
    metadata: dict


@dataclass(frozen=True)
class Logged:
    name: str
    type: str
    size_mib: str  # as printed: "%.2f" MiB for converted tensors, "%.3f" MB for copies
    converted: bool


def _value(typ: str, text: str):
    if typ.startswith("arr[str,"):
        return [""] * int(typ[len("arr[str,"):-1])
    if typ.startswith("arr["):
        return None
    if typ in ("u32", "i32", "u64", "i64", "u16", "u8", "i8", "i16"):
        return int(text)
    if typ in ("f32", "f64"):
        return float(text)
    if typ == "bool":
        return text.strip() == "true"
    return text.strip()


def parse_log(path):
    """(stand-in model, per-tensor logged results, quant size text)."""
    text = path.read_text()
    meta = {}
    for line in text.splitlines():
        m = _KV.search(line)
        if m:
            meta[m.group(1)] = _value(m.group(2), m.group(3))
    heads = list(_HEAD.finditer(text))
    tensors, logged = {}, []
    for k, m in enumerate(heads):
        seg = text[m.end(): heads[k + 1].start() if k + 1 < len(heads) else len(text)]
        dims = [int(d) for d in m.group(4).split(",")]
        while len(dims) > 1 and dims[-1] == 1:
            dims.pop()
        name, src = m.group(3), m.group(5)
        tensors[name] = Info(name, tuple(dims), BY_NAME[src].id)
        conv = re.search(r"converting to (\S+) \.\. .*?size =\s+[\d.]+ MiB ->\s+([\d.]+) MiB",
                         seg, re.S)
        if conv:
            logged.append(Logged(name, conv.group(1), conv.group(2), True))
        else:
            size = re.match(r"size =\s+([\d.]+) MB", seg.strip())
            logged.append(Logged(name, src, size.group(1), False))
    total = re.search(r"quant size\s+=\s+([\d.]+) MB", text).group(1)
    return StandIn(tensors, meta), logged, total


CASES = {
    "qwen3moe-skeleton_Q4_K_M.log": Recipe("Q4_K_M"),
    "qwen3moe-skeleton_IQ4_KS.log": Recipe("IQ4_KS"),
    "qwen3moe-skeleton_IQ2_KS.log": Recipe("IQ2_KS"),
    "qwen3moe-skeleton_IQ3_K.log": Recipe("IQ3_K"),
    "qwen3moe-skeleton_Q8_0.log": Recipe("Q8_0"),
    "gemma3-270m_Q4_K_M.log": Recipe("Q4_K_M"),
    "gemma3-270m_IQ4_KS.log": Recipe("IQ4_KS"),
    "gemma3-270m_IQ2_K.log": Recipe("IQ2_K"),
    "gemma3-270m_custom1.log": Recipe("iq2_k", rules=(
        Rule("attn", "iq4_ks"), Rule("token_embd.weight", "q4_K"), Rule("output.weight", "q6_K"),
        Rule(r"blk\.[0-5]\.ffn_down", "iq4_ks"), Rule("ffn_down", "iq3_k"), Rule("ffn", "iq2_k"))),
}


@pytest.mark.parametrize("log", sorted(CASES))
def test_plan_matches_dry_run_log(shared, log):
    model, logged, total = parse_log(shared("refs", "plans", log))
    p = plan(model, CASES[log])
    assert [e.name for e in p.entries] == [x.name for x in logged]
    for e, x in zip(p.entries, logged):
        assert e.type == x.type, (e.name, e.reason)
        assert e.quantized == x.converted, e.name
        if x.converted:
            assert f"{e.bytes / 2**20:.2f}" == x.size_mib, e.name
        else:
            assert f"{e.bytes / 2**20:.3f}" == x.size_mib, e.name
    assert f"{p.total_bytes / 2**20:.2f}" == total


def test_log_stand_in_has_the_hparams(shared):
    model, _, _ = parse_log(shared("refs", "plans", "qwen3moe-skeleton_IQ2_KS.log"))
    from iqk_studio.recipe.plan import model_view

    f = model_view(model).facts
    assert (f.n_layer, f.n_head, f.n_head_kv, f.n_expert, f.n_vocab) == (48, 32, 4, 128, 151936)
    assert f.has_output and f.n_attention_wv == 48 and f.n_gqa == 8


def test_custom_log_counts_fallbacks(shared):
    model, logged, _ = parse_log(shared("refs", "plans", "gemma3-270m_custom1.log"))
    p = plan(model, CASES["gemma3-270m_custom1.log"])
    # "WARNING: 91 of 91 tensor(s) required fallback quantization"
    assert sum(e.fallback_from is not None for e in p.entries) == 91
    assert p.entry("blk.0.attn_q.weight").rule_index == 0
    assert p.entry("blk.3.ffn_down.weight").rule_index == 3
    assert p.entry("blk.9.ffn_down.weight").rule_index == 4
