"""Interleaved (_R4/_R8/_R16, q4_0_4x4 ...) types: dequantize by undoing the interleaving to the
base layout and calling the base dequantizer; quantize with the base quantizer, then interleave.

An interleaved group of R rows is: R row-meta fields (one per row, when the base has row meta),
then big block b = block b of each of the R rows, mixed. For each type, the forward interleaver of
one big block (_repack_fwd*, transcribed from ik_llama.cpp's repack_*) is probed with ~100
binary-coded vectors; it is an (affine) bit permutation, applied either way as a byte gather when
whole bytes move, else as a numba loop of byte ops. IQ1_S_R4 / IQ1_M_R4 / Q8_K_R8 / Q8_K_R16 /
Q8_KV_R8 / BF16_R16 are their own formats (no exact base) and are dequantized directly.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit

from iqk_studio.gguf.types import BY_NAME, QuantType
from iqk_studio.quant import registry
from iqk_studio.quant.kernels import _repack_fwd, _repack_fwd_iq

# IQ2_XXS / IQ2_XS / IQ3_XXS _R4 store sign indices through ik's scrambled_sign table
# (iqk_quantize.cpp:7631-7643); a 128-entry permutation of 7-bit values
SCRAMBLED_SIGN = np.array([
    0x00, 0x7f, 0x7e, 0x01, 0x7c, 0x03, 0x02, 0x7d, 0x78, 0x07, 0x06, 0x79, 0x04, 0x7b, 0x7a, 0x05,
    0x70, 0x0f, 0x0e, 0x71, 0x0c, 0x73, 0x72, 0x0d, 0x08, 0x77, 0x76, 0x09, 0x74, 0x0b, 0x0a, 0x75,
    0x60, 0x1f, 0x1e, 0x61, 0x1c, 0x63, 0x62, 0x1d, 0x18, 0x67, 0x66, 0x19, 0x64, 0x1b, 0x1a, 0x65,
    0x10, 0x6f, 0x6e, 0x11, 0x6c, 0x13, 0x12, 0x6d, 0x68, 0x17, 0x16, 0x69, 0x14, 0x6b, 0x6a, 0x15,
    0x40, 0x3f, 0x3e, 0x41, 0x3c, 0x43, 0x42, 0x3d, 0x38, 0x47, 0x46, 0x39, 0x44, 0x3b, 0x3a, 0x45,
    0x30, 0x4f, 0x4e, 0x31, 0x4c, 0x33, 0x32, 0x4d, 0x48, 0x37, 0x36, 0x49, 0x34, 0x4b, 0x4a, 0x35,
    0x20, 0x5f, 0x5e, 0x21, 0x5c, 0x23, 0x22, 0x5d, 0x58, 0x27, 0x26, 0x59, 0x24, 0x5b, 0x5a, 0x25,
    0x50, 0x2f, 0x2e, 0x51, 0x2c, 0x53, 0x52, 0x2d, 0x28, 0x57, 0x56, 0x29, 0x54, 0x2b, 0x2a, 0x55,
], dtype=np.uint16)
UNSCRAMBLE = np.argsort(SCRAMBLED_SIGN).astype(np.uint16)

# interleaved types undone through the base layout (each has a fwd_<name> in _repack_fwd*)
VIA_BASE = ("q4_0_4x4", "q4_0_4x8", "q4_0_8x8", "q4_0_r8", "q5_0_r4", "q6_0_r4", "q8_0_r8",
            "iq4_nl_r4", "mxfp4_r8", "q2_k_r4", "q3_k_r4", "q4_k_r4", "q5_k_r4", "q6_k_r4",
            "iq2_xxs_r4", "iq2_xs_r4", "iq2_s_r4", "iq3_xxs_r4", "iq3_s_r4", "iq4_xs_r8",
            "iq4_ks_r4", "iq5_ks_r4", "iq2_k_r4", "iq3_k_r4", "iq4_k_r4", "iq5_k_r4", "iq2_bn_r4")


def forward(name: str):
    """The forward interleaver of one big block (_repack_fwd / _repack_fwd_iq)."""
    for mod in (_repack_fwd, _repack_fwd_iq):
        if hasattr(mod, f"fwd_{name}"):
            return getattr(mod, f"fwd_{name}")
    raise KeyError(name)


@cache
def bit_map(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(src, const, bytewise) of one big block: base-layout bit j = interleaved bit src[j] ^
    const bit; bytewise when every base byte is one interleaved byte (fast path)."""
    t = BY_NAME[name]
    R, ts = t.interleave, BY_NAME[t.base].type_size
    f = forward(name)
    nbytes = R * ts
    nb = max(1, (nbytes - 1).bit_length())

    def run(x):  # base bytes (B, nbytes) -> interleaved bits (B, 8·nbytes), constant removed
        y = f(x.reshape(-1, R, ts)).astype(np.uint8) ^ const
        return np.unpackbits(y, axis=-1, bitorder="little")

    const = f(np.zeros((1, R, ts), np.int64))[0].astype(np.uint8)
    idx = np.arange(nbytes)
    # probes: every base byte = bit t (which bit of its byte feeds each output bit), and bit t
    # only in bytes whose index has bit b set (the binary digits of the feeding byte)
    pos_probe = np.array([np.full(nbytes, 1 << k) for k in range(8)], np.int64)
    digit_probe = np.array([((idx >> b) & 1) << k for k in range(8) for b in range(nb)], np.int64)
    pos_bits = run(pos_probe)  # (8, nbits)
    if not (pos_bits.sum(0) == 1).all():
        raise RuntimeError(f"{name}: interleaver is not a bit permutation")
    bit = pos_bits.argmax(0)  # interleaved bit o <- bit `bit[o]` of some base byte
    digits = run(digit_probe).reshape(8, nb, -1)[bit, :, np.arange(bit.size)]  # (nbits, nb)
    inv = 8 * (digits << np.arange(nb)).sum(1) + bit  # interleaved bit o <- base bit inv[o]
    if sorted(inv) != list(range(8 * nbytes)):
        raise RuntimeError(f"{name}: interleaver is not a bit permutation")
    src = np.argsort(inv)  # base bit j -> interleaved bit src[j]
    x = np.random.default_rng(0).integers(0, 256, (4, nbytes))
    y = np.packbits(run(x), axis=-1, bitorder="little")
    if not (np.unpackbits(y, axis=-1, bitorder="little")[:, src] ==
            np.unpackbits(x.astype(np.uint8), axis=-1, bitorder="little")).all():
        raise RuntimeError(f"{name}: interleaver is not linear in the bits")
    byte_src = src[::8] // 8
    whole = 8 * np.repeat(byte_src, 8) + np.tile(np.arange(8), len(byte_src))
    bytewise = bool((src == whole).all())
    return src, np.unpackbits(const, bitorder="little"), bytewise


