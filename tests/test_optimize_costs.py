"""Cost model pieces: the weighted error against a direct computation, the row sample, the
interpolation between measured points."""

import math

import numpy as np
import pytest

from iqk_studio.optimize.costs import CostTable, _interpolate, sample_rows, weighted_error
from iqk_studio.quant.api import dequantize, quantize


def test_weighted_error_equals_direct_sum_and_sampling_is_close():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    a = rng.uniform(0.1, 3.0, 256)
    d = dequantize(quantize(w, "q4_0"), "q4_0", 256).reshape(w.shape) - w
    want = float(((d.astype(np.float64) ** 2) * a).sum())
    assert weighted_error(w, "q4_0", a, None, max_rows=64) == pytest.approx(want, rel=1e-9)
    big = rng.standard_normal((4096, 256)).astype(np.float32)
    d = dequantize(quantize(big, "q4_0"), "q4_0", 256).reshape(big.shape) - big
    full = float((d.astype(np.float64) ** 2).sum())
    assert weighted_error(big, "q4_0", None, None, max_rows=256) == pytest.approx(full, rel=0.05)
    # 3-D (experts): one weight row per expert
    e3 = rng.standard_normal((2, 32, 64)).astype(np.float32)
    a3 = np.stack([np.ones(64), np.zeros(64)])
    d0 = dequantize(quantize(e3[0], "q8_0"), "q8_0", 64).reshape(32, 64) - e3[0]
    assert weighted_error(e3, "q8_0", a3, None) == pytest.approx(float((d0 ** 2).sum()),
                                                                 rel=1e-6)


def test_sample_rows_blocks():
    s = sample_rows(4096, 128)
    assert len(s) == 128 and len(set(s)) == 128 and s.min() == 0 and s.max() == 4095
    assert (s.reshape(-1, 16) == s.reshape(-1, 16)[:, :1] + np.arange(16)).all()
    assert list(sample_rows(100, 128)) == list(range(100))


def test_interpolation_and_group_cost():
    curve = [(1.0, 0.01), (4.0, 0.08)]
    assert _interpolate(curve, 0.5) == pytest.approx(0.005)  # proportional below
    assert _interpolate(curve, 8.0) == pytest.approx(0.16)  # and above
    assert _interpolate(curve, 2.0) == pytest.approx(math.exp(
        (math.log(0.01) + math.log(0.08)) / 2))  # log-log midpoint
    t = CostTable(errors={("a", "q4_0"): 4.0, ("a", "q8_0"): 1.0, ("b", "q8_0"): 1.0},
                  sources={"a": "f32", "b": "f32"})
    t.measured["g"] = {"q4_0": (4.0, 0.08, 0.001)}
    t.finish()
    assert t.group_cost("g", ["a"], ["q4_0"]) == 0.08  # measured: used as is
    assert t.group_cost("g", ["a"], ["q8_0"]) == pytest.approx(0.02)
    assert t.group_cost("g", ["a"], ["f32"]) == 0.0  # unchanged
    assert t.group_cost("h", ["b"], ["q8_0"]) == pytest.approx(0.02)  # median ratio 0.02
    assert t.group_cost("h", ["b"], ["q6_0"]) is None  # no error known
