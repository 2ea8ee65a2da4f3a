"""Value grids of the quant types (exact integers, ggml-common.h of ik_llama.cpp 8337e4cd3) and the
4-bit grids they are compared with (nf4, fe1m2, e2m1, int4, q4_0/q8_0 as linear), as records.

Each table with a shifted half stores base then shifted values; `Grid.halves` says how many halves.
`Grid.values` is in index order exactly as the format defines it (the code a weight stores ->
its value); `curves()` gives them sorted and scaled to max |v| = 1 for the study's plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ggml-quants.c:3911 (IQ4_NL, IQ4_XS)
kvalues_iq4nl = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)

# ggml-common.h iq4k_values[32]: base (= kvalues_iq4nl) then shifted (+4)
iq4k_values = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
     -123, -100, -79, -61, -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117], dtype=np.int8)

# iq2nl_values[8]: base then shifted (+5)
iq2nl_values = np.array([-31, -13, 1, 17, -26, -8, 6, 22], dtype=np.int8)

# iq3nl_values[16]: base then shifted (+4)
iq3nl_values = np.array(
    [-63, -40, -23, -10, 1, 13, 28, 47, -59, -36, -19, -6, 5, 17, 32, 51], dtype=np.int8)

# iq5nl_values[64]: base then shifted (+2)
iq5nl_values = np.array(
    [-126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18, -12, -6,
     -1, 5, 11, 17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121,
     -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4,
     1, 7, 13, 19, 25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123], dtype=np.int8)

# iq6nl_values[128]: base then shifted (+1); used only by the IQ6_K quantizer's search
iq6nl_values = np.array(
    [-127, -121, -115, -109, -104, -98, -93, -88, -84, -79, -74, -70, -66, -62, -58, -54,
     -51, -47, -44, -40, -37, -34, -31, -28, -25, -22, -19, -16, -13, -11, -8, -5,
     -2, 0, 3, 6, 9, 12, 14, 17, 20, 23, 27, 30, 33, 36, 40, 44,
     47, 51, 55, 59, 63, 68, 72, 77, 82, 87, 92, 98, 103, 109, 115, 121,
     -126, -120, -114, -108, -103, -97, -92, -87, -83, -78, -73, -69, -65, -61, -57, -53,
     -50, -46, -43, -39, -36, -33, -30, -27, -24, -21, -18, -15, -12, -10, -7, -4,
     -1, 1, 4, 7, 10, 13, 15, 18, 21, 24, 28, 31, 34, 37, 41, 45,
     48, 52, 56, 60, 64, 69, 73, 78, 83, 88, 93, 99, 104, 110, 116, 122], dtype=np.int8)

# IQ6_K dequantizes with this cubic in float32 (iqk_quantize.cpp A/B/C/D_IQ6K), not the table
IQ6K_A, IQ6K_B, IQ6K_C, IQ6K_D = (np.float32(-127.0), np.float32(6.2568), np.float32(0.11218),
                                  np.float32(0.0011972))


def iq6k_cubic(shifted: bool = False) -> np.ndarray:
    """The 64 float32 values IQ6_K dequantizes to: A + q(B + q(-C + qD)) (+1 if shifted), as three
    fused multiply-adds like the reference build. Each step is exact in float64 (operands of at
    most 30 significant bits), so rounding it to float32 once is the FMA's result."""
    q = np.arange(64, dtype=np.float64)
    a, b, c, d = (float(v) for v in (IQ6K_A, IQ6K_B, -IQ6K_C, IQ6K_D))
    t = np.float32(q * d + c)  # each step one fused multiply-add, rounded to float32
    t = np.float32(q * t.astype(np.float64) + b)
    t = np.float32(q * t.astype(np.float64) + a)
    return (t + np.float32(1.0 if shifted else 0.0)).astype(np.float32)


# iq2kl_values[32] (uint16): two int8 values per entry, low byte first
iq2kl_values = np.array(
    [0xe9c1, 0x0dc1, 0xc1d8, 0xf6d8, 0x0dd8, 0x2fd8, 0xd8e9, 0xe9e9, 0x01e9, 0x0de9, 0x1ce9,
     0xc1f6, 0x01f6, 0x0df6, 0x2ff6, 0xe901, 0xf601, 0x0101, 0x0d01, 0x1c01, 0xd80d, 0xe90d,
     0xf60d, 0x010d, 0x0d0d, 0xc11c, 0xe91c, 0x011c, 0x1c1c, 0x2f1c, 0xe92f, 0x0d2f],
    dtype=np.uint16)
