"""Scoring kernels against plain numpy: NLL (whole rows and vocabulary slices), the 16-bit base
log-prob encoding, and per-position KLD / Δp / same-top."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.engine.scoring import NllAccumulator, base_rows, kld_rows, nll_rows


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((9, 1001)) * 4).astype(np.float32), rng.integers(0, 1001, 9)


def test_nll_rows_and_slices(logits):
    lg, t = logits
    want = -log_softmax(lg)[np.arange(9), t]
    np.testing.assert_allclose(nll_rows(lg, t), want, rtol=1e-6)
    acc = NllAccumulator(t, 1001)
    for v0 in range(0, 1001, 128):  # the max moves between slices
        acc.add(v0, lg[:, v0:v0 + 128])
    np.testing.assert_allclose(acc.nll(), want, rtol=1e-6)


def test_nll_rows_rejects_bad_targets(logits):
    lg, t = logits
    with pytest.raises(ValueError, match="vocabulary"):
        nll_rows(lg, t + 1001)


def test_base_rows_encode_log_probs(logits):
    lg, t = logits
    b, nll = base_rows(lg, t)
    lp = log_softmax(lg)
    for r in range(9):
        dec = b.log_probs(r)
        keep = lp[r] > lp[r].max() - 24
        assert np.abs(dec[keep] - lp[r][keep]).max() <= 0.6 * b.scale[r] + 1e-5
    np.testing.assert_allclose(nll, -lp[np.arange(9), t], rtol=1e-6)


def test_kld_rows(logits):
    lg, t = logits
    rng = np.random.default_rng(1)
    lq = lg + rng.standard_normal(lg.shape).astype(np.float32)
    b, _ = base_rows(lg, t)
    r = kld_rows(lq, b, t)
    lpb = np.array([b.log_probs(i) for i in range(9)], np.float64)
    lpq = log_softmax(lq)
    keep = lpb > -16
    want = (np.where(keep, np.exp(lpb) * (lpb - lpq), 0)).sum(1)
    np.testing.assert_allclose(r.kld, want, rtol=1e-4)
    np.testing.assert_array_equal(r.same_top, lpb.argmax(1) == lq.argmax(1))
    np.testing.assert_allclose(r.p_diff, np.exp(lpq[np.arange(9), t]) -
                               np.exp(lpb[np.arange(9), t]), atol=1e-6)
    same = kld_rows(lg, b, t)
    assert same.same_top.all() and np.abs(same.kld).max() < 1e-4


def test_slice_exp_is_accurate_and_keeps_nan():
    """The vectorizable exp of the slice accumulator: within 3e-7 of exp over the range the
    log-sum-exp sees, and a NaN logit still gives a NaN NLL."""
    from numba import njit

    from iqk_studio.engine.scoring import _exp_neg

    @njit
    def ev(out, x):
        for i in range(x.shape[0]):
            out[i] = _exp_neg(x[i])

    x = np.concatenate([-np.logspace(-8, np.log10(87), 50001), [0.0, -1e-30]]).astype(np.float32)
    got = np.empty_like(x)
    ev(got, x)
    np.testing.assert_allclose(got, np.exp(x.astype(np.float64)), rtol=3e-7)
    lg = np.zeros((2, 64), np.float32)
    lg[1, 5] = np.nan
    acc = NllAccumulator(np.array([3, 3]), 64)
    acc.add(0, lg)
    nll = acc.nll()
    assert nll[0] == pytest.approx(np.log(64)) and np.isnan(nll[1])
