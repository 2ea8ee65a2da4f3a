"""Interleaved (_R4/_R8/_R16) dequantizers against direct references transcribed from a different
part of ik_llama.cpp than our de-interleavers: its dequantize_row_*_r4 functions (which read the
interleaved layout directly); plus round trips through a test interleaver and real quantizers."""

from __future__ import annotations

import numpy as np
import pytest
from repack_refs_numpy import REFS

from iqk_studio.quant import api, registry
from iqk_studio.quant.kernels.repacked import layout as rp
from iqk_studio.quant.kernels.repacked import via_base
from iqk_studio.quant.types import BY_NAME


def _dequant(raw, name, n):
    return api.dequantize(raw, name, n)


def _random_groups(name, n, groups=2, seed=0):
    t = BY_NAME[name]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (groups * t.interleave, t.row_bytes(n)), dtype=np.uint8)
    if t.row_meta == 4:  # sane f32 row scales at each group's start
        g = raw.reshape(groups, -1)
        g[:, :4 * t.interleave] = rng.uniform(0.5, 2, (groups, t.interleave)).astype(
            np.float32).view(np.uint8)
    return raw


@pytest.mark.parametrize("name", sorted(REFS))
def test_matches_ik_direct_dequantizer(name):
    t = BY_NAME[name]
    n = 2 * BY_NAME[t.base].block
    raw = _random_groups(name, n)
    got = _dequant(raw, name, n)
    g = raw.reshape(2, -1)
    want = np.concatenate([REFS[name](g[i], n) for i in range(2)])
    assert got.shape == want.shape
    fin = np.isfinite(want)
    assert (np.isfinite(got) == fin).all()
    # same values; a few types differ in operation order (d·q + m vs d·(q − c)): 1 ulp of the
    # largest magnitude in the row block
    tol = 4e-7 * np.abs(want[fin]).max()
    np.testing.assert_allclose(got[fin], want[fin], rtol=0, atol=tol)


