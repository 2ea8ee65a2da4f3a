"""quantize/dequantize public API: clear QuantErrors for bad input, and a round-trip sanity check
for every type in the kernel registry (error relative to the row RMS, bounded by the type's bpw).
"""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.quant import api, registry
from iqk_studio.quant.api import QuantError
from iqk_studio.quant.types import BY_NAME, QUANT_TYPES, Kind

N = 512  # a multiple of every block size (32, 64, 128, 256)
FLOAT_BOUND = {"f32": 0.0, "f16": 1e-3, "bf16": 4e-3}


ROWS = 16  # a multiple of every interleave (_r4/_r8/_r16 types quantize groups of rows)


def _x(rows: int = ROWS, n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)).astype(np.float32) * np.float32(0.02)
    x[:, ::97] *= 8  # a few outliers, as real weights have
    return x


def _rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(x**2)))


def bound(qtype: str) -> float:
    """Loose bound on relative RMSE for Gaussian-like rows: 2·2^(1 - bpw) (mxfp4, the crudest
    4-bit grid, measures 0.167 against 0.21)."""
    t = BY_NAME[qtype]
    if t.kind == Kind.FLOAT:
        return FLOAT_BOUND.get(qtype, 1e-3)
    return 2.0 * 2.0 ** (1.0 - t.bpw)


QUANTIZERS = sorted(registry.quantizers())
DEQUANTIZERS = sorted(registry.dequantizers())


def _xfail_if_base_missing(qtype: str) -> None:
    t = BY_NAME[qtype]
    if t.kind == Kind.REPACKED and t.base not in registry.quantizers():
        pytest.xfail(f"{qtype} is registered but its base type {t.base} has no quantizer")


@pytest.mark.parametrize("qtype", QUANTIZERS)
def test_round_trip_close_for_every_registered_type(qtype):
    _xfail_if_base_missing(qtype)
    x = _x()
    imp = np.random.default_rng(1).uniform(0.5, 2.0, N).astype(np.float32)
    for kwargs in ({"importance": imp}, {"uniform": True}, {}):
        try:
            raw = api.quantize(x, qtype, **kwargs)
        except QuantError as e:  # a type that needs an imatrix may refuse the default mode
            assert not kwargs and "imatrix" in str(e).lower(), e
            continue
        assert raw.shape == (x.shape[0], BY_NAME[qtype].row_bytes(N)) and raw.dtype == np.uint8
        if qtype not in registry.dequantizers():
            continue
        err = _rel_rmse(x, api.dequantize(raw, qtype, N))
        assert err <= bound(qtype), f"{qtype} {kwargs and list(kwargs)}: rel RMSE {err:.4f}"


@pytest.mark.parametrize("qtype", QUANTIZERS)
def test_row_length_the_type_cannot_hold(qtype):
    t = BY_NAME[qtype]
    bad = t.block + 1 if t.block > 1 else 0
    with pytest.raises(QuantError, match="multiple of|got 0"):
        api.quantize(np.zeros((2, bad), np.float32), qtype)


