"""The kernel index: which module of quant/kernels/ holds each type's quantizer and dequantizer.

One literal table, checked against the type table (gguf/types.py) and against what each module
exports when it is loaded: a type the index names but its module lacks, or a module kernel the
index does not name, is an error at load time, never a silently missing kernel.
"""

from __future__ import annotations

import importlib
from functools import cache

from iqk_studio.gguf.types import BY_NAME

# type (as llama-quantize spells it) -> module under iqk_studio.quant.kernels; the module's QUANT
# and DEQUANT dicts hold the type's quantizer and dequantizer (DEQUANT_ONLY: no quantizer)
KERNELS: dict[str, str] = {
    # floats
    "f32": "floats", "f16": "floats", "bf16": "floats",
    # legacy: 32-element blocks, the IQ4 non-linear types, mxfp4, dequantize-only odd types
    "q4_0": "legacy.q_0_1", "q4_1": "legacy.q_0_1", "q5_0": "legacy.q_0_1",
    "q5_1": "legacy.q_0_1", "q6_0": "legacy.q_0_1", "q8_0": "legacy.q_0_1",
    "iq4_nl": "legacy.iq4_nl", "iq4_xs": "legacy.iq4_nl",
    "mxfp4": "legacy.mxfp4",
    "q1_0_g128": "legacy.dequant_only", "q8_KV": "legacy.dequant_only",
    "iq1_bn": "legacy.dequant_only", "iq2_bn": "legacy.dequant_only",
    # k-quants
    "q2_K": "kquants.q2_k", "q3_K": "kquants.q3_k", "q4_K": "kquants.q4_k", "q5_K": "kquants.q4_k",
    "q6_K": "kquants.q6_k",
    # IQ grid types (lattice search: iq3_xxs, iq3_s, iq2_s; neighbour search: the others)
    "iq1_s": "iqgrid.iq1_s", "iq1_m": "iqgrid.iq1_m", "iq2_xxs": "iqgrid.iq2_xxs",
    "iq2_xs": "iqgrid.iq2_xs", "iq2_s": "iqgrid.iq2_s", "iq3_xxs": "iqgrid.iq3_xxs",
    "iq3_s": "iqgrid.iq3_xxs",
    # IQK types (ik_llama.cpp iqk_quantize.cpp)
    "iq2_k": "iqk.iq2_k", "iq2_ks": "iqk.iq2_ks", "iq2_kl": "iqk.iq2_kl", "iq3_k": "iqk.iq3_k",
    "iq3_ks": "iqk.iq3_k", "iq4_k": "iqk.iq4_k", "iq4_ks": "iqk.iq4_k", "iq4_kss": "iqk.iq4_kss",
    "iq5_k": "iqk.iq5_k", "iq5_ks": "iqk.iq5_k", "iq6_k": "iqk.iq6_k",
    # trellis types
    "iq1_kt": "trellis.iq2_kt", "iq2_kt": "trellis.iq2_kt", "iq3_kt": "trellis.iq3_kt",
    "iq4_kt": "trellis.iq4_kt",
    # repacked: the base type's rows interleaved (via_base) or a layout of their own
    "q4_0_4x4": "repacked.via_base", "q4_0_4x8": "repacked.via_base",
    "q4_0_8x8": "repacked.via_base", "q4_0_r8": "repacked.via_base",
    "q5_0_r4": "repacked.via_base", "q6_0_r4": "repacked.via_base",
    "q8_0_r8": "repacked.via_base", "iq4_nl_r4": "repacked.via_base",
    "mxfp4_r8": "repacked.via_base", "q2_k_r4": "repacked.via_base",
    "q3_k_r4": "repacked.via_base", "q4_k_r4": "repacked.via_base",
    "q5_k_r4": "repacked.via_base", "q6_k_r4": "repacked.via_base",
    "iq2_xxs_r4": "repacked.via_base", "iq2_xs_r4": "repacked.via_base",
    "iq2_s_r4": "repacked.via_base", "iq3_xxs_r4": "repacked.via_base",
    "iq3_s_r4": "repacked.via_base", "iq4_xs_r8": "repacked.via_base",
    "iq4_ks_r4": "repacked.via_base", "iq5_ks_r4": "repacked.via_base",
    "iq2_k_r4": "repacked.via_base", "iq3_k_r4": "repacked.via_base",
    "iq4_k_r4": "repacked.via_base", "iq5_k_r4": "repacked.via_base",
    "iq2_bn_r4": "repacked.via_base",
    "iq1_s_r4": "repacked.own_layout", "iq1_m_r4": "repacked.own_layout",
    "q8_k_r8": "repacked.own_layout", "q8_k_r16": "repacked.own_layout",
    "q8_KV_r8": "repacked.own_layout", "bf16_r16": "repacked.own_layout",
}
# types the index lists that have a dequantizer only
DEQUANT_ONLY: frozenset[str] = frozenset((
    "q1_0_g128", "q8_KV", "iq1_bn", "iq2_bn",  # not produced by llama-quantize's quantizers here
    "q4_0_4x4", "q4_0_4x8", "q4_0_8x8", "mxfp4_r8",  # own simpler quantizers in the reference
    "iq2_bn_r4",  # its base has no quantizer
    "iq1_s_r4", "iq1_m_r4", "q8_k_r8", "q8_k_r16", "q8_KV_r8", "bf16_r16",
))


def quantizes(name: str) -> bool:
    """Whether the index promises a quantizer for this type (without loading any kernel)."""
    return name in KERNELS and name not in DEQUANT_ONLY


@cache
def _tables() -> tuple[dict, dict]:
    unknown = sorted(set(KERNELS) - set(BY_NAME))
    if unknown or not DEQUANT_ONLY <= set(KERNELS):
        raise RuntimeError(f"kernel index names types outside the type table: "
                           f"{unknown or sorted(DEQUANT_ONLY - set(KERNELS))}")
    quant: dict = {}
    dequant: dict = {}
    for module in sorted(set(KERNELS.values())):
        mod = importlib.import_module(f"iqk_studio.quant.kernels.{module}")
        names = {t for t, m in KERNELS.items() if m == module}
        want_q = {t for t in names if quantizes(t)}
        got_q, got_d = set(mod.QUANT) if hasattr(mod, "QUANT") else set(), set(mod.DEQUANT)
        if got_q != want_q or got_d != names:
            raise RuntimeError(
                f"kernels.{module} does not match the kernel index: quantizers "
                f"{sorted(got_q ^ want_q)} and dequantizers {sorted(got_d ^ names)} differ")
        quant.update(getattr(mod, "QUANT", {}))
        dequant.update(mod.DEQUANT)
    return quant, dequant


def quantizers() -> dict:
    """type name -> QUANT function (x, qw, mode) -> (rows, row_bytes) uint8."""
    return _tables()[0]


def dequantizers() -> dict:
    """type name -> DEQUANT function (raw, n) -> (rows, n) float32."""
    return _tables()[1]


def can_quantize(name: str) -> bool:
    return name in quantizers()


def can_dequantize(name: str) -> bool:
    return name in dequantizers()
