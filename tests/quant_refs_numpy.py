"""Slow, obvious numpy dequantizers for ggml types that gguf-py does not implement (ik_llama.cpp
additions). One function per ggml type name: `def ref_dequant_<name>(raw, n) -> float32 (rows, n)`,
raw being uint8 (rows, row_bytes). Append yours; tests/test_quant_refs.py finds them by name.
"""

from __future__ import annotations

import numpy as np

F = np.float32


def _blocks(raw: np.ndarray, n: int, block: int, bpb: int, meta: int = 0) -> np.ndarray:
    """(rows, n // block, bpb) view of the block bytes, after `meta` row-header bytes."""
    raw = np.asarray(raw, np.uint8).reshape(raw.shape[0], -1)
    return raw[:, meta:].reshape(raw.shape[0], n // block, bpb)


def _f16(b: np.ndarray) -> np.ndarray:
    """(..., 2) little-endian half bytes -> float32 (...)."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def ref_dequant_q6_0(raw: np.ndarray, n: int) -> np.ndarray:
    """Q6_0: d f16 | qh u8[8] | qs u8[16]; q = low4 | 2 high bits, y = d * (q - 32).
    Element j (< 16): low nibble of qs[j], bits 0-1 of (qh[j % 8] >> 4*(j // 8)); element j + 16:
    high nibble of qs[j], bits 2-3 of the same qh nibble."""
    b = _blocks(raw, n, 32, 26)
    d = _f16(b[..., 0:2])
    qh = b[..., 2:10].astype(np.int32)
    qs = b[..., 10:26].astype(np.int32)
    out = np.empty(b.shape[:2] + (32,), np.float32)
    for j in range(16):
        h = qh[..., j % 8] >> (4 * (j // 8))
        lo = (qs[..., j] & 0xF) | ((h & 3) << 4)
        hi = (qs[..., j] >> 4) | (((h >> 2) & 3) << 4)
        out[..., j] = d * (lo - 32).astype(np.float32)
        out[..., j + 16] = d * (hi - 32).astype(np.float32)
    return out.reshape(raw.shape[0], n)


def get(name: str):
    """The numpy dequantizer `ref_dequant_<name>` for a ggml type name, or None."""
    return globals().get(f"ref_dequant_{name}")


# ---------------------------------------------------------------------------------------------
# Slow references for the trellis and small odd types (helper D): written from the byte layouts
# in ik_llama.cpp's iqk_quantize.cpp dequantize_row_iq*_kt, vectorized over blocks, no numba.

_IQ4K = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                  1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def ref_trellis_values(codes, offset, group, is_abs=False):
    """codes (...,) -> (..., group) int values of the integer trellis (0xCBAC1FED hash)."""
    x = np.asarray(codes, dtype=np.uint64) + np.uint64(0) + np.asarray(offset, dtype=np.uint64)
    out = []
    for _ in range(group):
        x = (x * np.uint64(0xCBAC1FED)) & np.uint64(0xFFFFFFFF)
        s = x & np.uint64(0x3F3F3F3F)
        v = sum(((s >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.int64) for i in range(4)) - 126
        out.append(np.abs(v) if is_abs else v)
    return np.stack(out, axis=-1)


def _row_d(raw):
    return raw[:, :4].copy().view(np.float32)[:, 0]


def ref_dequant_iq2_kt(raw, n, is_abs=False):
    """IQ2_KT (and IQ3_KT's magnitudes when is_abs): code j of a super-block covers values 8j..8j+7;
    its 4-bit scale is nibble j//16 of scales[(j%16)//4]."""
    rows, nb = raw.shape[0], n // 256
    bs = 100 if is_abs else 68
    blk = raw[:, 4:].reshape(rows, nb, bs)
    codes = blk[..., 4:68].copy().view("<u2")  # (rows, nb, 32)
    j = np.arange(32)
    nib = (blk[..., (j % 16) // 4] >> (4 * (j // 16))) & 15  # (rows, nb, 32)
    d = _row_d(raw)[:, None, None]
    scale = d * (nib.astype(np.float32) if is_abs else _IQ4K[nib])
    v = ref_trellis_values(codes, 4096, 8, is_abs).astype(np.float32)
    y = (scale[..., None] * v)
    if is_abs:
        qh = blk[..., 68:100].reshape(rows, nb, 4, 8)  # [ig, k]
        for jj in range(32):
            bit = (jj % 16) // 4 + 4 * (jj // 16)
            ig = jj % 4
            neg = ((qh[:, :, ig, :] >> bit) & 1).astype(bool)
            y[:, :, jj, :] = np.where(neg, -y[:, :, jj, :], y[:, :, jj, :])
    return y.reshape(rows, n)


def ref_dequant_iq3_kt(raw, n):
    return ref_dequant_iq2_kt(raw, n, is_abs=True)


def ref_dequant_iq1_kt(raw, n):
    """IQ1_KT: 13-bit codes; low 8 bits ql[g], bits 8-11 a nibble of qh[g % 16] (low nibble for
    g < 16), bit 12 = bit 4 + g%4 of sh[g // 4]; scale iq4k_values[sh & 15]."""
    rows, nb = raw.shape[0], n // 256
    blk = raw[:, 4:].reshape(rows, nb, 56).astype(np.int64)
    sh, ql, qh = blk[..., :8], blk[..., 8:40], blk[..., 40:56]
    g = np.arange(32)
    code = ql | (((qh[..., g % 16] >> (4 * (g // 16))) & 15) << 8)
    code |= ((sh[..., g // 4] >> (4 + g % 4)) & 1) << 12
    scale = _row_d(raw)[:, None, None] * _IQ4K[sh[..., g // 4] & 15]
    v = ref_trellis_values(code, 4096, 8).astype(np.float32)
    return (scale[..., None] * v).reshape(rows, n)


def ref_dequant_iq4_kt(raw, n):
    """IQ4_KT: 32 u32 per super-block; word ib < 8: bit 0 offset shift (+32768), bits 1-7 scale+64,
    bits 8+3g.. code bits 12-14 of group g; codes of 4 values: ql byte | qh nibble << 8."""
    rows, nb = raw.shape[0], n // 256
    blk = raw[:, 4:].reshape(rows, nb, 128)
    shb = blk[..., :32].copy().view("<u4").astype(np.int64)  # (rows, nb, 8)
    ql = blk[..., 32:96].astype(np.int64)
    qh = blk[..., 96:128].astype(np.int64)
    jj = np.arange(64)
    ib, ig = jj // 8, jj % 8
    code = ql | (((qh[..., jj % 32] >> (4 * (jj // 32))) & 15) << 8)
    code |= ((shb[..., ib] >> (8 + 3 * ig)) & 7) << 12
    offset = 4096 + 32768 * (shb[..., ib] & 1)
    ls = ((shb[..., ib] & 0xFF) >> 1) - 64
    scale = _row_d(raw)[:, None, None] * ls.astype(np.float32)
    v = ref_trellis_values(code, offset, 4).astype(np.float32)
    return (scale[..., None] * v).reshape(rows, n)


# ---------------------------------------------------------------------------------------------
# Slow references for IQ2_K, IQ2_KS, IQ3_K, IQ3_KS, IQ2_KL (helper C): one element at a time
# from the byte layouts of ik_llama.cpp's dequantize_row_iq2_k/_ks/_kl, iq3_k/_ks. Each value is
# f32(f32(d * scale) * table value), as the C computes it.

_IQ2NL = np.array([-31, -13, 1, 17, -26, -8, 6, 22], dtype=np.float32)
_IQ3NL = np.array([-63, -40, -23, -10, 1, 13, 28, 47, -59, -36, -19, -6, 5, 17, 32, 51],
                  dtype=np.float32)


def _u16(b: np.ndarray) -> np.ndarray:
    return b[..., 0].astype(np.int64) | (b[..., 1].astype(np.int64) << 8)


def ref_dequant_iq2_k(raw, n):
    """IQ2_K: d f16 | extra u16 | scales u8[8] | qs u8[64]; 16-block i: scale nibble i%2 of
    scales[i/2] minus 8, shifted half if extra bit i; element e: qs[32*(e/128) + e%32] bits
    2*((e/32)%4)."""
    b = _blocks(raw, n, 256, 76).astype(np.int64)
    d = _f16(b[..., 0:2].astype(np.uint8))
    extra = _u16(b[..., 2:4])
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        ib, b32, r = e // 16, e // 32, e % 32
        q = (b[..., 12 + 32 * (b32 // 4) + r] >> (2 * (b32 % 4))) & 3
        ls = ((b[..., 4 + ib // 2] >> (4 * (ib % 2))) & 15) - 8
        v = _IQ2NL[4 * ((extra >> ib) & 1) + q]
        out[..., e] = (d * ls.astype(np.float32)) * v
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq2_ks(raw, n):
    """IQ2_KS: row d f16, then blocks extra u16 | scales u8[4] | qs u8[64]; 32-block i: scale =
    (nibble i%2 of scales[i/2] | extra bit 8+i << 4) - 16, shifted half if extra bit i."""
    d = _f16(np.asarray(raw, np.uint8)[:, 0:2])[:, None]
    b = _blocks(raw, n, 256, 70, meta=2).astype(np.int64)
    extra = _u16(b[..., 0:2])
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        ib, r = e // 32, e % 32
        q = (b[..., 6 + 32 * (ib // 4) + r] >> (2 * (ib % 4))) & 3
        ls = ((b[..., 2 + ib // 2] >> (4 * (ib % 2))) & 15) | (((extra >> (8 + ib)) & 1) << 4)
        v = _IQ2NL[4 * ((extra >> ib) & 1) + q]
        out[..., e] = (d * (ls - 16).astype(np.float32)) * v
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq3_k(raw, n):
    """IQ3_K: d f16 | extra u16 | scales_h u16 | scales_l u8[8] | qs u8[64] | qh u8[32];
    16-block i: scale ±(2k+1), k nibble i%2 of scales_l[i/2], minus if scales_h bit i; element e:
    low 2 bits at qs[32*(e/128) + e%32] bits 2*((e/32)%4), 3rd bit qh[e%32] bit e/32."""
    b = _blocks(raw, n, 256, 110).astype(np.int64)
    d = _f16(b[..., 0:2].astype(np.uint8))
    extra, sh = _u16(b[..., 2:4]), _u16(b[..., 4:6])
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        ib, b32, r = e // 16, e // 32, e % 32
        q = (b[..., 14 + 32 * (b32 // 4) + r] >> (2 * (b32 % 4))) & 3
        q = q | (((b[..., 78 + r] >> b32) & 1) << 2)
        k = (b[..., 6 + ib // 2] >> (4 * (ib % 2))) & 15
        ls = (2 * k + 1) * np.where((sh >> ib) & 1, -1, 1)
        v = _IQ3NL[8 * ((extra >> ib) & 1) + q]
        out[..., e] = (d * ls.astype(np.float32)) * v
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq3_ks(raw, n):
    """IQ3_KS: row d f16, then blocks extra u16 | scales u8[4] | qs u8[64] | qh u8[32]; 32-block
    i: scale = (nibble i/4 of scales[i%4] | extra bit i << 4) - 16, shifted if extra bit 8+i;
    element j of block i: qs[32*(i/4) + j] bits 2*(i%4), 3rd bit qh[j] bit i."""
    d = _f16(np.asarray(raw, np.uint8)[:, 0:2])[:, None]
    b = _blocks(raw, n, 256, 102, meta=2).astype(np.int64)
    extra = _u16(b[..., 0:2])
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        ib, j = e // 32, e % 32
        q = ((b[..., 6 + 32 * (ib // 4) + j] >> (2 * (ib % 4))) & 3)
        q = q | (((b[..., 70 + j] >> ib) & 1) << 2)
        ls = ((b[..., 2 + ib % 4] >> (4 * (ib // 4))) & 15) | (((extra >> ib) & 1) << 4)
        v = _IQ3NL[8 * ((extra >> (8 + ib)) & 1) + q]
        out[..., e] = (d * (ls - 16).astype(np.float32)) * v
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq2_kl(raw, n):
    """IQ2_KL: row d f16, then blocks scales_h u16 | scales_l u8[4] | qs u8[64] | qh u8[16];
    32-block i: scale = (nibble i/4 of scales_l[i%4] | bits 2i..2i+1 of scales_h << 4) - 32;
    pair j of block i: grid index = nibble i%2 of qs[16*(i/2) + j] | (qh[j] bit i) << 4, values
    from iq2kl_values (uint16, low byte first)."""
    from iqk_studio.quant.grids import iq2kl_values
    pairs = iq2kl_values.astype("<u2").view(np.int8).reshape(32, 2).astype(np.float32)
    d = _f16(np.asarray(raw, np.uint8)[:, 0:2])[:, None]
    b = _blocks(raw, n, 256, 86, meta=2).astype(np.int64)
    sh = _u16(b[..., 0:2])
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for p in range(128):
        ib, j = p // 16, p % 16
        g = (b[..., 6 + 16 * (ib // 2) + j] >> (4 * (ib % 2))) & 15
        g = g | (((b[..., 70 + j] >> ib) & 1) << 4)
        ls = ((b[..., 2 + ib % 4] >> (4 * (ib // 4))) & 15) | (((sh >> (2 * ib)) & 3) << 4)
        dl = d * (ls - 32).astype(np.float32)
        out[..., 2 * p] = dl * pairs[g, 0]
        out[..., 2 * p + 1] = dl * pairs[g, 1]
    return out.reshape(raw.shape[0], n)


# ---------------------------------------------------------------------------------------------
# Slow references for IQ4_K, IQ4_KS, IQ4_KSS, IQ5_K, IQ5_KS, IQ6_K (helper for the 4-6 bit IQK
# types): element by element from the block layouts of ik_llama.cpp's dequantize_row_iq*_k*,
# table values from ggml-common.h (iq4k_values, iq5nl_values; IQ6_K's cubic).

_IQ4K_BOTH = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                       -123, -100, -79, -61, -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117],
                      dtype=np.float32)
_IQ5NL = np.array([-126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18, -12, -6,
                   -1, 5, 11, 17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121,
                   -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4,
                   1, 7, 13, 19, 25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123], dtype=np.float32)


def _iq6k_cubic():
    """-127 + q(6.2568 + q(-0.11218 + 0.0011972q)) for q = 0..63 as the reference build computes it:
    three fused multiply-adds in float32. Each step is exact in float64 (the operands have at most
    30 significant bits), so one rounding to float32 per step reproduces the FMA."""
    a, b, c, d = (float(np.float32(v)) for v in (-127.0, 6.2568, -0.11218, 0.0011972))
    q = np.arange(64, dtype=np.float64)
    t = (q * d + c).astype(np.float32).astype(np.float64)
    t = (t * q + b).astype(np.float32).astype(np.float64)
    return (t * q + a).astype(np.float32)


def _scale6(b, i):
    """6-bit scale of 16-block i of IQ4_K/IQ5_K: low nibble in scales_l (bytes 8..15), high 2 bits
    in scales_h (bytes 4..7); returns ls - 32."""
    lo = (b[:, :, 8 + i // 2].astype(np.int32) >> (4 * (i % 2))) & 15
    hi = (b[:, :, 4 + i // 4].astype(np.int32) >> (2 * (i % 4))) & 3
    return (lo | (hi << 4)) - 32


def ref_dequant_iq4_k(raw, n):
    """IQ4_K: d f16 | extra u16 | scales_h[4] | scales_l[8] | qs[128]; element e of 16-block
    i = e // 16 sits in qs[16 (e // 32) + e % 16], low nibble if e % 32 < 16."""
    b = _blocks(raw, n, 256, 144)
    d = _f16(b[..., 0:2])
    extra = b[..., 2].astype(np.int32) | (b[..., 3].astype(np.int32) << 8)
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        i = e // 16
        nib = (b[..., 16 + 16 * (e // 32) + e % 16].astype(np.int32) >> (4 * ((e % 32) // 16))) & 15
        dl = (d * _scale6(b, i).astype(np.float32)).astype(np.float32)
        out[..., e] = dl * _IQ4K_BOTH[16 * ((extra >> i) & 1) + nib]
    return out.reshape(raw.shape[0], n)


def _row_f32(raw):
    return np.ascontiguousarray(np.asarray(raw, np.uint8)[:, :4]).view(np.float32)[:, 0]


def ref_dequant_iq4_ks(raw, n):
    """IQ4_KS: row d f32 | per 256: scales[8] | qs[128]; 32-block i: s = scales[i],
    y = d*((s & 254) - 127) * iq4k[16 (s & 1) + nibble], nibbles as IQ4_K."""
    b = _blocks(raw, n, 256, 136, 4)
    d = _row_f32(raw)[:, None]
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        s = b[..., e // 32].astype(np.int32)
        nib = (b[..., 8 + 16 * (e // 32) + e % 16].astype(np.int32) >> (4 * ((e % 32) // 16))) & 15
        dl = (d * ((s & 254) - 127).astype(np.float32)).astype(np.float32)
        out[..., e] = dl * _IQ4K_BOTH[16 * (s & 1) + nib]
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq4_kss(raw, n):
    """IQ4_KSS: row d f32 | per 32-block 8 uint16 words q; scale byte s = Σ (q_k & 1) << k; the
    bytes of v_k = a ^ (a >> 1), a = q_k & 0xFFFE, hold nibbles laid out as IQ4_KS's qs."""
    rows = raw.shape[0]
    w = np.ascontiguousarray(np.asarray(raw, np.uint8)[:, 4:]).view("<u2").astype(np.int64)
    w = w.reshape(rows, n // 32, 8)
    d = _row_f32(raw)[:, None]
    s = sum((w[..., k] & 1) << k for k in range(8))
    a = w & 0xFFFE
    v = a ^ (a >> 1)
    aux = np.stack([v & 255, v >> 8], axis=-1).reshape(rows, n // 32, 16)
    dl = (d * ((s & 254) - 127).astype(np.float32)).astype(np.float32)
    out = np.empty((rows, n // 32, 32), np.float32)
    for j in range(16):
        out[..., j] = dl * _IQ4K_BOTH[16 * (s & 1) + (aux[..., j] & 15)]
        out[..., j + 16] = dl * _IQ4K_BOTH[16 * (s & 1) + (aux[..., j] >> 4)]
    return out.reshape(rows, n)


def ref_dequant_iq5_k(raw, n):
    """IQ5_K: as IQ4_K plus qh[32] at 144; element e (g = e // 64, r = e % 64): low 4 bits in
    qs[32 g + r % 32] (nibble r // 32), 5th bit qh[r % 32] bit 2 g + r // 32."""
    b = _blocks(raw, n, 256, 176)
    d = _f16(b[..., 0:2])
    extra = b[..., 2].astype(np.int32) | (b[..., 3].astype(np.int32) << 8)
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        i, g, r = e // 16, e // 64, e % 64
        lo = (b[..., 16 + 32 * g + r % 32].astype(np.int32) >> (4 * (r // 32))) & 15
        hi = (b[..., 144 + r % 32].astype(np.int32) >> (2 * g + r // 32)) & 1
        dl = (d * _scale6(b, i).astype(np.float32)).astype(np.float32)
        out[..., e] = dl * _IQ5NL[32 * ((extra >> i) & 1) + (lo | (hi << 4))]
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq5_ks(raw, n):
    """IQ5_KS: row d f32 | per 256: scales[8] | qs[128] | qh[32]; element 32 i + j: low 4 bits
    in qs[32 (i // 2) + j] nibble i % 2, 5th bit qh[j] bit i; scale byte as IQ4_KS."""
    b = _blocks(raw, n, 256, 168, 4)
    d = _row_f32(raw)[:, None]
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        i, j = e // 32, e % 32
        s = b[..., i].astype(np.int32)
        lo = (b[..., 8 + 32 * (i // 2) + j].astype(np.int32) >> (4 * (i % 2))) & 15
        hi = (b[..., 136 + j].astype(np.int32) >> i) & 1
        dl = (d * ((s & 254) - 127).astype(np.float32)).astype(np.float32)
        out[..., e] = dl * _IQ5NL[32 * (s & 1) + (lo | (hi << 4))]
    return out.reshape(raw.shape[0], n)


def ref_dequant_iq6_k(raw, n):
    """IQ6_K: d f16 | extra u16 | scales i8[16] | qs[128] | qh[64]; element e (g = e // 64,
    r = e % 64): low 4 bits as IQ5_K, high 2 bits qh[32 (g // 2) + r % 32] bits 4 (g % 2) +
    2 (r // 32); y = d*scale_i * (cubic(q) + extra bit i)."""
    b = _blocks(raw, n, 256, 212)
    d = _f16(b[..., 0:2])
    extra = b[..., 2].astype(np.int32) | (b[..., 3].astype(np.int32) << 8)
    sc = b[..., 4:20].astype(np.int8).astype(np.float32)
    cubic = _iq6k_cubic()
    out = np.empty(b.shape[:2] + (256,), np.float32)
    for e in range(256):
        i, g, r = e // 16, e // 64, e % 64
        lo = (b[..., 20 + 32 * g + r % 32].astype(np.int32) >> (4 * (r // 32))) & 15
        hi = (b[..., 148 + 32 * (g // 2) + r % 32].astype(np.int32) >> (4 * (g % 2) + 2 * (r // 32))) & 3
        v = (cubic[lo | (hi << 4)] + ((extra >> i) & 1).astype(np.float32)).astype(np.float32)
        out[..., e] = (d * sc[..., i]).astype(np.float32) * v
    return out.reshape(raw.shape[0], n)
