"""How ik_llama.cpp's CPU matrix multiplication treats each weight type, as one table.

Read from ik_llama.cpp 8337e4cd3 for x86-64 with AVX2 + AVX512F/BW/DQ/VL/VNNI (`HAVE_FANCY_SIMD`,
what a native build on such a CPU takes): `ggml.c` type_traits[].vec_dot_type (the activations of
a matmul are quantized to it before any dot product) and `iqk_mul_mat.cpp` (`is_dequant_better`,
`iqk_mul_mat`, `iqk_mul_mat_moe`, `iqk_moe_fused_up_gate`), which for a batch of at least `min_ny`
activation rows first converts the weights to an 8-bit "repacked" type, then multiplies that.

Activation types (`quantize_row_*` in iqk_quantize.cpp / ggml-quants.c, AVX2 code paths); every
rounding is round-half-even (_mm256_round_ps / nearest_int), q saturates to [-128, 127]:

| act        | block                  | scale d stored as            | q                        | sums the kernels use          |
|------------|------------------------|------------------------------|--------------------------|-------------------------------|
| q8_2_x4    | 32                     | bf16(amax/127), RNE          | rint(x * (1/d_bf16))     | int16 Σq per 32 (exact)       |
| q8_K       | 256                    | f32 amax/127                 | rint(x * (127/amax))     | int16 Σq per 16; f32 d·Σq     |
| q8_K32/KR8 | 256 (same q as q8_K)   | f32 amax/127                 | rint(x * (127/amax))     | f32 d·Σq per 32 / int16       |
| q8_K128    | 128                    | f32 amax/127                 | rint(x * (127/amax))     | int16 Σq per 32               |
| q8_0       | 32                     | f16(amax/127)                | rint(x * (127/amax))     | -                             |
| q8_KV      | whole row              | f32 amax/127                 | rint(x * (1/d))          | int32 Σq                      |
| q8_K64     | row, lanes j%16 // 4   | f32 amax_lane/127            | rint(x * (1/d_lane))     | f32 d·Σq per lane             |
| q8_K16     | row, lanes j%64 // 16  | f32 amax_lane/127            | rint(x * (1/d_lane))     | f32 Σx (not emulated)         |

The kernels' stored sums are exact integers or d·Σq, so a dot product equals the dot product of the
dequantized activations (d·q) with the weights up to float rounding; that is what we compute.

Weight repacking at large batches (`iqk_convert_*`, the x86-64 code paths), column `repack`:
- same:  the repacked type holds the same values (legacy types: d and the int8 levels are copied).
- q8_1:  q4_K/q5_K -> per 32: f16(d·sc)·q + f16(-dmin·m)  (scales rounded to f16).
- q6_K:  per 32: V = sc·(q-32); s = d·(max|V|/127); q8 = rint(V·(1/(max|V|/127))); f16(s)·q8.
- q2_K:  per 256: v = q·sc·d - dmin·m (float); q8 = rint(v·(1/(max|v|/127))); f16(max|v|/127)·q8.
- q8_k:  per 256 from the integer levels V (= scale·value, the type's float factor D aside):
         dnew = max|V|·d0 (q3_K: max|V|/127); dnew < 1 -> 1 and q8 = V; else q8 = rint(V·(1/dnew));
         f16(D·dnew)·q8.  D is a per-block f16 at an offset, a per-row f16/f32, times a constant.
- native: not repacked (or the repack is not emulated, see the note) - the weights' own values.
Conditions (iqk_mul_mat): dense 2-D weights repack when ny >= min_ny, n_out // n_threads >= 32 and
n_out % 16 == 0; MoE experts (per expert, ny = its rows) and the fused ffn_up/ffn_gate pair (same
quantized type; llm_build_ffn's fused_up_gate, default on) repack when ny >= min_ny.
The output layer is a dense matmul of the scored rows (n_ctx/2 in llama-perplexity; all rows in
its KLD mode); MoE routers are dense matmuls too. Attention is not a weight matmul: flash
attention over the f16 KV cache, iqk's kernels for head sizes 64/96/128/192/256 (and 576/512,
512/512, 320/256, 192/128: float32 math, matched to float rounding) and ggml's generic f16 kernel
for the others (Q and the V accumulator in f16: engine/attn_f16.py).
iq6_k: the kernels (native and repack) use the int8 table iq6nl_values where dequantize_row_iq6_k
evaluates a cubic, so its weights are rebuilt from the table (repack.kernel_values).
Not emulated (checked against ik's ggml_mul_mat in tests/test_engine_actquant.py): the iq*_kt
trellis types (their kernels use an int8 trellis generator, not the float dequantization); the
native (ny < 32) AVX512 kernels of iq4_xs, iq4_k, iq5_k, iq5_ks and iq6_k, which are off by up to
~5% on some activation rows (an int16 saturation, we think); the stored f32 Σx of q8_K16.
F32/F16/BF16 weights: activations are not quantized (with AVX512_BF16, ik rounds the activations of
BF16 weights to bf16; as specified, we leave float weights unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Path:
    act: str  # vec_dot_type: the activations are quantized to this
    repack: str  # math of the large-batch weight conversion (see the module docstring)
    min_ny: int = 0  # batch rows from which the conversion happens (0: never)
    d_src: str = ""  # q8_k: where D comes from: "blk@OFF" f16 in each block, "row16", "row32", "iq1_m"
    d_mul: float = 1.0  # q8_k: constant factor of D
    d0: float = 0.0  # q8_k: dnew = max|V| * d0 (0: max|V| / 127, q3_K)


_K = 1.0 / 127
# weight type: (act, repack, min_ny, d_src, d_mul, d0)
_TABLE: dict[str, tuple] = {
    # legacy 32-blocks -> Q8_0_R8 (or Q8_1 "r8" for the types with a min), values copied
    "q4_0": ("q8_2_x4", "same", 32),
    "q4_1": ("q8_2_x4", "same", 32),
    "q5_0": ("q8_2_x4", "same", 32),
    "q5_1": ("q8_2_x4", "same", 32),
    "q6_0": ("q8_2_x4", "same", 32),
    "q8_0": ("q8_2_x4", "same", 32),
    "iq4_nl": ("q8_2_x4", "same", 32),
    "mxfp4": ("q8_2_x4", "same", 32),
    "q1_0_g128": ("q8_2_x4", "native"),
    # k-quants
    "q2_K": ("q8_K", "q2_K", 32),
    "q3_K": ("q8_K", "q8_k", 32, "blk@108", 1.0, 0.0),
    "q4_K": ("q8_2_x4", "q8_1", 32),
    "q5_K": ("q8_2_x4", "q8_1", 32),
    "q6_K": ("q8_2_x4", "q6_K", 64),
    # i-quants -> Q8_K_R16
    "iq2_xxs": ("q8_K", "q8_k", 32, "blk@0", 0.125, 1.0 / 124),
    "iq2_xs": ("q8_K", "q8_k", 32, "blk@0", 0.125, 1.0 / 124),
    "iq2_s": ("q8_K", "q8_k", 16, "blk@0", 0.125, 1.0 / 124),
    "iq3_xxs": ("q8_K", "q8_k", 32, "blk@0", 0.25, 1.0 / 124),
    "iq3_s": ("q8_K", "q8_k", 32, "blk@0", 1.0, _K),
    "iq1_s": ("q8_K", "q8_k", 32, "blk@0", 0.125, 1.0 / 126),
    "iq1_m": ("q8_K", "q8_k", 32, "iq1_m", 0.125, 1.0 / 126),
    "iq4_xs": ("q8_K", "q8_k", 32, "blk@0", 1.0, _K),
    # ik's quants -> Q8_K_R16
    "iq2_k": ("q8_K", "q8_k", 32, "blk@0", 1.0, 1.0 / 120),
    "iq3_k": ("q8_K", "q8_k", 32, "blk@0", 1.0, _K),
    "iq4_k": ("q8_K", "q8_k", 32, "blk@0", 1.0, _K),
    "iq5_k": ("q8_K", "q8_k", 32, "blk@0", 1.0, _K),
    "iq6_k": ("q8_K", "q8_k", 32, "blk@0", 1.0, _K),
    "iq2_ks": ("q8_K", "q8_k", 32, "row16", 1.0, 1.0 / 125),
    "iq2_kl": ("q8_K", "q8_k", 32, "row16", 1.0, 1.0 / 125),
    "iq3_ks": ("q8_K", "q8_k", 32, "row16", 1.0, _K),
    "iq4_ks": ("q8_K", "q8_k", 32, "row32", 1.0, _K),
    "iq4_kss": ("q8_K", "q8_k", 32, "row32", 1.0, _K),
    "iq5_ks": ("q8_K", "q8_k", 32, "row32", 1.0, _K),
    # trellis: repacked to Q8_0_R8 through an int8 trellis (not emulated)
    "iq1_kt": ("q8_2_x4", "native", 16),
    "iq2_kt": ("q8_2_x4", "native", 16),
    "iq3_kt": ("q8_2_x4", "native", 16),
    "iq4_kt": ("q8_2_x4", "native", 24),
    # bitnet
    "iq1_bn": ("q8_K64", "native"),
    "iq2_bn": ("q8_K64", "native"),
    "iq2_bn_r4": ("q8_K16", "native"),
    # interleaved (repacked) files are multiplied as they are
    "q4_0_r8": ("q8_2_x4", "native"),
    "q5_0_r4": ("q8_2_x4", "native"),
    "q6_0_r4": ("q8_2_x4", "native"),
    "q8_0_r8": ("q8_2_x4", "native"),
    "iq4_nl_r4": ("q8_2_x4", "native"),
    "mxfp4_r8": ("q8_2_x4", "native"),
    "q2_k_r4": ("q8_K", "native"),
    "q3_k_r4": ("q8_K", "native"),
    "q4_k_r4": ("q8_K32", "native"),
    "q5_k_r4": ("q8_K32", "native"),
    "q6_k_r4": ("q8_K", "native"),
    "iq4_xs_r8": ("q8_K32", "native"),
    "iq2_xxs_r4": ("q8_K", "native"),
    "iq2_xs_r4": ("q8_K", "native"),
    "iq2_s_r4": ("q8_K", "native"),
    "iq3_xxs_r4": ("q8_K", "native"),
    "iq3_s_r4": ("q8_K", "native"),
    "iq1_s_r4": ("q8_K128", "native"),
    "iq1_m_r4": ("q8_K128", "native"),
    "iq2_k_r4": ("q8_K", "native"),
    "iq3_k_r4": ("q8_K", "native"),
    "iq4_k_r4": ("q8_K", "native"),
    "iq5_k_r4": ("q8_K", "native"),
    "iq4_ks_r4": ("q8_K32", "native"),
    "iq5_ks_r4": ("q8_K32", "native"),
    "q8_k_r8": ("q8_K", "native"),
    "q8_k_r16": ("q8_K", "native"),
    "q8_KV": ("q8_KV", "native"),
    "q8_KV_r8": ("q8_KV", "native"),
    "q4_0_4x4": ("q8_0", "native"),
    "q4_0_4x8": ("q8_0", "native"),
    "q4_0_8x8": ("q8_0", "native"),
}

PATHS: dict[str, Path] = {k: Path(*v) for k, v in _TABLE.items()}
FLOAT_TYPES = frozenset({"f32", "f16", "bf16", "bf16_r16", "f64"})
MIN_ROWS_PER_THREAD = 32  # iqk_mul_mat's k_min_step: fewer weight rows per thread -> no repack
REPACK_ROWS = 16  # rows interleaved by Q8_0_R8 / Q8_1 / Q8_K_R16 with AVX512: n_out % 16 == 0


def path_of(type_name: str) -> Path | None:
    """The path of a weight type; None for float weights (activations stay float32)."""
    if type_name in FLOAT_TYPES:
        return None
    p = PATHS.get(type_name)
    if p is None:
        raise ValueError(f"no activation path is known for weight type {type_name}")
    return p


def repacks(p: Path, ny: int, n_out: int, n_threads: int, dense: bool) -> bool:
    """Whether ik multiplies the repacked weights (True) or the weights' own values: `dense` for
    a plain 2-D matmul, False for MoE experts and the fused ffn_up/ffn_gate pair."""
    if p.repack == "native" or p.min_ny == 0 or ny < p.min_ny:
        return False
    if not dense:
        return True
    return n_out // n_threads >= MIN_ROWS_PER_THREAD and n_out % REPACK_ROWS == 0