iq2kl_pairs = iq2kl_values.view(np.int8).reshape(32, 2)  # (32, 2): (first, second) element

# kvalues_mxfp4[16]: e2m1 values doubled (MXFP4)
kvalues_mxfp4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)


@dataclass(frozen=True)
class Grid:
    name: str  # the ggml table name
    values: np.ndarray  # (halves * size,) or (32, 2) for the IQ2_KL pair grid
    types: tuple[str, ...]  # ggml type names whose blocks draw from it
    bits: int  # bits of one index into one half
    halves: int = 1  # 2 when a per-block shift bit selects base or shifted half
    note: str = ""
    source: str = ""  # where the table is defined

    @property
    def integer(self) -> bool:
        return self.values.dtype.kind in "iu"

    @property
    def base(self) -> np.ndarray:
        return self.values[: len(self.values) // self.halves]

    @property
    def shifted(self) -> np.ndarray | None:
        return self.values[len(self.values) // 2:] if self.halves == 2 else None


_COMMON = "ggml/src/ggml-common.h"
GRIDS: tuple[Grid, ...] = (
    Grid("kvalues_iq4nl", kvalues_iq4nl, ("iq4_nl", "iq4_xs"), 4, 1, "",
         "ggml/src/ggml-quants.c:3911"),
    Grid("iq4k_values", iq4k_values, ("iq4_k", "iq4_ks", "iq4_kss"), 4, 2, "shift +4",
         f"{_COMMON}:2227"),
    Grid("iq2nl_values", iq2nl_values, ("iq2_k", "iq2_ks"), 2, 2, "shift +5", f"{_COMMON}:2212"),
    Grid("iq3nl_values", iq3nl_values, ("iq3_k", "iq3_ks"), 3, 2, "shift +4", f"{_COMMON}:2222"),
    Grid("iq5nl_values", iq5nl_values, ("iq5_k", "iq5_ks"), 5, 2, "shift +2", f"{_COMMON}:2232"),
    Grid("iq6nl_values", iq6nl_values, ("iq6_k",), 6, 2,
         "shift +1; the quantizer's search grid (dequantization uses the IQ6_K cubic)",
         f"{_COMMON}:2237"),
    Grid("iq6k_cubic", np.concatenate([iq6k_cubic(False), iq6k_cubic(True)]), ("iq6_k",), 6, 2,
         "float values IQ6_K dequantizes to: -127 + q(6.2568 + q(-0.11218 + 0.0011972q)) (+1)",
         "ggml/src/iqk/iqk_quantize.cpp:3442 (A_IQ6K..D_IQ6K) and :3477"),
    Grid("iq2kl_values", iq2kl_pairs, ("iq2_kl",), 5, 1,
         "2-D grid: 32 (first, second) pairs drawn from the iq3nl base values", f"{_COMMON}:2216"),
    Grid("kvalues_mxfp4", kvalues_mxfp4, ("mxfp4",), 4, 1, "e2m1 values doubled",
         f"{_COMMON}:2250"),
)
GRID_BY_NAME: dict[str, Grid] = {g.name: g for g in GRIDS}

# ---------------------------------------------------------------- grids from outside ggml
# QLoRA's NormalFloat4 (Dettmers et al. 2023, bitsandbytes functional.py get_4bit_type("nf4")),
# codes 0..15 in ascending order
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0])


def fp4(exp_bits: int, bias: int) -> np.ndarray:
    """A 4-bit float (1 sign bit, `exp_bits` exponent bits with `bias`, the rest mantissa, with
    subnormals, no inf/NaN) by code 0..15: code = sign<<3 | exponent<<m | mantissa."""
    m = 3 - exp_bits
    out = []
    for code in range(16):
        sign, e, f = code >> 3, (code >> m) & ((1 << exp_bits) - 1), code & ((1 << m) - 1)
        mag = (f / 2**m) * 2.0 ** (1 - bias) if e == 0 else (1 + f / 2**m) * 2.0 ** (e - bias)
        out.append(-mag if sign else mag)
    return np.array(out)