def _interleave(base_rows, name, n):
    """Our test interleaver: per group, row metas then each big block through repacked.forward (sign
    scrambling for the IQ2_XXS/IQ2_XS/IQ3_XXS forms applied first)."""
    t = BY_NAME[name]
    b = BY_NAME[t.base]
    R, meta, ts = t.interleave, b.row_meta, b.type_size
    x = np.array(base_rows)
    if name in rp.SCRAMBLED:
        rp.scramble_signs(x, name, rp.SCRAMBLED_SIGN)
    f = rp.forward(name)
    out = []
    for g in range(x.shape[0] // R):
        grp = x[g * R:(g + 1) * R]
        parts = [grp[:, :meta].reshape(-1)] if meta else []
        for ib in range(n // b.block):
            blk = grp[:, meta + ib * ts:meta + (ib + 1) * ts].astype(np.int64)[None]
            parts.append(f(blk)[0].astype(np.uint8))
        out.append(np.concatenate(parts))
    return np.stack(out).reshape(x.shape[0], -1)


@pytest.mark.parametrize("name", rp.VIA_BASE)
def test_round_trip_random_base_layout(name):
    t = BY_NAME[name]
    b = BY_NAME[t.base]
    n = 3 * b.block
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (2 * t.interleave, b.row_bytes(n)), dtype=np.uint8)
    back = rp.to_base(_interleave(base, name, n), name, n)
    np.testing.assert_array_equal(back, base)


def _needs_imatrix(base: str) -> bool:
    """iq2_xxs, iq1_s, ... refuse to quantize without an importance matrix, as llama-quantize."""
    try:
        api.quantize(np.ones((1, BY_NAME[base].block), np.float32), base)
    except api.QuantError as e:
        return "importance matrix" in str(e)
    return False


@pytest.mark.parametrize("name", [n for n in rp.VIA_BASE if registry.quantizes(BY_NAME[n].base)])
def test_quantize_interleave_dequantize(name):
    """Real base quantization -> interleave -> our dequantizer == base dequantizer."""
    base = BY_NAME[name].base
    n = 2 * BY_NAME[base].block if BY_NAME[base].block >= 256 else 128
    x = np.random.default_rng(2).standard_normal((2 * BY_NAME[name].interleave, n), np.float32)
    q = api.quantize(x, base, np.ones(n, np.float32) if _needs_imatrix(base) else None)
    np.testing.assert_array_equal(api.dequantize(_interleave(q, name, n), name, n),
                                  api.dequantize(q, base, n))


def test_scramble_tables_are_inverse_and_match_ggml_sign_patterns():
    """ik's kernels read a scrambled index s as the sign byte s ^ (s << 1); that must be ggml's
    ksigns pattern of the plain index (7 sign bits + even-parity bit), as gguf-py has it."""
    from gguf.quants import IQ2_XXS

    assert sorted(rp.SCRAMBLED_SIGN) == list(range(128))
    np.testing.assert_array_equal(rp.UNSCRAMBLE[rp.SCRAMBLED_SIGN], np.arange(128))
    s = rp.SCRAMBLED_SIGN.astype(np.int64)
    ksigns = np.frombuffer(IQ2_XXS.ksigns, np.uint8)
    np.testing.assert_array_equal((s ^ (s << 1)) & 0xFF, ksigns)


def test_rows_must_come_in_groups():
    raw = np.zeros((6, BY_NAME["q4_0_r8"].row_bytes(32)), np.uint8)
    with pytest.raises(ValueError, match="groups of 8"):
        api.dequantize(raw, "q4_0_r8", 32)


def test_bf16_r16_and_q8_kv_r8_layouts():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((16, 8)).astype(np.float32)
    bf = (v.view(np.uint32) >> 16).astype(np.uint16)  # (16 rows, 8)
    inter = bf.reshape(16, 4, 2).transpose(1, 0, 2).reshape(-1)  # pair b of row k at 16b + k
    got = api.dequantize(inter.view(np.uint8).reshape(16, 16), "bf16_r16", 8)
    np.testing.assert_array_equal(got, (bf.astype(np.uint32) << 16).view(np.float32))
    d = np.arange(1, 9, dtype=np.float32)
    q = rng.integers(-128, 128, (8, 32)).astype(np.int8)  # (row, value)
    body = q.reshape(8, 2, 4, 4).transpose(1, 2, 0, 3).reshape(-1)  # 128b + 32l + 4k + i
    raw = np.concatenate([d.view(np.uint8), body.view(np.uint8)]).reshape(8, -1)
    np.testing.assert_array_equal(api.dequantize(raw, "q8_KV_r8", 32), d[:, None] * q)


def test_iq1_s_r4_matches_base_iq1_s_on_the_same_fields():
    """An IQ1_S_R4 group whose rows share the fields of an IQ1_S row: same values."""
    rng = np.random.default_rng(4)
    base = rng.integers(0, 256, (1, 50), dtype=np.uint8)  # one IQ1_S super-block
    base[0, :2] = np.array([0.75], np.float16).view(np.uint8)
    want = api.dequantize(base, "iq1_s", 256)[0]
    qs, qh = base[0, 2:34].reshape(8, 4), base[0, 34:50].view("<u2")  # per 32-block ib
    g = [np.tile(base[0, :2], 4)]
    for ib in range(8):
        g.append(np.repeat(qs[ib], 4))  # qs[4i + k] = row k's byte i (all rows equal)
        g.append(np.tile(qh[ib:ib + 1], 4).view(np.uint8))
    raw = np.concatenate(g).reshape(4, -1)
    got = api.dequantize(raw, "iq1_s_r4", 256)
    for k in range(4):
        np.testing.assert_array_equal(got[k], want)


@pytest.mark.parametrize("name", sorted(via_base.QUANT))
def test_quantize_interleaved_is_base_then_repack(name):
    """ik's quantize_<type>_r4: quantize each row with the base quantizer (imatrix through
    QHelper for some types: blocks whose weights or values are ~0 get weights 1e-9), repack."""
    t = BY_NAME[name]
    base = t.base
    n = 256
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2 * t.interleave, n), np.float32)
    qw = rng.uniform(0.1, 2, n).astype(np.float32)
    for w in (qw,) if _needs_imatrix(base) else (None, qw):
        np.testing.assert_array_equal(api.quantize(x, name, w),
                                      _interleave(api.quantize(x, base, w), name, n))
    qw0 = qw.copy()
    qw0[32:64] = 0  # a degenerate imatrix block
    got = api.quantize(x, name, qw0)
    if name in via_base.QHELPER_BLOCK:
        w = qw0.copy()
        bs = via_base.QHELPER_BLOCK[name]
        w[32 // bs * bs:64] = np.float32(1e-9)
        want = api.quantize(x, base, w)
    else:
        want = api.quantize(x, base, qw0)
    np.testing.assert_array_equal(got, _interleave(want, name, n))


def test_interleaved_quantize_needs_whole_groups():
    x = np.zeros((6, 32), np.float32)
    with pytest.raises(ValueError, match="groups of 8"):
        api.quantize(x, "q8_0_r8")
