"""The interleaving of the repacked types as a bit permutation of one big block, probed from the
forward interleavers (forward.py, forward_iq.py), and its application either way: to_base /
from_base on whole rows, with ik's scrambled sign indices of IQ2_XXS / IQ2_XS / IQ3_XXS _R4."""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit

from iqk_studio.gguf.types import BY_NAME, QuantType
from iqk_studio.quant.kernels.repacked import forward as _fwd
from iqk_studio.quant.kernels.repacked import forward_iq as _fwd_iq

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


# interleaved types undone through the base layout (each has a fwd_<name> in forward*.py)
VIA_BASE = ("q4_0_4x4", "q4_0_4x8", "q4_0_8x8", "q4_0_r8", "q5_0_r4", "q6_0_r4", "q8_0_r8",
            "iq4_nl_r4", "mxfp4_r8", "q2_k_r4", "q3_k_r4", "q4_k_r4", "q5_k_r4", "q6_k_r4",
            "iq2_xxs_r4", "iq2_xs_r4", "iq2_s_r4", "iq3_xxs_r4", "iq3_s_r4", "iq4_xs_r8",
            "iq4_ks_r4", "iq5_ks_r4", "iq2_k_r4", "iq3_k_r4", "iq4_k_r4", "iq5_k_r4", "iq2_bn_r4")


def forward(name: str):
    """The forward interleaver of one big block (forward.py / forward_iq.py)."""
    for mod in (_fwd, _fwd_iq):
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