FE1M2 = fp4(1, 1)  # 0, .25, .5, .75, 1, 1.25, 1.5, 1.75, then negated (-0 included)
E2M1 = fp4(2, 1)  # OCP MX v1.0 FP4: 0, .5, 1, 1.5, 2, 3, 4, 6, then negated
INT4 = np.array([c - 16 if c > 7 else c for c in range(16)], dtype=np.int8)  # two's complement
Q4_0 = np.arange(16, dtype=np.int8) - 8  # dequantize_row_q4_0: (q - 8) * d
Q8_0 = np.arange(256, dtype=np.uint8).view(np.int8)  # the stored int8, times d

REFERENCE_GRIDS: tuple[Grid, ...] = (
    Grid("nf4", NF4, (), 4, 1, "NormalFloat4: quantiles of N(0,1) scaled to [-1, 1]",
         "Dettmers et al., QLoRA (2023); bitsandbytes get_4bit_type('nf4')"),
    Grid("fe1m2", FE1M2, (), 4, 1, "4-bit float, 1 exponent bit (bias 1), 2 mantissa bits",
         "ik_llama.cpp discussion #359 (compared there with iq4k_values)"),
    Grid("e2m1", E2M1, ("mxfp4",), 4, 1, "FP4 E2M1 (kvalues_mxfp4 halved)",
         "OCP Microscaling Formats (MX) v1.0, section 5.3.3"),
    Grid("int4", INT4, (), 4, 1, "two's complement 4-bit integer", "linear"),
    Grid("q4_0", Q4_0, ("q4_0",), 4, 1, "linear: value = q - 8",
         "ggml/src/ggml-quants.c dequantize_row_q4_0"),
    Grid("q8_0", Q8_0, ("q8_0",), 8, 1, "linear: the stored int8",
         "ggml/src/ggml-quants.c dequantize_row_q8_0"),
)
ALL_GRIDS: tuple[Grid, ...] = GRIDS + REFERENCE_GRIDS


def table_json() -> dict[str, list]:
    """Grid name -> values in index order, as the format defines them: integers for the ggml
    tables, floats for nf4 / fp4 (IQ2_KL: [first, second] pairs; -0.0 stays -0.0)."""
    out = {}
    for g in ALL_GRIDS:
        out[g.name] = [int(v) if g.integer else float(v) for v in g.values.reshape(-1)] \
            if g.values.ndim == 1 else [[int(a), int(b)] for a, b in g.values]
    return out


def iq4k_variants() -> dict[str, np.ndarray]:
    """The four value rows an IQ4_K / IQ4_KS block can use, in index order: the block scale's
    sign mirrors the row (index i -> -v[i]), the block's shift bit picks the shifted row."""
    base, shifted = iq4k_values[:16].astype(np.int16), iq4k_values[16:].astype(np.int16)
    return {"iq4k": base, "iq4k shifted": shifted, "iq4k mirrored": -base,
            "iq4k shifted mirrored": -shifted}


def curves() -> dict[str, np.ndarray]:
    """The study's plot: each 1-D grid (one row) sorted ascending and divided by its max |v|
    (float64); a weight's code is its rank. The four iq4k variants come first."""
    out = {k: v.astype(np.float64) for k, v in iq4k_variants().items()}
    rows = {"iq4nl": kvalues_iq4nl, "iq2k": iq2nl_values[:4], "iq2k shifted": iq2nl_values[4:],
            "iq3k": iq3nl_values[:8], "iq3k shifted": iq3nl_values[8:],
            "iq5k": iq5nl_values[:32], "iq5k shifted": iq5nl_values[32:],
            "iq6k": iq6nl_values[:64], "iq6k shifted": iq6nl_values[64:],
            "nf4": NF4, "fe1m2": FE1M2, "e2m1": E2M1, "q4_0 (int4)": Q4_0, "q8_0": Q8_0}
    out.update({k: np.asarray(v, dtype=np.float64) for k, v in rows.items()})
    return {k: np.sort(v) / np.abs(v).max() for k, v in out.items()}
