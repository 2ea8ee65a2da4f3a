"""Forward interleavers (ik_llama.cpp iqk_quantize.cpp repack_*, file form: online=false, and
ggml-aarch64.c make_block_q4_0x{4,8}) for ONE block per row, batched: x (B, R, type_size) int64
bytes of R base-layout blocks -> (B, R·type_size) bytes of one interleaved block.

They only move bits (plus a constant xor for q4_0_4x4/4x8/8x8; the IQ2_XXS/IQ2_XS/IQ3_XXS sign
scrambling is left out here and undone separately), so layout.py probes them with unit vectors
to get a bit permutation and inverts it. Offsets below are the ggml-common.h struct layouts.
"""

from __future__ import annotations

import numpy as np

Q4K_PAIRS = ((0, 8), (16, 24), (4, 12), (20, 28))  # nibble pairs of 4 consecutive values
XS_PAIRS = ((0, 4), (8, 12), (16, 20), (24, 28))
Q2_GROUPS = ((0, 4, 8, 12), (16, 20, 24, 28))  # 2-bit values packed 4 per byte
Q3H_GROUP = ((0, 4, 8, 12, 16, 20, 24, 28),)  # 3rd bits of q3_K/iq3_k
Q5H_GROUP = ((0, 8, 4, 12, 16, 24, 20, 28),)  # 5th bits of q5_K
IQ5H_GROUP = ((0, 8, 16, 24, 4, 12, 20, 28),)  # 5th bits of iq5_k/iq5_ks
Q6H_GROUPS = ((0, 8, 4, 12), (16, 24, 20, 28))  # 2 high bits of q6_K


def _u16(b, off):
    return b[:, off] | (b[:, off + 1] << 8)


def _u32(b, off):
    return _u16(b, off) | (_u16(b, off + 2) << 16)


def _put(y, off, v, nbytes=1):
    for j in range(nbytes):
        y[:, off + j] |= (v >> (8 * j)) & 0xFF


def pack(y, off, L, k, ib, stride_ib, stride_p, groups, bits, mask=0xF, shift=0):
    """y[off + stride_ib·ib + 4k + i + stride_p·p] = Σ_m ((L[32ib + i + g_m] >> shift) & mask)
    << bits·m for each group p (the common shape of every repack_* inner loop)."""
    for p, group in enumerate(groups):
        for i in range(4):
            v = 0
            for m, g in enumerate(group):
                v = v | (((L[:, 32 * ib + i + g] >> shift) & mask) << (bits * m))
            y[:, off + stride_ib * ib + 4 * k + i + stride_p * p] |= v


def nibbles(qs):
    """(B, 16·m) bytes of 4-bit values, 32-value blocks: value j<16 low nibble, j>=16 high."""
    b = qs.reshape(qs.shape[0], -1, 16)
    return np.concatenate([b & 0xF, b >> 4], axis=2).reshape(qs.shape[0], -1)


def L_q4_k(b):  # (B, 144) -> 256 4-bit values, Ld, Lm (8 6-bit scales and mins)
    qs = b[:, 16:144].reshape(-1, 4, 32)
    L = np.concatenate([qs & 0xF, qs >> 4], axis=2).reshape(-1, 256)
    return (L, *_scale_min_k4(b[:, 4:16]))


def _scale_min_k4(sc):
    ld, lm = [], []
    for j in range(8):
        if j < 4:
            ld.append(sc[:, j] & 63)
            lm.append(sc[:, j + 4] & 63)
        else:
            ld.append((sc[:, j + 4] & 0xF) | ((sc[:, j - 4] >> 6) << 4))
            lm.append((sc[:, j + 4] >> 4) | ((sc[:, j] >> 6) << 4))
    return np.stack(ld, 1), np.stack(lm, 1)