@cache
def byte_ops(name: str, to_interleaved: bool = False) -> tuple[np.ndarray, ...]:
    """The bit permutation as byte operations: out[ob] |= (in[ib] >> sh) & mask (sh < 0: left
    shift), one per (out byte, in byte, shift) run of bits; base <- interleaved by default."""
    src = bit_map(name)[0]
    m = np.argsort(src) if to_interleaved else src  # out bit j <- in bit m[j]
    ops: dict[tuple[int, int, int], int] = {}
    for j, s in enumerate(m):
        key = (j // 8, int(s) // 8, int(s) % 8 - j % 8)
        ops[key] = ops.get(key, 0) | (1 << (j % 8))
    keys = sorted(ops)
    col = [np.array([k[c] for k in keys], np.int64) for c in range(3)]
    return (*col, np.array([ops[k] for k in keys], np.int64))


@njit(nogil=True, cache=True)
def _gather_bits(out, blocks, ob, ib, sh, mask):
    # out (B, nbytes) u8 zeroed, blocks (B, nbytes) u8: out[b, ob] |= shift(blocks[b, ib]) & mask
    for b in range(blocks.shape[0]):
        for k in range(ob.shape[0]):
            v = np.int64(blocks[b, ib[k]])
            v = v >> sh[k] if sh[k] >= 0 else v << -sh[k]
            out[b, ob[k]] |= np.uint8(v & mask[k])


def deinterleave_blocks(blocks: np.ndarray, name: str) -> np.ndarray:
    """(..., R·type_size) interleaved big blocks -> (..., R·type_size) base blocks, row-major."""
    src, cbits, bytewise = bit_map(name)
    x = blocks ^ np.packbits(cbits, bitorder="little") if cbits.any() else blocks
    if bytewise:
        return x[..., src[::8] // 8]
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.zeros_like(flat)
    _gather_bits(out, flat, *byte_ops(name))
    return out.reshape(x.shape)


SCRAMBLED = ("iq2_xxs_r4", "iq2_xs_r4", "iq3_xxs_r4")


def scramble_signs(base_rows: np.ndarray, name: str, table: np.ndarray) -> None:
    """In place, map the 7-bit sign indices of base-layout rows through `table`: IQ2_XXS / IQ3_XXS
    (4 per u32 word, bits 7m..7m+6) and IQ2_XS (u16 bits 9-15). UNSCRAMBLE undoes ik's table."""
    rows = base_rows.shape[0]
    if name == "iq2_xs_r4":
        q = base_rows.reshape(rows, -1, 74)[:, :, 2:66].copy().view("<u2")
        q[:] = (q & 511) | (table[q >> 9] << 9)
        base_rows.reshape(rows, -1, 74)[:, :, 2:66] = q.view(np.uint8)
        return
    bs, first, step = (66, 6, 8) if name == "iq2_xxs_r4" else (98, 66, 4)
    blk = base_rows.reshape(rows, -1, bs)
    for ib in range(8):
        o = first + step * ib
        w = blk[:, :, o:o + 4].copy().view("<u4")[..., 0]
        for m in range(4):
            sh = np.uint32(7 * m)
            s = (w >> sh) & np.uint32(127)
            w = (w & ~np.uint32(127 << (7 * m))) | (table[s].astype(np.uint32) << sh)
        blk[:, :, o:o + 4] = w.astype("<u4").view(np.uint8).reshape(rows, -1, 4)


def to_base(raw: np.ndarray, name: str, n: int) -> np.ndarray:
    """(rows, row_bytes) interleaved -> (rows, row_bytes) in the base type's layout."""
    t: QuantType = BY_NAME[name]
    base = BY_NAME[t.base]
    R, meta, ts = t.interleave, base.row_meta, base.type_size
    rows, nb = raw.shape[0], n // base.block
    if rows % R:
        raise ValueError(f"{name} holds rows in groups of {R}; got {rows} rows")
    grp = np.ascontiguousarray(raw).reshape(rows // R, R * (meta + nb * ts))
    blocks = deinterleave_blocks(grp[:, R * meta:].reshape(rows // R, nb, R * ts), name)
    body = blocks.reshape(rows // R, nb, R, ts).transpose(0, 2, 1, 3).reshape(rows, nb * ts)
    out = np.concatenate([grp[:, :R * meta].reshape(rows, meta), body], axis=1) if meta else body
    out = np.ascontiguousarray(out)
    if name in SCRAMBLED:
        scramble_signs(out, name, UNSCRAMBLE)
    return out


def _via_base(name: str):
    def dequant(raw: np.ndarray, n: int) -> np.ndarray:
        base = BY_NAME[name].base
        fn = registry.dequantizers().get(base)
        if fn is None:
            raise ValueError(f"dequantizing {name} needs the {base} dequantizer, not available")
        return fn(to_base(raw, name, n), n)

    dequant.__name__ = f"dequant_{name}"
    return dequant


# ------------------------------------------------------------------ interleaving (quantizing)

def interleave_blocks(blocks: np.ndarray, name: str) -> np.ndarray:
    """Inverse of deinterleave_blocks: (..., R·type_size) base blocks -> interleaved."""
    src, cbits, bytewise = bit_map(name)
    cbytes = np.packbits(cbits, bitorder="little")
    if bytewise:
        out = np.empty_like(blocks)
        out[..., src[::8] // 8] = blocks
    else:
        flat = np.ascontiguousarray(blocks).reshape(-1, blocks.shape[-1])
        out = np.zeros_like(flat)
        _gather_bits(out, flat, *byte_ops(name, True))
        out = out.reshape(blocks.shape)
    return out ^ cbytes if cbits.any() else out


def from_base(base_rows: np.ndarray, name: str, n: int) -> np.ndarray:
    """(rows, row_bytes) in the base layout -> the interleaved layout (rows a multiple of R)."""
    t = BY_NAME[name]
    base = BY_NAME[t.base]
    R, meta, ts = t.interleave, base.row_meta, base.type_size
    rows, nb = base_rows.shape[0], n // base.block
    if rows % R:
        raise ValueError(f"{name} holds rows in groups of {R}; got {rows} rows")
    x = np.array(base_rows, dtype=np.uint8, order="C")
    if name in SCRAMBLED:
        scramble_signs(x, name, SCRAMBLED_SIGN)
    body = x[:, meta:].reshape(rows // R, R, nb, ts).transpose(0, 2, 1, 3)
    blocks = interleave_blocks(body.reshape(rows // R, nb, R * ts), name).reshape(rows // R, -1)
    if meta:
        blocks = np.concatenate([x[:, :meta].reshape(rows // R, R * meta), blocks], axis=1)
    return np.ascontiguousarray(blocks).reshape(rows, -1)


# repack_* callers that run the imatrix through QHelper first (iqk_quantize.cpp:46-110), with
# its block size; the others pass the imatrix straight to the base quantizer
QHELPER_BLOCK = {"q4_0_r8": 32, "iq4_nl_r4": 32, "q6_0_r4": 32, "iq4_xs_r8": 32, "q4_k_r4": 32,
                 "q5_k_r4": 32, "q6_k_r4": 16, "q3_k_r4": 16, "q2_k_r4": 16, "iq2_xxs_r4": 32,
                 "iq2_xs_r4": 16, "iq2_s_r4": 16, "iq3_xxs_r4": 32, "iq3_s_r4": 16}
# quantized as base + repack (q4_0_4x4/4x8/8x8 and mxfp4_r8 have their own simpler quantizers)
QUANT_VIA_BASE = tuple(n for n in VIA_BASE if n not in ("q4_0_4x4", "q4_0_4x8", "q4_0_8x8",
                                                        "mxfp4_r8"))


@njit(nogil=True, cache=True)
def _qhelper_weights(w, x, qw, bs):
    # w (rows, n) = qw, except bs-blocks whose Σqw², Σx² or Σqw·|x| (float32, in order) is
    # <= bs·1e-18: those get 1e-9 (QHelper::row_weights)
    lim = np.float32(bs) * (np.float32(1e-9) * np.float32(1e-9))
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // bs):
            sw2 = sx2 = swx = np.float32(0)
            for j in range(b * bs, (b + 1) * bs):
                w[r, j] = qw[j]
                sw2 += qw[j] * qw[j]
                sx2 += x[r, j] * x[r, j]
                swx += qw[j] * abs(x[r, j])
            if not (sw2 > lim and sx2 > lim and swx > lim):
                for j in range(b * bs, (b + 1) * bs):
                    w[r, j] = np.float32(1e-9)


def _via_base_quant(name: str):
    def quant(x: np.ndarray, qw, mode) -> np.ndarray:
        base = BY_NAME[name].base
        fn = registry.quantizers().get(base)
        if fn is None:
            raise ValueError(f"quantizing to {name} needs the {base} quantizer, not available")
        bs = QHELPER_BLOCK.get(name)
        if qw is None or bs is None:
            q = fn(x, qw, mode)
        else:  # QHelper: rows with a degenerate block are quantized with their own weights
            w = np.empty_like(x)
            _qhelper_weights(w, x, qw, bs)
            bad = (w != qw).any(axis=1)
            if not bad.any():
                q = fn(x, qw, mode)
            else:
                q = np.empty((x.shape[0], BY_NAME[base].row_bytes(x.shape[1])), np.uint8)
                if not bad.all():
                    q[~bad] = fn(np.ascontiguousarray(x[~bad]), qw, mode)
                for r in np.flatnonzero(bad):
                    q[r] = fn(x[r:r + 1], w[r], mode)[0]
        return from_base(q, name, x.shape[1])

    quant.__name__ = f"quantize_{name}"
    return quant


# ------------------------------------------------------------------ types dequantized directly

def _groups(raw: np.ndarray, name: str) -> np.ndarray:
    R = BY_NAME[name].interleave
    if raw.shape[0] % R:
        raise ValueError(f"{name} holds rows in groups of {R}; got {raw.shape[0]} rows")
    return np.ascontiguousarray(raw).reshape(raw.shape[0] // R, -1)


def _rows_out(y: np.ndarray, n: int) -> np.ndarray:
    """(G, R, n) -> (G·R, n) float32."""
    return np.ascontiguousarray(y, dtype=np.float32).reshape(-1, n)


def _iq1s_grid() -> np.ndarray:
    from gguf.quants import IQ1_S

    IQ1_S.init_grid()
    return IQ1_S.grid.reshape(2048, 8)


def dequant_iq1_s_r4(raw: np.ndarray, n: int) -> np.ndarray:
    # group: d:f16[4] | blocks of 32 { qs:u8[16] | qh:u16[4] }; row k of block: qs[4i+k] with
    # 3 high index bits at qh[k] >> 3i, scale 2·((qh[k] >> 12) & 7) + 1, delta sign qh[k] bit 15
    g = _groups(raw, "iq1_s_r4")
    G, nb = g.shape[0], n // 32
    d = g[:, :8].copy().view(np.float16).astype(np.float32)  # (G, 4)
    blk = g[:, 8:].reshape(G, nb, 24)
    qs = blk[..., :16].reshape(G, nb, 4, 4).astype(np.int64)  # [i, k]
    qh = blk[..., 16:].copy().view("<u2").astype(np.int64)  # (G, nb, 4) [k]
    idx = qs.transpose(0, 1, 3, 2) | (((qh[..., None] >> (3 * np.arange(4))) & 7) << 8)  # [k, i]
    dl = d[:, None, :] * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)  # (G, nb, 4)
    delta = np.where(qh & 0x8000, np.float32(-0.125), np.float32(0.125))
    vals = dl[..., None, None] * (_iq1s_grid()[idx] + delta[..., None, None])  # (G, nb, k, i, 8)
    return _rows_out(vals.transpose(0, 2, 1, 3, 4), n)


def dequant_iq1_m_r4(raw: np.ndarray, n: int) -> np.ndarray:
    # group: d:f16[4] | blocks of 32 { qs:u8[16] | qh:u8[8] | scales:u8[4] }; row k, half i:
    # scale nibble i of scales[k], indices qs[8i+k] (+ qh[4i+k] bits 0-2), qs[8i+k+4] (bits 4-6),
    # delta signs qh bits 3 and 7
    g = _groups(raw, "iq1_m_r4")
    G, nb = g.shape[0], n // 32
    d = g[:, :8].copy().view(np.float16).astype(np.float32)
    blk = g[:, 8:].reshape(G, nb, 28).astype(np.int64)
    qs = blk[..., :16].reshape(G, nb, 2, 2, 4)  # [i, half, k]
    qh = blk[..., 16:24].reshape(G, nb, 2, 4)  # [i, k]
    sc = blk[..., 24:]
    hi = np.stack([(qh & 0x07) << 8, (qh & 0x70) << 4], axis=3)  # (G, nb, i, half, k)
    idx = qs | hi
    neg = np.stack([qh & 0x08, qh & 0x80], axis=3) != 0
    delta = np.where(neg, np.float32(-0.125), np.float32(0.125))
    nib = np.stack([sc & 0xF, sc >> 4], axis=2).astype(np.float32)  # (G, nb, i, k)
    dl = d[:, None, None, :] * nib
    vals = dl[:, :, :, None, :, None] * (_iq1s_grid()[idx] + delta[..., None])  # (G,nb,i,h,k,8)
    return _rows_out(vals.transpose(0, 4, 1, 2, 3, 5), n)


def _q8_k_rN(raw: np.ndarray, n: int, name: str, R: int) -> np.ndarray:
    # super-block: d:f16[R] | qs[R·256]: row k value 4j+i at qs[4R·j + 4k + i]
    g = _groups(raw, name)
    G, nb = g.shape[0], n // 256
    blk = g.reshape(G, nb, 2 * R + 256 * R)
    d = blk[..., :2 * R].copy().view(np.float16).astype(np.float32)  # (G, nb, R)
    q = blk[..., 2 * R:].reshape(G, nb, 64, R, 4)
    if R == 16:  # stored as unsigned (q + 128), dequantize_row_q8_k_r16
        qf = q.astype(np.float32) - np.float32(128)
    else:
        qf = q.view(np.int8).astype(np.float32)
    vals = d[:, :, None, :, None] * qf  # (G, nb, 64, R, 4)
    return _rows_out(vals.transpose(0, 3, 1, 2, 4), n)


def dequant_q8_k_r8(raw, n):
    return _q8_k_rN(raw, n, "q8_k_r8", 8)


def dequant_q8_k_r16(raw, n):
    return _q8_k_rN(raw, n, "q8_k_r16", 16)


def dequant_q8_kv_r8(raw: np.ndarray, n: int) -> np.ndarray:
    # group: d:f32[8] | qs:i8[8n]: row k value 16b + 4l + i at qs[128b + 32l + 4k + i]
    g = _groups(raw, "q8_KV_r8")
    G = g.shape[0]
    d = g[:, :32].copy().view(np.float32)  # (G, 8)
    q = g[:, 32:].reshape(G, n // 16, 4, 8, 4).view(np.int8).astype(np.float32)
    vals = d[:, None, None, :, None] * q
    return _rows_out(vals.transpose(0, 3, 1, 2, 4), n)


def dequant_bf16_r16(raw: np.ndarray, n: int) -> np.ndarray:
    # 16 rows: value pair b of row k at pair 16b + k
    g = _groups(raw, "bf16_r16")
    u = g.reshape(g.shape[0], n // 2, 16, 2, 2).transpose(0, 2, 1, 3, 4)
    bits = np.ascontiguousarray(u).view("<u2").astype(np.uint32) << 16
    return _rows_out(bits.view(np.float32), n)


def _quantizable_elsewhere() -> set[str]:
    """Type names the other kernel modules quantize (read directly: the registry is still being
    built while this module is imported), so only types whose base quantizes are registered."""
    import importlib
    import pkgutil

    from iqk_studio.quant import kernels

    names: set[str] = set()
    for info in pkgutil.iter_modules(kernels.__path__):
        if not info.name.startswith("_") and info.name != __name__.rsplit(".", 1)[-1]:
            mod = importlib.import_module(f"{kernels.__name__}.{info.name}")
            names |= set(getattr(mod, "QUANT", {}))
    return names


_BASES = _quantizable_elsewhere()
QUANT = {name: _via_base_quant(name) for name in QUANT_VIA_BASE if BY_NAME[name].base in _BASES}
DEQUANT = {name: _via_base(name) for name in VIA_BASE}
DEQUANT.update({
    "iq1_s_r4": dequant_iq1_s_r4, "iq1_m_r4": dequant_iq1_m_r4, "q8_k_r8": dequant_q8_k_r8,
    "q8_k_r16": dequant_q8_k_r16, "q8_KV_r8": dequant_q8_kv_r8, "bf16_r16": dequant_bf16_r16,
})
