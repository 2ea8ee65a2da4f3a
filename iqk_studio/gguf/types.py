"""The one table of ggml quant types (mainline + ik_llama.cpp) and of llama_ftype values: pure
Python at the bottom layer (as gguf-py keeps GGML_QUANT_SIZES in its constants), so the GGUF reader
and writer size tensors without importing the quantizers. `iqk_studio.quant.types` re-exports it.

Row bytes = row_meta + type_size * n / block (ggml.c `ggml_row_size`); see
shared/docs/quant-formats.md §1-§2 for where each number comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

__all__ = ["Kind", "QuantType", "QUANT_TYPES", "BY_ID", "BY_NAME", "GGML_TYPE_COUNT", "INTERLEAVED",
           "by_id", "by_name", "FType", "FTYPES", "FTYPE_BY_ID", "FTYPE_BY_NAME", "parse_ftype"]


class Kind(str, Enum):
    FLOAT = "float"  # f32, f16, bf16, f64: not "quantized" for llama-quantize's purposes
    INT = "int"  # i8..i64: never quantized
    QUANT = "quant"  # block quantized weights
    REPACKED = "repacked"  # _R4/_R8/_R16 interleaved form of a QUANT (or float) type
    ACTIVATION = "activation"  # vec_dot helper types that a model file should not hold
    DEPRECATED = "deprecated"


@dataclass(frozen=True)
class QuantType:
    id: int
    name: str  # exactly as llama-quantize spells it (`q4_K`, `iq4_ks`)
    block: int  # elements per block
    type_size: int  # bytes per block
    row_meta: int  # bytes at the start of each row (row scale); 0 for most types
    kind: Kind
    base: str | None = None  # for REPACKED: the type whose rows are interleaved
    interleave: int = 1  # for REPACKED: rows interleaved together
    # for REPACKED: what llama-quantize writes instead when ne1 % interleave != 0
    # (interleaved_properties, src/llama-quantize.cpp:83-120); None: base; itself: no such rule
    fallback: str | None = None

    @property
    def is_quantized(self) -> bool:
        return self.kind in (Kind.QUANT, Kind.REPACKED) and self.name not in ("bf16_r16",)

    @property
    def bpw(self) -> float:
        """Bits per weight without row meta (ggml_type_sizef * 8)."""
        return self.type_size * 8 / self.block

    def row_bytes(self, n: int) -> int:
        """Bytes of one row of n elements; n must be a multiple of the block size."""
        if n % self.block:
            raise ValueError(f"{self.name}: row of {n} elements is not a multiple of {self.block}")
        return self.row_meta + self.type_size * (n // self.block)

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """ggml_nbytes of a tensor of this type with ggml shape (ne0, ne1, ...)."""
        rows = math.prod(shape[1:])
        if self.block == 1:
            n = shape[0] * rows if shape else 0
            if self.name == "i2_s":
                return n // 4 + 32
            return self.type_size * n
        return self.row_bytes(shape[0]) * rows


Q, R, F, INT, A = Kind.QUANT, Kind.REPACKED, Kind.FLOAT, Kind.INT, Kind.ACTIVATION

# id, name, block, type_size, row_meta, kind, [base, interleave, fallback]
_TYPES: tuple[tuple, ...] = (
    (0, "f32", 1, 4, 0, F),
    (1, "f16", 1, 2, 0, F),
    (2, "q4_0", 32, 18, 0, Q),
    (3, "q4_1", 32, 20, 0, Q),
    (6, "q5_0", 32, 22, 0, Q),
    (7, "q5_1", 32, 24, 0, Q),
    (8, "q8_0", 32, 34, 0, Q),
    (9, "q8_1", 32, 36, 0, A),
    (10, "q2_K", 256, 84, 0, Q),
    (11, "q3_K", 256, 110, 0, Q),
    (12, "q4_K", 256, 144, 0, Q),
    (13, "q5_K", 256, 176, 0, Q),
    (14, "q6_K", 256, 210, 0, Q),
    (15, "q8_K", 256, 296, 0, A),
    (16, "iq2_xxs", 256, 66, 0, Q),
    (17, "iq2_xs", 256, 74, 0, Q),
    (18, "iq3_xxs", 256, 98, 0, Q),
    (19, "iq1_s", 256, 50, 0, Q),
    (20, "iq4_nl", 32, 18, 0, Q),
    (21, "iq3_s", 256, 110, 0, Q),
    (22, "iq2_s", 256, 82, 0, Q),
    (23, "iq4_xs", 256, 136, 0, Q),
    (24, "i8", 1, 1, 0, INT),
    (25, "i16", 1, 2, 0, INT),
    (26, "i32", 1, 4, 0, INT),
    (27, "i64", 1, 8, 0, INT),
    (28, "f64", 1, 8, 0, F),
    (29, "iq1_m", 256, 56, 0, Q),
    (30, "bf16", 1, 2, 0, F),
    (31, "q4_0_4x4", 32, 18, 0, R, "q4_0", 4),
    (32, "q4_0_4x8", 32, 18, 0, R, "q4_0", 4),
    (33, "q4_0_8x8", 32, 18, 0, R, "q4_0", 8),
    (36, "i2_s", 1, 1, 0, Q),
    (39, "mxfp4", 32, 17, 0, Q),
    (41, "q1_0_g128", 128, 18, 0, Q),
    (97, "q8_0_x4", 32, 34, 0, A),
    (98, "q8_1_x4", 32, 36, 0, A),
    (99, "q8_2_x4", 32, 36, 0, A),
    (133, "q6_0", 32, 26, 0, Q),
    (134, "iq1_bn", 64, 13, 2, Q),
    (135, "iq2_bn", 64, 16, 4, Q),
    (136, "q8_K64", 64, 68, 0, A),
    (137, "iq2_k", 256, 76, 0, Q),
    (138, "iq3_k", 256, 110, 0, Q),
    (139, "iq4_k", 256, 144, 0, Q),
    (140, "iq5_k", 256, 176, 0, Q),
    (141, "iq6_k", 256, 212, 0, Q),
    (144, "iq4_ks", 256, 136, 4, Q),
    (145, "iq2_ks", 256, 70, 2, Q),
    (146, "iq4_kss", 256, 128, 4, Q),
    (147, "q8_K16", 64, 64, 20, A),
    (148, "q8_K32", 256, 296, 0, A),
    (149, "q8_KR8", 256, 296, 0, A),
    (150, "q8_K128", 128, 140, 0, A),
    (151, "q8_KV", 32, 32, 8, Q),
    (152, "iq5_ks", 256, 168, 4, Q),
    (153, "iq2_kt", 256, 68, 4, Q),
    (154, "iq3_kt", 256, 100, 4, Q),
    (155, "iq4_kt", 256, 128, 4, Q),
    (156, "iq3_ks", 256, 102, 2, Q),
    (157, "iq2_kl", 256, 86, 2, Q),
    (158, "iq1_kt", 256, 56, 4, Q),
    (202, "q4_0_r8", 32, 18, 0, R, "q4_0", 8),
    (206, "q5_0_r4", 32, 22, 0, R, "q5_0", 4),
    (208, "q8_0_r8", 32, 34, 0, R, "q8_0", 8),
    (210, "q2_k_r4", 256, 84, 0, R, "q2_K", 4),
    (211, "q3_k_r4", 256, 110, 0, R, "q3_K", 4),
    (212, "q4_k_r4", 256, 144, 0, R, "q4_K", 4),
    (213, "q5_k_r4", 256, 176, 0, R, "q5_K", 4),
    (214, "q6_k_r4", 256, 210, 0, R, "q6_K", 4),
    (216, "iq2_xxs_r4", 256, 66, 0, R, "iq2_xxs", 4),
    (217, "iq2_xs_r4", 256, 74, 0, R, "iq2_xs", 4),
    (218, "iq3_xxs_r4", 256, 98, 0, R, "iq3_xxs", 4),
    (219, "iq1_s_r4", 32, 6, 2, R, "iq1_s", 4),
    (220, "iq4_nl_r4", 32, 18, 0, R, "iq4_nl", 4),
    (221, "iq3_s_r4", 256, 110, 0, R, "iq3_s", 4),
    (222, "iq2_s_r4", 256, 82, 0, R, "iq2_s", 4),
    (223, "iq4_xs_r8", 256, 136, 0, R, "iq4_xs", 8),
    (229, "iq1_m_r4", 32, 7, 2, R, "iq1_m", 4),
    (230, "bf16_r16", 1, 2, 0, R, "bf16", 16),
    (233, "q6_0_r4", 32, 26, 0, R, "q6_0", 4),
    (335, "iq2_bn_r4", 64, 16, 4, R, "iq2_bn", 4),
    (337, "iq2_k_r4", 256, 76, 0, R, "iq2_k", 4),
    (338, "iq3_k_r4", 256, 110, 0, R, "iq3_k", 4),
    (339, "iq4_k_r4", 256, 144, 0, R, "iq4_k", 4),
    (340, "iq5_k_r4", 256, 176, 0, R, "iq5_k", 4),
    (344, "iq4_ks_r4", 256, 136, 4, R, "iq4_ks", 4),
    (352, "iq5_ks_r4", 256, 168, 4, R, "iq5_ks", 4),
    (353, "mxfp4_r8", 32, 17, 0, R, "mxfp4", 8),
    (397, "q8_k_r16", 256, 258, 0, R, "q8_K", 16, "q8_k_r16"),
    (398, "q8_KV_r8", 32, 32, 4, R, "q8_KV", 8),
    (399, "q8_k_r8", 256, 258, 0, R, "q8_K", 8, "q8_0"),
)

QUANT_TYPES: tuple[QuantType, ...] = tuple(QuantType(*row) for row in _TYPES)
BY_ID: dict[int, QuantType] = {t.id: t for t in QUANT_TYPES}
BY_NAME: dict[str, QuantType] = {t.name: t for t in QUANT_TYPES}
GGML_TYPE_COUNT = 400
# llama-quantize's interleaved_properties: type -> (type written when ne1 % rows != 0, rows)
INTERLEAVED: dict[str, tuple[str, int]] = {
    t.name: (t.fallback or t.base, t.interleave) for t in QUANT_TYPES
    if t.kind is Kind.REPACKED and t.fallback != t.name}


def by_id(type_id: int) -> QuantType:
    try:
        return BY_ID[type_id]
    except KeyError:
        raise KeyError(f"unknown ggml type id {type_id}") from None


def by_name(name: str) -> QuantType:
    """Exact, case-sensitive lookup as llama-quantize's parse_ggml_type does."""
    try:
        return BY_NAME[name]
    except KeyError:
        hint = ""
        low = {t.name.lower(): t.name for t in QUANT_TYPES}
        if name.lower() in low:
            hint = f" (did you mean {low[name.lower()]!r}? type names are case-sensitive)"
        raise KeyError(f"unknown quant type {name!r}{hint}") from None


