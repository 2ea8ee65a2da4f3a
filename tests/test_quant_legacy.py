"""Shared numba helpers (fp16/bf16, nearest_int, roundf, best_index, explicit FMA) against numpy
oracles, and edge cases of the 32-block legacy quantizers that the reference files do not pin."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from iqk_studio.quant import api
from iqk_studio.quant import common as c
from iqk_studio.quant.kernels import floats
from iqk_studio.quant.kernels.legacy import iq4_nl, weights


def _special_floats(n: int = 20000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mags = 10.0 ** rng.uniform(-9, 5.5, n)
    x = (rng.standard_normal(n) * mags).astype(np.float32)
    edge = [0.0, -0.0, 65504.0, 65519.99, 65520.0, 6.1035156e-05, 6.097555e-05, 5.96e-08,
            2.98e-08, 2.9802322e-08, 2.9802326e-08, 1e-30, 1.0009765625, 1.00048828125]
    return np.concatenate([x, np.float32(edge), -np.float32(edge)]).astype(np.float32)


def test_fp16_round_to_nearest_even_matches_numpy():
    x = _special_floats()
    got = np.array([c.fp32_to_fp16(v) for v in x], dtype=np.uint16)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, want)
    h = np.arange(0, 65536, 251, dtype=np.uint16)
    back = np.array([c.fp16_to_fp32(v) for v in h], dtype=np.float32)
    np.testing.assert_array_equal(back, h.view(np.float16).astype(np.float32))


def test_bf16_rounds_to_nearest_even_and_quiets_nan():
    x = _special_floats(2000)
    u = x.view(np.uint32).astype(np.uint64)
    want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    got = np.array([c.fp32_to_bf16(v) for v in x], dtype=np.uint16)
    np.testing.assert_array_equal(got, want)
    assert c.fp32_to_bf16(np.uint32(0x7F800001).view(np.float32)) == 0x7FC0
    np.testing.assert_array_equal(floats.QUANT["bf16"](x[None], None, 0).view(np.uint16)[0], want)


def test_nearest_int_is_round_half_even_and_nearest_int_mul_uses_the_exact_product():
    v = np.float32([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49999976, 1e6 + 0.5])
    assert [c.nearest_int(t) for t in v] == [int(r) for r in np.rint(v)]
    # 3 * 0.8333334 = 2.5000002 exactly-ish: the product rounded first is 2.5 (-> 2), fused -> 3
    a, b = np.float32(3.0), np.float32(0.8333333)
    exact = np.float64(a) * np.float64(b)
    assert c.nearest_int_mul(a, b) == int(np.rint(exact))


@njit
def _fma(a, b, d):
    return c.fma32(a, b, d)


def test_fma32_is_single_rounding():
    a = np.float32(1.0 + 2.0**-12)
    p = np.float64(a) * np.float64(a)
    want = np.float32(p - 1.0)  # exact in float64, one rounding to float32
    assert _fma(a, a, np.float32(-1.0)) == want
    assert np.float32(a * a) - np.float32(1.0) != want  # the unfused result differs


def test_roundf_is_half_away_from_zero():
    v = np.float32([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, 126.5, -126.5])
    assert [weights.roundf(t) for t in v] == [1, 2, 3, -1, -3, 0, 127, -127]


def test_best_index_is_nearest_with_ties_to_the_higher_index():
    vals = iq4_nl.KVALUES_IQ4NL
    xs = np.concatenate([np.linspace(-140, 130, 5401, dtype=np.float32),
                         ((vals[1:] + vals[:-1]) / 2).astype(np.float32)])
    for x in xs:
        d = np.abs(vals.astype(np.float64) - np.float64(x))
        want = int(np.flatnonzero(d == d.min())[-1])
        assert c.best_index(vals, x) == want, x
        assert c.best_index_lut(vals, iq4_nl.IQ4NL_TABLE, x) == want, x


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q6_0", "q8_0", "q4_1", "q5_1", "iq4_nl"])
def test_zero_and_tiny_blocks(qtype):
    x = np.zeros((2, 64), np.float32)
    x[1, 32] = 1e-20  # second block of row 1: one tiny value
    for kw in ({}, {"importance": np.ones(64, np.float32)}, {"uniform": True}):
        y = api.dequantize(api.quantize(x, qtype, **kw), qtype, 64)
        assert np.all(np.isfinite(y)) and np.all(np.abs(y - x) <= 1e-19), (qtype, kw)


def test_iq4_nl_zero_block_layout():
    raw = api.quantize(np.zeros((1, 32), np.float32), "iq4_nl")
    assert raw[0, :2].tobytes() == b"\x00\x00" and np.all(raw[0, 2:] == 0x88)


def test_q8_0_ignores_importance_and_rounds_away_from_zero():
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = 127.0
    x[0, 1] = 0.5
    x[0, 2] = -1.5
    raw = api.quantize(x, "q8_0")
    assert list(raw[0, 2:5].view(np.int8)) == [127, 1, -2]
    imp = np.arange(1, 33, dtype=np.float32)
    np.testing.assert_array_equal(api.quantize(x, "q8_0", importance=imp), raw)


def test_uniform_mode_differs_from_default_where_the_reference_weights_matter():
    x = np.random.default_rng(3).standard_normal((8, 256)).astype(np.float32)
    x[:, ::13] *= 6
    for qtype in ("q6_0", "iq4_nl"):
        assert not np.array_equal(api.quantize(x, qtype), api.quantize(x, qtype, uniform=True))