@pytest.mark.parametrize("qtype", QUANTIZERS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_input(qtype, value):
    x = _x(rows=3)
    x[2, 7] = value
    with pytest.raises(QuantError, match="NaN or Inf.*row 2"):
        api.quantize(x, qtype)


def test_importance_with_nan_is_refused():
    imp = np.ones(N, np.float32)
    imp[3] = np.nan
    with pytest.raises(QuantError, match="importance has NaN"):
        api.quantize(_x(), "q4_K", importance=imp)


@pytest.mark.parametrize("qtype", QUANTIZERS)
def test_wrong_importance_length(qtype):
    with pytest.raises(QuantError, match="importance has 100 values"):
        api.quantize(_x(), qtype, importance=np.ones(100, np.float32))


def test_type_we_do_not_quantize():
    missing = [t.name for t in QUANT_TYPES if t.name not in registry.quantizers()]
    assert missing, "every type has a quantizer: pick another refusal case"
    with pytest.raises(QuantError, match="not implemented"):
        api.quantize(_x(), missing[0])
    with pytest.raises(QuantError):
        api.quantize(_x(), "q9_Z")


def test_wrong_shape_and_byte_count():
    with pytest.raises(QuantError, match="2-D"):
        api.quantize(np.zeros((2, 2, N), np.float32), "q8_0")
    raw = api.quantize(_x(), "q8_0")
    with pytest.raises(QuantError, match="whole number"):
        api.dequantize(raw.reshape(-1)[:-1], "q8_0", N)
    with pytest.raises(QuantError, match="multiple of"):
        api.dequantize(raw, "q8_0", 33)


@pytest.mark.parametrize("qtype", ["q4_0", "q4_K", "iq4_xs", "q6_K"])
def test_blocks_of_rows_equal_one_call(qtype):
    x = _x(rows=10)
    imp = np.random.default_rng(2).uniform(0.5, 2.0, N).astype(np.float32)
    whole = api.quantize(x, qtype, importance=imp)
    parts = np.concatenate([api.quantize(x[r0:r0 + 3], qtype, imp) for r0 in range(0, 10, 3)])
    np.testing.assert_array_equal(parts, whole)


def test_tensor_blocks_cover_each_expert_in_order(monkeypatch):
    monkeypatch.setattr(api, "ELEMENTS_PER_BLOCK", 3 * 256)
    blocks = list(api.tensor_blocks((256, 7, 2), "q4_0"))
    assert blocks == [(0, 0, 3), (0, 3, 6), (0, 6, 7), (1, 7, 10), (1, 10, 13), (1, 13, 14)]
    assert api.rows_per_block(256, "q4_0_r8") == 8  # a multiple of the row group
    assert list(api.tensor_blocks((32,), "q8_0")) == [(0, 0, 1)]


def test_round_trip_equals_whole_tensor_per_expert(monkeypatch):
    """Row blocks of a 3-D tensor, each expert with its imatrix slice, give what quantizing each
    expert matrix in one call gives; a cancelled iteration has done at most one block."""
    monkeypatch.setattr(api, "ELEMENTS_PER_BLOCK", 4 * N)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 10, N)).astype(np.float32)
    imp = rng.uniform(0.5, 2.0, 3 * N).astype(np.float32)
    got = np.empty((30, N), np.float32)
    steps = 0
    for r0, r1, y in api.round_trip(x, "q4_K", imp):
        got[r0:r1] = y
        steps += 1
    assert steps == 9  # 4 + 4 + 2 rows per expert
    for e in range(3):
        q = api.quantize(x[e], "q4_K", imp[e * N:(e + 1) * N])
        np.testing.assert_array_equal(got[10 * e:10 * (e + 1)], api.dequantize(q, "q4_K", N))
    gen = api.round_trip(x, "q4_K", imp)
    next(gen)
    gen.close()
    with pytest.raises(QuantError, match="importance has 700 values for rows of 512"):
        list(api.round_trip(x, "q8_0", imp[:700]))


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q6_0", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs"])
def test_importance_is_used(qtype):
    """A heavy weight on one column pulls that column's error down (the imatrix path is live)."""
    x = _x(rows=16)
    plain = np.ones(N, np.float32)
    heavy = plain.copy()
    heavy[5] = 1e4
    e_plain = np.abs(api.dequantize(api.quantize(x, qtype, importance=plain), qtype, N) - x)[:, 5]
    e_heavy = np.abs(api.dequantize(api.quantize(x, qtype, importance=heavy), qtype, N) - x)[:, 5]
    assert e_heavy.mean() < e_plain.mean()


def test_zero_rows_quantize_to_zero():
    x = np.zeros((ROWS, N), np.float32)
    for qtype in QUANTIZERS:
        t = BY_NAME[qtype]
        if qtype not in DEQUANTIZERS or (t.kind == Kind.REPACKED and t.base not in QUANTIZERS):
            continue
        try:
            raw = api.quantize(x, qtype)
        except QuantError:
            continue
        y = api.dequantize(raw, qtype, N)
        assert np.all(y == 0), qtype


def test_repacked_row_groups_are_a_clear_error():
    import numpy as np

    from iqk_studio.quant import api, registry

    assert registry.can_quantize("q4_0_r8")
    with pytest.raises(api.QuantError, match="groups of 8"):
        api.quantize(np.ones((3, 32), np.float32), "q4_0_r8")