@dataclass(frozen=True)
class FType:
    id: int
    name: str  # LLAMA_FTYPE_MOSTLY_<name>, the llama-quantize positional name
    aliases: tuple[str, ...]
    default_type: str  # ggml type name
    description: str = ""


# id, name, default ggml type, aliases, description (quant-formats.md §2)
_FTYPES: tuple[tuple, ...] = (
    (0, "F32", "f32", ("COPY",), ""),
    (1, "F16", "f16", (), ""),
    (2, "Q4_0", "q4_0", (), ""),
    (3, "Q4_1", "q4_1", (), ""),
    (7, "Q8_0", "q8_0", (), ""),
    (8, "Q5_0", "q5_0", (), ""),
    (9, "Q5_1", "q5_1", (), ""),
    (10, "Q2_K", "q2_K", (), ""),
    (11, "Q3_K_S", "q3_K", (), ""),
    (12, "Q3_K_M", "q3_K", ("Q3_K",), ""),
    (13, "Q3_K_L", "q3_K", (), ""),
    (14, "Q4_K_S", "q4_K", (), ""),
    (15, "Q4_K_M", "q4_K", ("Q4_K",), ""),
    (16, "Q5_K_S", "q5_K", (), ""),
    (17, "Q5_K_M", "q5_K", ("Q5_K",), ""),
    (18, "Q6_K", "q6_K", (), ""),
    (19, "IQ2_XXS", "iq2_xxs", (), "2.06 bpw"),
    (20, "IQ2_XS", "iq2_xs", (), "2.31 bpw"),
    (21, "Q2_K_S", "q2_K", (), ""),
    (22, "IQ3_XS", "iq3_s", (), "3.3 bpw"),
    (23, "IQ3_XXS", "iq3_xxs", (), "3.06 bpw"),
    (24, "IQ1_S", "iq1_s", (), "1.56 bpw"),
    (25, "IQ4_NL", "iq4_nl", (), "4.50 bpw"),
    (26, "IQ3_S", "iq3_s", (), "3.44 bpw"),
    (27, "IQ3_M", "iq3_s", (), "3.66 bpw mix"),
    (28, "IQ2_S", "iq2_xs", (), "2.5 bpw"),
    (29, "IQ2_M", "iq2_s", (), "2.7 bpw"),
    (30, "IQ4_XS", "iq4_xs", (), "4.25 bpw"),
    (31, "IQ1_M", "iq1_m", (), "1.75 bpw"),
    (32, "BF16", "bf16", (), ""),
    (33, "Q4_0_4_4", "q4_0_4x4", (), ""),
    (34, "Q4_0_4_8", "q4_0_4x8", (), ""),
    (35, "Q4_0_8_8", "q4_0_8x8", (), ""),
    (38, "MXFP4", "mxfp4", (), "4.25 bpw"),
    (135, "Q6_0", "q6_0", (), "6.5 bpw"),
    (136, "IQ1_BN", "iq1_bn", (), "1.62 bpw Bitnet"),
    (137, "IQ2_BN", "iq2_bn", (), "2.00 bpw Bitnet"),
    (138, "IQ2_K", "iq2_k", (), "2.375 bpw"),
    (139, "IQ3_K", "iq3_k", (), "3.44 bpw"),
    (140, "IQ4_K", "iq4_k", (), "4.5 bpw"),
    (141, "IQ5_K", "iq5_k", (), "5.5 bpw"),
    (142, "IQ6_K", "iq6_k", (), "6.6 bpw"),
    (145, "IQ4_KS", "iq4_ks", (), "4.25 bpw"),
    (146, "IQ3_KL", "iq3_k", (), "4 bpw mix"),
    (147, "IQ2_KS", "iq2_ks", (), "2.1875 bpw"),
    (148, "IQ4_KSS", "iq4_kss", (), "4.0 bpw"),
    (149, "Q8_KV", "q8_KV", (), "8.0 bpw"),
    (150, "IQ5_KS", "iq5_ks", (), "5.25 bpw"),
    (151, "IQ2_KT", "iq2_kt", (), "2.125 bpw trellis"),
    (152, "IQ3_KT", "iq3_kt", (), "3.125 bpw trellis"),
    (153, "IQ4_KT", "iq4_kt", (), "4.0 bpw trellis"),
    (154, "IQ3_KS", "iq3_ks", (), "3.19 bpw"),
    (155, "IQ2_KL", "iq2_kl", (), "2.69 bpw"),
    (156, "IQ1_KT", "iq1_kt", (), "1.75 bpw trellis"),
    (202, "Q4_0_R8", "q4_0_r8", (), ""),
    (207, "Q8_0_R8", "q8_0_r8", (), ""),
    (208, "Q5_0_R4", "q5_0_r4", (), ""),
    (210, "Q2_K_R4", "q2_k_r4", (), ""),
    (211, "Q3_K_R4", "q3_k_r4", (), ""),
    (214, "Q4_K_R4", "q4_k_r4", (), ""),
    (216, "Q5_K_R4", "q5_k_r4", (), ""),
    (218, "Q6_K_R4", "q6_k_r4", (), ""),
    (219, "IQ2_XXS_R4", "iq2_xxs_r4", (), ""),
    (220, "IQ2_XS_R4", "iq2_xs_r4", (), ""),
    (223, "IQ3_XXS_R4", "iq3_xxs_r4", (), ""),
    (224, "IQ1_S_R4", "iq1_s_r4", (), ""),
    (225, "IQ4_NL_R4", "iq4_nl_r4", (), ""),
    (226, "IQ3_S_R4", "iq3_s_r4", (), ""),
    (229, "IQ2_M_R4", "iq2_s_r4", (), ""),
    (230, "IQ4_XS_R8", "iq4_xs_r8", (), ""),
    (231, "IQ1_M_R4", "iq1_m_r4", (), ""),
    (232, "BF16_R16", "bf16_r16", (), ""),
    (335, "Q6_0_R4", "q6_0_r4", (), ""),
    (337, "IQ2_BN_R4", "iq2_bn_r4", (), ""),
    (338, "IQ2_K_R4", "iq2_k_r4", (), ""),
    (339, "IQ3_K_R4", "iq3_k_r4", (), ""),
    (340, "IQ4_K_R4", "iq4_k_r4", (), ""),
    (341, "IQ5_K_R4", "iq5_k_r4", (), ""),
    (345, "IQ4_KS_R4", "iq4_ks_r4", (), ""),
    (350, "IQ5_KS_R4", "iq5_ks_r4", (), ""),
    (351, "MXFP4_R8", "mxfp4_r8", (), ""),
    (398, "Q8_KV_R8", "q8_KV_r8", (), ""),
    (399, "Q8_K_R8", "q8_k_r8", (), ""),
)

FTYPES: tuple[FType, ...] = tuple(
    FType(fid, name, aliases, default, desc) for fid, name, default, aliases, desc in _FTYPES
)
FTYPE_BY_ID: dict[int, FType] = {}
for _f in FTYPES:
    FTYPE_BY_ID.setdefault(_f.id, _f)
FTYPE_BY_NAME: dict[str, FType] = {}
for _f in FTYPES:
    for _n in (_f.name, *_f.aliases):
        FTYPE_BY_NAME[_n] = _f


def parse_ftype(text: str) -> FType:
    """llama-quantize's try_parse_ftype: upper-cased name, else an integer ftype id."""
    up = text.strip().upper()
    if up in FTYPE_BY_NAME:
        return FTYPE_BY_NAME[up]
    try:
        fid = int(up)
    except ValueError:
        raise KeyError(f"unknown llama-quantize type {text!r}") from None
    if fid in FTYPE_BY_ID:
        return FTYPE_BY_ID[fid]
    raise KeyError(f"unknown llama_ftype id {fid}")