def L_q5_k(b):
    L, ld, lm = L_q4_k(np.concatenate([b[:, :16], b[:, 48:176]], axis=1))
    qh = b[:, 16:48]
    for ib64 in range(4):
        L[:, 64 * ib64:64 * ib64 + 32] |= ((qh >> (2 * ib64)) & 1) << 4
        L[:, 64 * ib64 + 32:64 * ib64 + 64] |= ((qh >> (2 * ib64 + 1)) & 1) << 4
    return L, ld, lm


def L_q6_k(b):
    L = np.zeros((b.shape[0], 256), np.int64)
    for h in range(2):
        ql, qh = b[:, 64 * h:64 * h + 64], b[:, 128 + 32 * h:128 + 32 * h + 32]
        n = 128 * h
        L[:, n:n + 32] = (ql[:, :32] & 0xF) | ((qh & 3) << 4)
        L[:, n + 32:n + 64] = (ql[:, 32:] & 0xF) | (((qh >> 2) & 3) << 4)
        L[:, n + 64:n + 96] = (ql[:, :32] >> 4) | (((qh >> 4) & 3) << 4)
        L[:, n + 96:n + 128] = (ql[:, 32:] >> 4) | (((qh >> 6) & 3) << 4)
    return L


def L_2bit(qs, qh=None, hm_stride=1):
    """q2_K / q3_K / iq2_k / iq3_k values: 32 bytes per 128 values, 4 shifts of 2 bits; the 3rd
    bit from qh bit (index of the 32-value group) when given (q3_K hmask, iq3_k qh)."""
    L = np.zeros((qs.shape[0], 256), np.int64)
    for g in range(8):
        L[:, 32 * g:32 * g + 32] = (qs[:, 32 * (g // 4):32 * (g // 4) + 32] >> (2 * (g % 4))) & 3
        if qh is not None:
            L[:, 32 * g:32 * g + 32] |= ((qh >> g) & 1) << 2
    return L


def L_q3_k_scales(sc):  # 12 bytes -> 16 6-bit scales (convert_q3_k's aux shuffle)
    a = [sc[:, 4 * j] | (sc[:, 4 * j + 1] << 8) | (sc[:, 4 * j + 2] << 16)
         | (sc[:, 4 * j + 3] << 24) for j in range(3)]
    m1, m2 = 0x03030303, 0x0F0F0F0F
    aux = [(a[0] & m2) | (((a[2] >> 0) & m1) << 4), (a[1] & m2) | (((a[2] >> 2) & m1) << 4),
           ((a[0] >> 4) & m2) | (((a[2] >> 4) & m1) << 4),
           ((a[1] >> 4) & m2) | (((a[2] >> 6) & m1) << 4)]
    return np.stack([(w >> (8 * j)) & 0xFF for w in aux for j in range(4)], 1)


def L_iq5_k(qs, qh):  # convert_iq5_k: qs (B, 128), qh (B, 32)
    L = np.zeros((qs.shape[0], 256), np.int64)
    for ib64 in range(4):
        s = 2 * ib64
        q, h = qs[:, 32 * ib64:32 * ib64 + 32], qh
        o = 64 * ib64
        L[:, o:o + 16] = (q[:, :16] & 0xF) | (((h[:, :16] >> s) & 1) << 4)
        L[:, o + 16:o + 32] = (q[:, 16:] & 0xF) | (((h[:, 16:] >> s) & 1) << 4)
        L[:, o + 32:o + 48] = (q[:, :16] >> 4) | (((h[:, :16] >> s) & 2) << 3)
        L[:, o + 48:o + 64] = (q[:, 16:] >> 4) | (((h[:, 16:] >> s) & 2) << 3)
    return L


def _y(x):
    return np.zeros((x.shape[0], x.shape[1] * x.shape[2]), np.int64)


def _copy_d(y, x, off_x, off_y, nbytes=2, slot=None):
    """Per-row field (fp16 d, ...) of row k to y[off_y + nbytes·slot(k)]."""
    for k in range(x.shape[1]):
        s = k if slot is None else slot(k)
        y[:, off_y + nbytes * s:off_y + nbytes * (s + 1)] = x[:, k, off_x:off_x + nbytes]


# ------------------------------------------------------------------ 32-element block types


def fwd_q4_0_r8(x, d_bytes=2):  # also mxfp4_r8 with d_bytes=1 (e)
    y = _y(x)
    _copy_d(y, x, 0, 0, d_bytes)
    q = 8 * d_bytes
    for k in range(8):
        for li in range(4):
            o = q + 32 * li + 4 * k
            y[:, o:o + 4] = x[:, k, d_bytes + 4 * li:d_bytes + 4 * li + 4]
    return y


def fwd_mxfp4_r8(x):
    return fwd_q4_0_r8(x, 1)


def fwd_q8_0_r8(x):
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(8):
        for li in range(4):
            for h in range(2):
                o = 16 + 32 * li + 4 * k + 128 * h
                y[:, o:o + 4] = x[:, k, 2 + 4 * li + 16 * h:2 + 4 * li + 16 * h + 4]
    return y


def fwd_iq4_nl_r4(x):
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        pack(y, 8, nibbles(x[:, k, 2:18]), k, 0, 64, 16, Q4K_PAIRS, 4)
    return y


def _fwd_q4_0_aarch64(x, bsi):
    """make_block_q4_0x{4,8}: d of each row, then quants interleaved in chunks of bsi, ^ 0x88."""
    R = x.shape[1]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for i in range(16 * R):
        src = (i // (R * bsi)) * bsi + i % bsi
        y[:, 2 * R + i] = x[:, (i % (R * bsi)) // bsi, 2 + src] ^ 0x88
    return y


def fwd_q4_0_4x4(x):
    return _fwd_q4_0_aarch64(x, 4)


def fwd_q4_0_4x8(x):
    return _fwd_q4_0_aarch64(x, 8)


def fwd_q4_0_8x8(x):
    return _fwd_q4_0_aarch64(x, 8)


def _q56_0_L(x, k, bits6):
    b = x[:, k]
    if bits6:  # q6_0: d | qh[8] | qs[16]
        qs, L = b[:, 10:26], np.zeros((b.shape[0], 32), np.int64)
        for j in range(16):
            h = b[:, 2 + j % 8] >> (4 * (j // 8))
            L[:, j] = (qs[:, j] & 0xF) | ((h << 4) & 0x30)
            L[:, j + 16] = (qs[:, j] >> 4) | ((h << 2) & 0x30)
        return L
    qh, qs = _u32(b, 2), b[:, 6:22]  # q5_0: d | qh u32 | qs[16]
    L = np.zeros((b.shape[0], 32), np.int64)
    for j in range(16):
        L[:, j] = (qs[:, j] & 0xF) | (((qh >> j) << 4) & 0x10)
        L[:, j + 16] = (qs[:, j] >> 4) | ((qh >> (j + 12)) & 0x10)
    return L


def _fwd_q56_0_r4(x, bits6):
    y = _y(x)
    _copy_d(y, x, 0, 0)
    qh_off, qs_off = 8, (40 if bits6 else 24)
    for k in range(4):
        L = _q56_0_L(x, k, bits6)
        for li in range(4):
            l1 = 4 * (li // 2) + 16 * (li % 2)
            l2 = l1 + 8
            for i in range(4):
                lo, hi = L[:, i + l1], L[:, i + l2]
                y[:, qs_off + 4 * k + i + 16 * li] = (lo & 0xF) | ((hi & 0xF) << 4)
                h = (lo >> 4) | ((hi >> 4) << 4)
                if bits6:
                    y[:, qh_off + 4 * k + i + 16 * (li % 2)] |= h << (2 * (li // 2))
                else:
                    y[:, qh_off + 4 * k + i] |= h << li
    return y


def fwd_q5_0_r4(x):
    return _fwd_q56_0_r4(x, False)


def fwd_q6_0_r4(x):
    return _fwd_q56_0_r4(x, True)


def fwd_iq2_bn_r4(x):  # row meta handled by the caller
    y = _y(x)
    for k in range(4):
        for li in range(4):
            for i in range(4):
                v = 0
                for m in range(4):
                    v = v | (((x[:, k, i + 4 * m] >> (2 * li)) & 3) << (2 * m))
                y[:, 4 * k + i + 16 * li] = v
    return y


# ------------------------------------------------------------------ 256-element block types


def _q45_k_scales(y, k, ld, lm, sh_off, sl_off):
    for ib in range(8):
        y[:, sl_off + 4 * ib + k] = (ld[:, ib] & 0xF) | ((lm[:, ib] & 0xF) << 4)
        h = (ld[:, ib] >> 4) | ((lm[:, ib] >> 4) << 2)
        y[:, sh_off + (4 * ib + k) % 16] |= h << (4 * ((4 * ib + k) // 16))


def fwd_q4_k_r4(x):  # d[8] | scales_h[16] | scales_l[32] | qs[512]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    _copy_d(y, x, 2, 0, slot=lambda k: k + 4)
    for k in range(4):
        L, ld, lm = L_q4_k(x[:, k])
        _q45_k_scales(y, k, ld, lm, 16, 32)
        for ib in range(8):
            pack(y, 64, L, k, ib, 64, 16, Q4K_PAIRS, 4)
    return y


def fwd_q5_k_r4(x):  # d[8] | scales_h[16] | scales_l[32] | qh[128] | qs[512]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    _copy_d(y, x, 2, 0, slot=lambda k: k + 4)
    for k in range(4):
        L, ld, lm = L_q5_k(x[:, k])
        _q45_k_scales(y, k, ld, lm, 16, 32)
        for ib in range(8):
            pack(y, 192, L, k, ib, 64, 16, Q4K_PAIRS, 4)
            pack(y, 64, L, k, ib, 16, 0, Q5H_GROUP, 1, 1, 4)
    return y


def fwd_q6_k_r4(x):  # d[4] | scales[64] | qh[256] | ql[512]
    y = _y(x)
    _copy_d(y, x, 208, 0)
    for k in range(4):
        L = L_q6_k(x[:, k])
        for ib in range(8):
            y[:, 8 + 8 * ib + k] = x[:, k, 192 + 2 * ib]
            y[:, 8 + 8 * ib + k + 4] = x[:, k, 192 + 2 * ib + 1]
            pack(y, 328, L, k, ib, 64, 16, Q4K_PAIRS, 4)
            pack(y, 72, L, k, ib, 32, 16, Q6H_GROUPS, 2, 3, 4)
    return y


def fwd_q3_k_r4(x):  # d[4] | scales_h[16] | scales_l[32] | qh[128] | qs[256]
    y = _y(x)
    _copy_d(y, x, 108, 0)
    for k in range(4):
        b = x[:, k]
        L = L_2bit(b[:, 32:96], b[:, 0:32])
        ld = L_q3_k_scales(b[:, 96:108])
        for ib in range(8):
            for h in range(2):
                s = 8 * ib + k + 4 * h
                y[:, 24 + s % 32] |= (ld[:, 2 * ib + h] & 0xF) << (4 * (s // 32))
                y[:, 8 + s % 16] |= (ld[:, 2 * ib + h] >> 4) << (2 * (s // 16))
            pack(y, 184, L, k, ib, 32, 16, Q2_GROUPS, 2, 3)
            pack(y, 56, L, k, ib, 16, 0, Q3H_GROUP, 1, 1, 2)
    return y


def fwd_q2_k_r4(x):  # d[8] | scales[64] | qs[256]
    y = _y(x)
    _copy_d(y, x, 80, 0)
    _copy_d(y, x, 82, 0, slot=lambda k: k + 4)
    for k in range(4):
        L = L_2bit(x[:, k, 16:80])
        for ib in range(16):
            y[:, 16 + 4 * ib + k] = x[:, k, ib]
        for ib in range(8):
            pack(y, 80, L, k, ib, 32, 16, Q2_GROUPS, 2, 3)
    return y
