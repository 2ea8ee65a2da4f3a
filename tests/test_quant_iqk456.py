"""The 4-6 bit IQK kernels (iq4_k, iq4_ks, iq4_kss, iq5_k, iq5_ks, iq6_k) and their helpers:
exact lookups against obvious searches, value grids, golden bytes made by a GCC build of
ik_llama.cpp's quantizers, round trips, and the uniform mode. The byte-exactness against
llama-quantize's own files is in test_quant_refs.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import quant_refs_numpy

from iqk_studio.quant import grids, registry
from iqk_studio.quant.api import dequantize, quantize
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX, MODE_UNIFORM
from iqk_studio.quant.kernels.iqk import common as C
from iqk_studio.quant.kernels.iqk.iq6_k import iq6k_value
from iqk_studio.quant.types import by_name

TYPES = ("iq4_k", "iq4_ks", "iq4_kss", "iq5_k", "iq5_ks", "iq6_k")
# sanity bound on the relative RMS error of _golden_inputs() (uniform-like data with 8x outliers);
# measured maxima over default / imatrix / uniform: 0.19, 0.097, 0.052
MAX_REL_ERR = {"iq4_k": 0.25, "iq4_ks": 0.25, "iq4_kss": 0.25, "iq5_k": 0.13, "iq5_ks": 0.13,
               "iq6_k": 0.07}
F = np.float32


def _nearest_ties_up(values: np.ndarray, x: float) -> int:
    """Obvious search: index of the nearest value, the higher index on an exact tie."""
    d = np.abs(values.astype(np.float64) - x)
    return int(np.flatnonzero(d == d.min())[-1])


def _sweep(values: np.ndarray) -> np.ndarray:
    """x in 1/64 steps over the table's range and beyond, plus every exact midpoint (all exactly
    representable, so float32 differences are exact and the obvious search is the truth)."""
    lo, hi = float(values.min()) - 20, float(values.max()) + 20
    mids = (values[:-1].astype(np.float64) + values[1:]) / 2
    return np.concatenate([np.arange(lo, hi, 1 / 64), mids, -mids]).astype(np.float32)


@pytest.mark.parametrize("fn, table, half", [
    (C.best_index_iq4nl, C.IQ4K, 16), (C.best_index_iq5nl, C.IQ5NL, 32),
    (C.best_index_iq6nl, C.IQ6NL, 64)])
def test_best_index_is_nearest_with_ties_up(fn, table, half):
    for base in (0, half):
        vals = table[base:base + half]
        for x in _sweep(vals):
            assert fn(table, base, x) == _nearest_ties_up(vals, float(x)), (base, x)


def test_best_index_compares_in_float32_like_the_reference():
    # x = -0.5 - 2^-24 is nearer -6 than 5 on the shifted iq4 half, but x - (-6) and 5 - x both
    # round to 5.5 in float32, and the reference's `x - v[k] < v[k+1] - x` then picks the higher.
    x = F(-0.5) - F(2.0**-24)
    assert x != F(-0.5)
    assert _nearest_ties_up(C.IQ4K[16:], float(x)) == 7
    assert C.best_index_iq4nl(C.IQ4K, 16, x) == 8


def test_lookup_tables_have_the_reference_sizes():
    assert (len(C.IQ4NL_INDEX), len(C.IQ5NL_INDEX), len(C.IQ6NL_INDEX)) == (241, 248, 249)


def test_grids_shift_and_records():
    assert np.array_equal(grids.iq4k_values[:16], grids.kvalues_iq4nl)
    shifts = ((grids.iq4k_values, 4), (grids.iq5nl_values, 2), (grids.iq6nl_values, 1),
              (grids.iq2nl_values, 5), (grids.iq3nl_values, 4))
    for values, shift in shifts:
        h = len(values) // 2
        assert np.all(values[h:].astype(int) - values[:h] == shift)
        assert np.all(np.diff(values[:h].astype(int)) > 0)
    assert grids.iq2kl_pairs.shape == (32, 2)
    assert set(grids.iq2kl_pairs.ravel()) <= set(grids.iq3nl_values[:8])
    for g in grids.GRIDS:
        assert g.types and g.bits > 0 and len(g.base) * g.halves == len(g.values)
    assert grids.GRID_BY_NAME["iq4k_values"].shifted[0] == -123


def test_iq6k_cubic_grid_is_what_the_kernel_dequantizes_to():
    for shifted in (False, True):
        want = grids.iq6k_cubic(shifted)
        got = np.array([iq6k_value(q, F(shifted)) for q in range(64)], dtype=np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
        # the integer search table is the rounded cubic
        assert np.max(np.abs(want - grids.iq6nl_values[64 * shifted:64 * shifted + 64])) < 0.5


def test_scramble_inverse_matches_the_reference_table():
    j = np.arange(1 << 15)
    val = (j ^ (j << 1)) & 0xFFFF
    table = np.empty(1 << 15, dtype=np.int64)
    table[val & 0x7FFF] = j  # scramble_table: i -> the j with j ^ (j << 1) == i | parity(i) << 15
    for i in list(range(0, 1 << 15, 97)) + [0, 1, 0x7FFF, 0x5555, 0x2AAA]:
        assert C.scramble_inverse(i) == table[i]


def test_sanitize_weights_replaces_dead_blocks_only():
    x = np.linspace(-1, 1, 64).astype(F)
    qw = np.ones(64, F)
    qw[32:] = 0  # second block has Σqw² = 0
    out = np.empty(64, F)
    C.sanitize_weights(out, qw, x, 32)
    assert np.array_equal(out[:32], qw[:32]) and np.all(out[32:] == F(1e-9))
    x[:32] = 0  # first block has Σx² = 0
    C.sanitize_weights(out, qw, x, 32)
    assert np.all(out == F(1e-9))


def _golden_inputs():
    """8 rows of 512 from integer arithmetic only (no platform-dependent transcendental)."""
    i = np.arange(8 * 512, dtype=np.int64).reshape(8, 512)
    s = (i * 1103515245 + 12345) % (1 << 31)
    x = ((s % 20001) - 10000).astype(np.float64) * 2.0**-20
    x[:, ::37] *= 8  # outliers
    x *= 2.0 ** np.arange(-3, 5)[:, None]
    x[3, 40:80] = 0
    x[5] = np.round(x[5] * 256) / 256  # repeated values
    qw = (((np.arange(512) * 2654435761) % 997) / 331.0 + 0.01)
    qw[100:140] = 0
    return x.astype(F), qw.astype(F)


# sha256[:16] of the bytes that ik_llama.cpp's quantize_<type> (iqk_quantize.cpp at 8337e4cd3,
# GCC 12.2 -O3 -march=native) writes for _golden_inputs(), without and with the importance
GOLDEN = {
    "iq4_k": ("1eaa77d0fe758280", "186c5662bd99907e"),
    "iq4_ks": ("f86cd5c644280ef8", "429937e91d4aa99b"),
    "iq4_kss": ("d3b8e0672fd2a3bc", "bcc90e366b834d99"),
    "iq5_k": ("b0cce652f12b66b5", "13d9ca3f4eb1f8e0"),
    "iq5_ks": ("dbf7ffc1c90600da", "ed2b76e053da6454"),
    "iq6_k": ("e47d578788f72181", "7ff8f04a11089b9b"),
}


@pytest.mark.parametrize("qtype", TYPES)
def test_golden_bytes(qtype):
    x, qw = _golden_inputs()
    q = registry.quantizers()[qtype]
    for mode, imp, want in ((MODE_DEFAULT, None, GOLDEN[qtype][0]),
                            (MODE_IMATRIX, qw, GOLDEN[qtype][1])):
        got = hashlib.sha256(q(x, imp, mode).tobytes()).hexdigest()[:16]
        assert got == want, (qtype, mode)


@pytest.mark.parametrize("qtype", TYPES)
def test_round_trip_and_numpy_reference(qtype):
    x, qw = _golden_inputs()
    for imp in (None, qw):
        raw = quantize(x, qtype, imp)
        assert raw.shape == (8, by_name(qtype).row_bytes(512))
        y = dequantize(raw, qtype, 512)
        assert np.array_equal(y.view(np.uint32),
                              quant_refs_numpy.get(qtype)(raw, 512).view(np.uint32))
        live = np.abs(x).max(axis=1) > 0
        rel = np.sqrt(((y - x) ** 2).mean(axis=1) / (x**2).mean(axis=1))
        assert np.all(rel[live] < MAX_REL_ERR[qtype]), rel


@pytest.mark.parametrize("qtype", TYPES)
def test_row_blocks_are_independent(qtype):
    x, qw = _golden_inputs()
    q = registry.quantizers()[qtype]
    whole = q(x, qw, MODE_IMATRIX)
    parts = np.concatenate([q(x[:3], qw, MODE_IMATRIX), q(x[3:], qw, MODE_IMATRIX)])
    assert np.array_equal(whole, parts)


@pytest.mark.parametrize("qtype", ("iq4_k", "iq4_ks", "iq4_kss"))
def test_uniform_mode_equals_default_when_x_squared_is_one(qtype):
    # the IQ4 family's default weight is x²; for x = ±1 that is the uniform w = 1
    i = np.arange(2 * 512, dtype=np.int64).reshape(2, 512)
    x = np.where(((i * 7919) % 13) < 6, 1.0, -1.0).astype(F)
    q = registry.quantizers()[qtype]
    assert np.array_equal(q(x, None, MODE_UNIFORM), q(x, None, MODE_DEFAULT))


@pytest.mark.parametrize("qtype", TYPES)
def test_uniform_mode_is_its_own_weighting(qtype):
    x, _ = _golden_inputs()
    uni = quantize(x, qtype, uniform=True)
    assert not np.array_equal(uni, quantize(x, qtype))
    y = dequantize(uni, qtype, 512)
    live = np.abs(x).max(axis=1) > 0
    rel = np.sqrt(((y - x) ** 2).mean(axis=1) / (x**2).mean(axis=1))
    assert np.all(rel[live] < MAX_REL_ERR[qtype]), rel


@pytest.mark.parametrize("qtype", TYPES)
def test_zero_rows(qtype):
    x = np.zeros((2, 256), F)
    raw = quantize(x, qtype)
    assert np.all(dequantize(raw, qtype, 256) == 0)


def test_dequantize_rejects_wrong_row_size():
    with pytest.raises(ValueError):
        registry.dequantizers()["iq4_ks"](np.zeros((2, 136), np.uint8), 256)


def test_quantizer_rejects_bad_input():
    q = registry.quantizers()["iq5_k"]
    with pytest.raises(ValueError):
        q(np.zeros((2, 200), F), None, MODE_DEFAULT)
    x = np.random.default_rng(0).standard_normal((2, 256))  # float64 and strided: converted
    assert q(x[:, ::-1], None, MODE_DEFAULT).tobytes() == q(
        np.ascontiguousarray(x[:, ::-1], F), None, MODE_DEFAULT).tobytes()
    with pytest.raises(ValueError):
        q(np.zeros((2, 256), F), None, MODE_IMATRIX)
    with pytest.raises(ValueError):
        q(np.zeros((2, 256), F), np.ones(128, F), MODE_IMATRIX)


def _degenerate_inputs():
    """Blocks where the reference divides 0 by 0 (IQ6_K: the only weighted element labels to the
    grid's 0), blocks weighted only at zeros, a zero block and an almost empty row."""
    i = np.arange(6 * 256, dtype=np.int64).reshape(6, 256)
    x = ((((i * 1103515245 + 12345) % (1 << 31)) % 2001) - 1000).astype(np.float64) * 2.0**-13
    qw = (((np.arange(256) * 2654435761) % 997) / 331.0 + 0.01)
    x[:, 0], x[:, 1] = 1.0, 2.0**-10
    qw[0:16] = 0
    qw[1] = 1.0
    qw[16:32] = 0
    qw[20] = 1.0
    x[:, 20] = 0.0
    x[2, 32:48] = 0
    x[3, :] = 0
    x[3, 5] = 2.0**-10
    return x.astype(F), qw.astype(F)


# sha256[:16] of the reference's bytes for _degenerate_inputs() with the importance vector
GOLDEN_DEGENERATE = {
    "iq4_k": "3680efd377b085f1",
    "iq4_ks": "bef43ee97b23a012",
    "iq4_kss": "6c00523bde2b8c62",
    "iq5_k": "6996a67f5f04fe5a",
    "iq5_ks": "befc0d9b35fafc0d",
    "iq6_k": "7839c6f1eda7cf81",
}


@pytest.mark.parametrize("qtype", TYPES)
def test_degenerate_blocks_follow_ieee_like_the_reference(qtype):
    x, qw = _degenerate_inputs()
    got = registry.quantizers()[qtype](x, qw, MODE_IMATRIX)
    assert hashlib.sha256(got.tobytes()).hexdigest()[:16] == GOLDEN_DEGENERATE[qtype]
