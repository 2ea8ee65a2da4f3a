"""Direct references for the interleaved types, transcribed from ik_llama.cpp's
dequantize_row_<type> functions (which read the interleaved layouts directly, a different piece of
code than the repack_* functions our de-interleavers come from). REFS[name](group_bytes, n) ->
float32 (R, n) for one group of R rows."""

from __future__ import annotations

import numpy as np

from iqk_studio.quant.grids import iq2nl_values, iq3nl_values, iq4k_values, iq5nl_values

F32 = np.float32


def _f16(g, off):
    return F32(g[off:off + 2].view(np.float16)[0])


def _f32(g, off):
    return F32(g[off:off + 4].view(np.float32)[0])


# Each reference: (g: flat uint8 bytes of one group of R rows, n) -> (R, n) float32, literally
# following the loops of ik's dequantize_row_<type>; `o` is the byte offset of big block ib/ibl.

def ref_q4_0_r8(g, n):
    y = np.zeros((8, n), F32)
    for ib in range(n // 32):
        o = 144 * ib
        for k in range(8):
            s = _f16(g, o + 2 * k)
            for li in range(4):
                for i in range(4):
                    q = int(g[o + 16 + 32 * li + 4 * k + i])
                    y[k, 32 * ib + 4 * li + i] = s * F32((q & 15) - 8)
                    y[k, 32 * ib + 4 * li + i + 16] = s * F32((q >> 4) - 8)
    return y


def ref_q8_0_r8(g, n):
    y = np.zeros((8, n), F32)
    q8 = g.view(np.int8)
    for ib in range(n // 32):
        o = 272 * ib
        for k in range(8):
            s = _f16(g, o + 2 * k)
            for li in range(4):
                for i in range(4):
                    y[k, 32 * ib + 4 * li + i] = s * F32(q8[o + 16 + 32 * li + 4 * k + i])
                    q = q8[o + 16 + 32 * li + 4 * k + i + 128]
                    y[k, 32 * ib + 4 * li + i + 16] = s * F32(q)
    return y


# (position in the 32-block, qs byte offset within the row's 16-byte lane group, high nibble?)
_NL_SLOTS = [(0, 0, 0), (8, 0, 1), (16, 16, 0), (24, 16, 1), (4, 32, 0), (12, 32, 1),
             (20, 48, 0), (28, 48, 1)]


def ref_iq4_nl_r4(g, n):
    y = np.zeros((4, n), F32)
    for ib in range(n // 32):
        o = 72 * ib
        for k in range(4):
            s = _f16(g, o + 2 * k)
            for i in range(4):
                for pos, qo, hi in _NL_SLOTS:
                    q = int(g[o + 8 + 4 * k + i + qo])
                    y[k, 32 * ib + i + pos] = s * F32(iq4k_values[(q >> 4) if hi else (q & 15)])
    return y


def ref_q56_0_r4(g, n, six):
    y = np.zeros((4, n), F32)
    bs, qs_off = (104, 40) if six else (88, 24)
    for ib in range(n // 32):
        o = bs * ib
        for k in range(4):
            d = _f16(g, o + 2 * k)
            m = F32(-32 if six else -16) * d
            for li in range(4):
                ll = 16 * (li % 2) + 4 * (li // 2)
                for i in range(4):
                    q = int(g[o + qs_off + 4 * k + i + 16 * li])
                    if six:
                        h = int(g[o + 8 + 4 * k + i + 16 * (li % 2)])
                        v0 = (q & 15) | (((h >> (2 * (li // 2))) & 3) << 4)
                        v1 = (q >> 4) | (((h >> (2 * (li // 2) + 4)) & 3) << 4)
                    else:
                        h = int(g[o + 8 + 4 * k + i])
                        v0 = (q & 15) | (((h >> li) & 1) << 4)
                        v1 = (q >> 4) | (((h >> (li + 4)) & 1) << 4)
                    y[k, 32 * ib + i + ll] = d * F32(v0) + m
                    y[k, 32 * ib + i + ll + 8] = d * F32(v1) + m
    return y


def ref_iq4_xs_r8(g, n):
    y = np.zeros((8, n), F32)
    for ibl in range(n // 256):
        o = 1088 * ibl
        for k in range(8):
            d = _f16(g, o + 2 * k)
            for ib in range(8):
                s = 8 * ib + k
                sc = ((g[o + 32 + s % 32] >> (4 * (s // 32))) & 15) | (
                    ((g[o + 16 + s % 16] >> (2 * (s // 16))) & 3) << 4)
                dl = d * F32(int(sc) - 32)
                for li in range(4):
                    for i in range(4):
                        q = int(g[o + 64 + 128 * ib + 4 * k + i + 32 * li])
                        y[k, 256 * ibl + 32 * ib + 8 * li + i] = dl * F32(iq4k_values[q & 15])
                        y[k, 256 * ibl + 32 * ib + 8 * li + i + 4] = dl * F32(iq4k_values[q >> 4])
    return y


def _ks_r4(g, n, five):
    """iq4_ks_r4 / iq5_ks_r4: row f32 scales first, then per super-block scales[32] | qs | qh."""
    y = np.zeros((4, n), F32)
    bs = 672 if five else 544
    for ibl in range(n // 256):
        o = 16 + bs * ibl
        for k in range(4):
            d = _f32(g, 4 * k)
            for ib in range(8):
                sc = int(g[o + 4 * ib + k])
                dl = d * F32((sc & 254) - 127)
                for i in range(4):
                    h = int(g[o + 544 + 16 * ib + 4 * k + i]) if five else 0
                    for j, (pos, qo, hi) in enumerate(_NL_SLOTS):
                        q = int(g[o + 32 + 64 * ib + 4 * k + i + qo])
                        q = (q >> 4) if hi else (q & 15)
                        if five:
                            q |= ((h >> j) & 1) << 4
                            v = iq5nl_values[((sc & 1) << 5) + q]
                        else:
                            v = iq4k_values[((sc & 1) << 4) + q]
                        y[k, 256 * ibl + 32 * ib + i + pos] = dl * F32(v)
    return y


def _k_r4_scales(g, o, k, ib, sh_off, sl_off):  # iq4_k_r4 / iq5_k_r4 / q3_k_r4 6-bit scales
    out = []
    for s in (8 * ib + k, 8 * ib + k + 4):
        out.append(int(((g[o + sl_off + s % 32] >> (4 * (s // 32))) & 15)
                       | (((g[o + sh_off + s % 16] >> (2 * (s // 16))) & 3) << 4)) - 32)
    return out


def _iqk_r4(g, n, five):
    y = np.zeros((4, n), F32)
    bs = 704 if five else 576
    for ibl in range(n // 256):
        o = bs * ibl
        for k in range(4):
            d = _f16(g, o + 2 * k)
            for ib in range(8):
                s1, s2 = _k_r4_scales(g, o, k, ib, 16, 32)
                dl = (d * F32(s1), d * F32(s2))
                shift = [(g[o + 8 + k + 4 * h] >> ib) & 1 for h in range(2)]
                for i in range(4):
                    h = int(g[o + 576 + 16 * ib + 4 * k + i]) if five else 0
                    for j, (pos, qo, hi) in enumerate(_NL_SLOTS):
                        half = pos // 16
                        q = int(g[o + 64 + 64 * ib + 4 * k + i + qo])
                        q = (q >> 4) if hi else (q & 15)
                        if five:
                            v = iq5nl_values[32 * shift[half] + (q | (((h >> j) & 1) << 4))]
                        else:
                            v = iq4k_values[16 * shift[half] + q]
                        y[k, 256 * ibl + 32 * ib + i + pos] = dl[half] * F32(v)
    return y


def _two_bit_r4(g, n, kind):
    """q2_k_r4 / q3_k_r4 / iq2_k_r4 / iq3_k_r4: 2-bit values at qs[32ib + 4k + i (+16)] bits 2j."""
    y = np.zeros((4, n), F32)
    bs, qs_off, qh_off = {"q2_k": (336, 80, None), "q3_k": (440, 184, 56),
                          "iq2_k": (304, 48, None), "iq3_k": (440, 56, 312)}[kind]
    for ibl in range(n // 256):
        o = bs * ibl
        for k in range(4):
            d = _f16(g, o + 2 * k)
            m = _f16(g, o + 2 * k + 8) if kind == "q2_k" else None
            for ib in range(8):
                if kind == "q2_k":
                    sc = [int(g[o + 16 + 8 * ib + k + 4 * h]) for h in range(2)]
                    dl = [d * F32(s & 15) for s in sc]
                    ml = [m * F32(s >> 4) for s in sc]
                elif kind == "q3_k":
                    dl = [d * F32(s) for s in _k_r4_scales(g, o, k, ib, 8, 24)]
                elif kind == "iq2_k":
                    dl = [d * F32(int((g[o + 16 + s % 32] >> (4 * (s // 32))) & 15) - 8)
                          for s in (8 * ib + k, 8 * ib + k + 4)]
                else:
                    dl = [d * F32(2 * int((g[o + 24 + s % 32] >> (4 * (s // 32))) & 15) + 1)
                          * F32(-1 if (g[o + 16 + s % 8] >> (s // 8)) & 1 else 1)
                          for s in (8 * ib + k, 8 * ib + k + 4)]
                for i in range(4):
                    for h in range(2):
                        q = int(g[o + qs_off + 32 * ib + 4 * k + i + 16 * h])
                        qh = int(g[o + qh_off + 16 * ib + 4 * k + i]) if qh_off else 0
                        for j in range(4):
                            v = (q >> (2 * j)) & 3
                            bit = (qh >> (4 * h + j)) & 1
                            pos = 256 * ibl + 32 * ib + 16 * h + 4 * j + i
                            if kind == "q2_k":
                                y[k, pos] = dl[h] * F32(v) - ml[h]
                            elif kind == "q3_k":
                                y[k, pos] = dl[h] * F32((v | (bit << 2)) - 4)
                            elif kind == "iq2_k":
                                ex = (g[o + 8 + k + 4 * h] >> ib) & 1
                                y[k, pos] = dl[h] * F32(iq2nl_values[4 * ex + v])
                            else:
                                ex = (g[o + 8 + k + 4 * h] >> ib) & 1
                                y[k, pos] = dl[h] * F32(iq3nl_values[8 * ex + (v | (bit << 2))])
    return y


def ref_q4_k_r4(g, n, five=False):
    y = np.zeros((4, n), F32)
    bs = 704 if five else 576
    qs_off = 192 if five else 64
    for ibl in range(n // 256):
        o = bs * ibl
        for k in range(4):
            d, m = _f16(g, o + 2 * k), _f16(g, o + 2 * k + 8)
            for ib in range(8):
                s = 4 * ib + k
                h = int(g[o + 16 + s % 16]) >> (4 * (s // 16))
                dl = d * F32((g[o + 32 + s] & 15) | ((h & 3) << 4))
                ml = m * F32((g[o + 32 + s] >> 4) | ((h & 12) << 2))
                for i in range(4):
                    qh = int(g[o + 64 + 16 * ib + 4 * k + i]) if five else 0
                    for j, (pos, qo, hi) in enumerate(_NL_SLOTS):
                        q = int(g[o + qs_off + 64 * ib + 4 * k + i + qo])
                        q = (q >> 4) if hi else (q & 15)
                        # q5_k_r4 high bits: slot order 0,8,16,24,4,12,20,28 -> bits 0,1,4,5,2,3,6,7
                        q |= ((qh >> (0, 1, 4, 5, 2, 3, 6, 7)[j]) & 1) << 4
                        y[k, 256 * ibl + 32 * ib + i + pos] = dl * F32(q) - ml
    return y


def ref_q6_k_r4(g, n):
    y = np.zeros((4, n), F32)
    for ibl in range(n // 256):
        o = 840 * ibl
        for k in range(4):
            d = _f16(g, o + 2 * k)
            for ib in range(8):
                sc = g[o + 8:o + 72].view(np.int8)
                dl = (d * F32(sc[8 * ib + k]), d * F32(sc[8 * ib + k + 4]))
                for i in range(4):
                    for pos, qo, hi in _NL_SLOTS:
                        q = int(g[o + 328 + 64 * ib + 4 * k + i + qo])
                        q = (q >> 4) if hi else (q & 15)
                        h = int(g[o + 72 + 32 * ib + 4 * k + i + 16 * (pos // 16)])
                        shift = {0: 0, 8: 2, 4: 4, 12: 6}[pos % 16]
                        q |= ((h >> shift) & 3) << 4
                        y[k, 256 * ibl + 32 * ib + i + pos] = dl[pos // 16] * F32(q - 32)
    return y


def ref_iq2_bn_r4(g, n):
    y = np.zeros((4, n), F32)
    for ib in range(n // 64):
        for k in range(4):
            d = _f32(g, 4 * k)
            for li in range(4):
                for i in range(4):
                    q = int(g[16 + 64 * ib + 4 * k + i + 16 * li])
                    for j in range(4):
                        y[k, 64 * ib + 16 * li + i + 4 * j] = d * F32(((q >> (2 * j)) & 3) - 1)
    return y


def _grid(name):
    import gguf.quants as gq

    cls = getattr(gq, name)
    cls.init_grid()
    return cls.grid.reshape(cls.grid_shape)


def _sas_signs(g, o):
    """iq2_xxs_r4 / iq3_xxs_r4: u32 of 4 bytes (s << 1 | scale bit): scale, then the sign word
    with the scale bits cleared and aux ^= aux >> 1 applied."""
    aux = int(g[o:o + 4].view("<u4")[0])
    scale = sum(((aux >> (8 * m)) & 1) << m for m in range(4))
    aux &= 0xFEFEFEFE
    return scale, aux ^ (aux >> 1)


def ref_iq2_xxs_r4(g, n):
    y, grid = np.zeros((4, n), F32), _grid("IQ2_XXS")
    for ibl in range(n // 256):
        o = 264 * ibl
        for k in range(4):
            d = F32(0.125) * _f16(g, o + 2 * k)
            for ib in range(8):
                scale, aux = _sas_signs(g, o + 8 + 4 * (4 * ib + k))
                dl = d * F32(2 * scale + 1)
                for i in range(4):
                    val = grid[g[o + 136 + 16 * ib + 4 * k + i]]
                    for j in range(8):
                        sg = F32(-1 if aux & (1 << j) else 1)
                        y[k, 256 * ibl + 32 * ib + 8 * i + j] = dl * val[j] * sg
                    aux >>= 8
    return y


def ref_iq3_xxs_r4(g, n):
    y, grid = np.zeros((4, n), F32), _grid("IQ3_XXS")
    for ibl in range(n // 256):
        o = 392 * ibl
        for k in range(4):
            d = F32(0.25) * _f16(g, o + 2 * k)
            for ib in range(8):
                scale, aux = _sas_signs(g, o + 8 + 4 * (4 * ib + k))
                dl = d * F32(2 * scale + 1)
                for i in range(8):
                    val = grid[g[o + 136 + 32 * ib + 8 * k + i]]
                    for j in range(4):
                        sg = F32(-1 if aux & (1 << j) else 1)
                        y[k, 256 * ibl + 32 * ib + 4 * i + j] = dl * val[j] * sg
                    aux >>= 4
    return y


def ref_iq2_xs_s_r4(g, n, kind):
    y = np.zeros((4, n), F32)
    grid = _grid("IQ2_XS" if kind == "xs" else "IQ2_S")
    bs, sc_off = (296, 264) if kind == "xs" else (328, 296)
    for ibl in range(n // 256):
        o = bs * ibl
        for k in range(4):
            d = F32(0.125) * _f16(g, o + 2 * k)
            for ib in range(8):
                sc = int(g[o + sc_off + 4 * ib + k])
                dl = (d * F32(2 * (sc & 15) + 1), d * F32(2 * (sc >> 4) + 1))
                for i in range(4):
                    if kind == "xs":
                        q = int(g[o + 8:o + 264].view("<u2")[16 * ib + 4 * k + i])
                        idx, signs = q & 511, q >> 9
                        signs ^= signs << 1
                    else:
                        qh = int(g[o + 136 + 4 * ib + k])
                        idx = int(g[o + 8 + 16 * ib + 4 * k + i]) | ((qh << (8 - 2 * i)) & 0x300)
                        signs = int(g[o + 168 + 16 * ib + 4 * k + i])
                    for j in range(8):
                        sg = F32(-1 if signs & (1 << j) else 1)
                        y[k, 256 * ibl + 32 * ib + 8 * i + j] = dl[i // 2] * grid[idx][j] * sg
    return y


def ref_iq3_s_r4(g, n):
    y, grid = np.zeros((4, n), F32), _grid("IQ3_S")
    for ibl in range(n // 256):
        o = 440 * ibl
        for k in range(4):
            d = _f16(g, o + 2 * k)
            for ib in range(8):
                m = 4 * ib + k
                dl = d * F32(1 + 2 * ((g[o + 424 + m % 16] >> (4 * (m // 16))) & 15))
                qh = int(g[o + 264 + 4 * ib + k])
                for i in range(4):
                    i1 = int(g[o + 8 + 32 * ib + k + 8 * i]) + ((qh << (8 - i)) & 0x100)
                    i2 = int(g[o + 8 + 32 * ib + k + 8 * i + 4]) + ((qh << (4 - i)) & 0x100)
                    for j in range(4):
                        s = int(g[o + 296 + 16 * ib + 4 * k + j])
                        y[k, 256 * ibl + 32 * ib + 4 * i + j] = (
                            dl * grid[i1][j] * F32(-1 if s & (1 << i) else 1))
                        y[k, 256 * ibl + 32 * ib + 4 * i + 16 + j] = (
                            dl * grid[i2][j] * F32(-1 if s & (1 << (i + 4)) else 1))
    return y


REFS = {
    "q4_0_r8": ref_q4_0_r8, "q8_0_r8": ref_q8_0_r8, "iq4_nl_r4": ref_iq4_nl_r4,
    "q5_0_r4": lambda g, n: ref_q56_0_r4(g, n, False),
    "q6_0_r4": lambda g, n: ref_q56_0_r4(g, n, True),
    "iq4_xs_r8": ref_iq4_xs_r8, "iq4_ks_r4": lambda g, n: _ks_r4(g, n, False),
    "iq5_ks_r4": lambda g, n: _ks_r4(g, n, True), "iq4_k_r4": lambda g, n: _iqk_r4(g, n, False),
    "iq5_k_r4": lambda g, n: _iqk_r4(g, n, True), "q2_k_r4": lambda g, n: _two_bit_r4(g, n, "q2_k"),
    "q3_k_r4": lambda g, n: _two_bit_r4(g, n, "q3_k"),
    "iq2_k_r4": lambda g, n: _two_bit_r4(g, n, "iq2_k"),
    "iq3_k_r4": lambda g, n: _two_bit_r4(g, n, "iq3_k"), "q4_k_r4": ref_q4_k_r4,
    "q5_k_r4": lambda g, n: ref_q4_k_r4(g, n, True), "q6_k_r4": ref_q6_k_r4,
    "iq2_bn_r4": ref_iq2_bn_r4, "iq2_xxs_r4": ref_iq2_xxs_r4, "iq3_xxs_r4": ref_iq3_xxs_r4,
    "iq2_xs_r4": lambda g, n: ref_iq2_xs_s_r4(g, n, "xs"),
    "iq2_s_r4": lambda g, n: ref_iq2_xs_s_r4(g, n, "s"), "iq3_s_r4": ref_iq3_s_r4,
}
