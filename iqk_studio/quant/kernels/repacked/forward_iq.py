"""Forward interleavers of the IQ types (iq4_xs_r8, the IQK _R4 forms, the grid _R4 forms), same
conventions as forward.py: x (B, R, type_size) int64 base blocks -> (B, R·type_size) bytes."""

from __future__ import annotations

from iqk_studio.quant.kernels.repacked.forward import (
    IQ5H_GROUP,
    Q2_GROUPS,
    Q3H_GROUP,
    Q4K_PAIRS,
    XS_PAIRS,
    L_2bit,
    L_iq5_k,
    _copy_d,
    _put,
    _u16,
    _u32,
    _y,
    nibbles,
    pack,
)


def fwd_iq4_xs_r8(x):  # d[8] | scales_h[16] | scales_l[32] | qs[1024]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(8):
        b = x[:, k]
        sh = _u16(b, 2)
        L = nibbles(b[:, 8:136])
        for ib in range(8):
            i = 8 * ib + k
            y[:, 32 + i % 32] |= ((b[:, 4 + ib // 2] >> (4 * (ib % 2))) & 0xF) << (4 * (i // 32))
            y[:, 16 + i % 16] |= ((sh >> (2 * ib)) & 3) << (2 * (i // 16))
            pack(y, 64, L, k, ib, 128, 32, XS_PAIRS, 4)
    return y


def fwd_iq4_ks_r4(x):  # (row meta apart) scales[32] | qs[512]
    y = _y(x)
    for k in range(4):
        L = nibbles(x[:, k, 8:136])
        for ib in range(8):
            y[:, 4 * ib + k] = x[:, k, ib]
            pack(y, 32, L, k, ib, 64, 16, Q4K_PAIRS, 4)
    return y


def fwd_iq5_ks_r4(x):  # (row meta apart) scales[32] | qs[512] | qh[128]
    y = _y(x)
    for k in range(4):
        L = L_iq5_k(x[:, k, 8:136], x[:, k, 136:168])
        for ib in range(8):
            y[:, 4 * ib + k] = x[:, k, ib]
            pack(y, 32, L, k, ib, 64, 16, Q4K_PAIRS, 4)
            pack(y, 544, L, k, ib, 16, 0, IQ5H_GROUP, 1, 1, 4)
    return y


def _iqk_extra(y, k, extra, off=8):
    for ib in range(8):
        y[:, off + k] |= ((extra >> (2 * ib)) & 1) << ib
        y[:, off + k + 4] |= ((extra >> (2 * ib + 1)) & 1) << ib


def _iq45_k_scales(y, b, k, sh_off=16, sl_off=32):
    for ib in range(8):
        sl, sh = b[:, 8 + ib], b[:, 4 + ib // 2] >> (4 * (ib % 2))
        for h in range(2):
            i = 8 * ib + k + 4 * h
            y[:, sl_off + i % 32] |= ((sl >> (4 * h)) & 0xF) << (4 * (i // 32))
            y[:, sh_off + i % 16] |= ((sh >> (2 * h)) & 3) << (2 * (i // 16))


def fwd_iq4_k_r4(x):  # d[4] | extra[8] | scales_h[16] | scales_l[32] | qs[512]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        b = x[:, k]
        _iqk_extra(y, k, _u16(b, 2))
        _iq45_k_scales(y, b, k)
        L = nibbles(b[:, 16:144])
        for ib in range(8):
            pack(y, 64, L, k, ib, 64, 16, Q4K_PAIRS, 4)
    return y


def fwd_iq5_k_r4(x):  # d[4] | extra[8] | scales_h[16] | scales_l[32] | qs[512] | qh[128]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        b = x[:, k]
        _iqk_extra(y, k, _u16(b, 2))
        _iq45_k_scales(y, b, k)
        L = L_iq5_k(b[:, 16:144], b[:, 144:176])
        for ib in range(8):
            pack(y, 64, L, k, ib, 64, 16, Q4K_PAIRS, 4)
            pack(y, 576, L, k, ib, 16, 0, IQ5H_GROUP, 1, 1, 4)
    return y


def fwd_iq3_k_r4(x):  # d[4] | extra[8] | scales_h[8] | scales_l[32] | qs[256] | qh[128]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        b = x[:, k]
        _iqk_extra(y, k, _u16(b, 2))
        sh = _u16(b, 4)
        L = L_2bit(b[:, 14:78], b[:, 78:110])
        for ib in range(8):
            for h in range(2):
                i = 8 * ib + k + 4 * h
                y[:, 24 + i % 32] |= ((b[:, 6 + ib] >> (4 * h)) & 0xF) << (4 * (i // 32))
                y[:, 16 + i % 8] |= ((sh >> (2 * ib + h)) & 1) << (i // 8)
            pack(y, 56, L, k, ib, 32, 16, Q2_GROUPS, 2, 3)
            pack(y, 312, L, k, ib, 16, 0, Q3H_GROUP, 1, 1, 2)
    return y


def fwd_iq2_k_r4(x):  # d[4] | extra[8] | scales[32] | qs[256]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        b = x[:, k]
        _iqk_extra(y, k, _u16(b, 2))
        L = L_2bit(b[:, 12:76])
        for ib in range(8):
            for h in range(2):
                i = 8 * ib + k + 4 * h
                y[:, 16 + i % 32] |= ((b[:, 4 + ib] >> (4 * h)) & 0xF) << (4 * (i // 32))
            pack(y, 48, L, k, ib, 32, 16, Q2_GROUPS, 2, 3)
    return y


# ------------------------------------------------------------------ grid types (signs unscrambled)


def _sas(y, off, aux, k, ib):
    """u32 of 7-bit sign indices (bits 7m..) and a 4-bit scale (bits 28..31) -> 4 bytes
    (sign index m << 1 | scale bit m) at y[off + 4·(4ib + k)] (scrambled_sign left out)."""
    for m in range(4):
        y[:, off + 4 * (4 * ib + k) + m] = (((aux >> (7 * m)) & 127) << 1) | ((aux >> (28 + m)) & 1)


def fwd_iq2_xxs_r4(x):  # d[4] | sas[128] | qs[128]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        for ib in range(8):
            o = 2 + 8 * ib
            y[:, 136 + 16 * ib + 4 * k:136 + 16 * ib + 4 * k + 4] = x[:, k, o:o + 4]
            _sas(y, 8, _u32(x[:, k], o + 4), k, ib)
    return y


def fwd_iq3_xxs_r4(x):  # d[4] | sas[128] | qs[256]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        for ib in range(8):
            y[:, 136 + 32 * ib + 8 * k:136 + 32 * ib + 8 * k + 8] = x[:, k, 2 + 8 * ib:10 + 8 * ib]
            _sas(y, 8, _u32(x[:, k], 66 + 4 * ib), k, ib)
    return y


def fwd_iq2_xs_r4(x):  # d[4] | qs u16[128] | scales[32]  (v & 511 | sign index << 9)
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        for ib in range(8):
            for i in range(4):
                _put(y, 8 + 2 * (16 * ib + 4 * k + i), _u16(x[:, k], 2 + 2 * (4 * ib + i)), 2)
            y[:, 264 + 4 * ib + k] = x[:, k, 66 + ib]
    return y


def fwd_iq2_s_r4(x):  # d[4] | qs[128] | qh[32] | signs[128] | scales[32]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        b = x[:, k]
        for ib in range(8):
            y[:, 296 + 4 * ib + k] = b[:, 74 + ib]
            y[:, 136 + 4 * ib + k] = b[:, 66 + ib]
            o = 16 * ib + 4 * k
            y[:, 8 + o:8 + o + 4] = b[:, 2 + 4 * ib:2 + 4 * ib + 4]
            y[:, 168 + o:168 + o + 4] = b[:, 34 + 4 * ib:34 + 4 * ib + 4]
    return y


def fwd_iq3_s_r4(x):  # d[4] | qs[256] | qh[32] | signs[128] | scales[16]
    y = _y(x)
    _copy_d(y, x, 0, 0)
    for k in range(4):
        b = x[:, k]
        for ib in range(4):
            j = 8 * ib + k
            y[:, 424 + j % 16] |= (b[:, 106 + ib] & 0xF) << (4 * (j // 16))
            y[:, 424 + (j + 4) % 16] |= (b[:, 106 + ib] >> 4) << (4 * ((j + 4) // 16))
        for ib in range(8):
            y[:, 264 + 4 * ib + k] = b[:, 66 + ib]
            for i in range(4):
                y[:, 8 + 32 * ib + k + 8 * i] = b[:, 2 + 8 * ib + i]
                y[:, 8 + 32 * ib + k + 8 * i + 4] = b[:, 2 + 8 * ib + i + 4]
                v = 0
                for m in range(4):
                    s = b[:, 74 + 4 * ib + m]
                    v = v | (((s >> i) & 1) << (2 * m)) | (((s >> (4 + i)) & 1) << (2 * m + 1))
                y[:, 296 + 16 * ib + 4 * k + i] = v
    return y
