"""Per-type error scores: against an obvious numpy computation, and ordered by bits."""

import numpy as np
import pytest

from iqk_studio.jobs.type_errors import score, type_errors
from iqk_studio.quant import api


def _x():
    rng = np.random.default_rng(1)
    return rng.standard_t(5, size=(8, 256)).astype(np.float32)


def test_score_matches_numpy():
    x = _x()
    s = score(x, "q8_0")
    q = api.dequantize(api.quantize(x, "q8_0"), "q8_0", 256)
    want = np.sqrt(((x - q) ** 2).sum() / (x ** 2).sum())
    assert abs(s.rel_rmse - want) < 1e-6
    assert s.bpw == 8.5
    assert s.weighted_rel_rmse == s.rel_rmse


def test_more_bits_less_error():
    got = {s.qtype: s for s in type_errors(_x(), types=["q4_0", "q8_0"])}
    assert got["q8_0"].rel_rmse < got["q4_0"].rel_rmse < 0.2


def test_types_needing_an_imatrix_are_reported_not_fatal():
    from iqk_studio.quant.api import QuantError

    x = _x()
    for name in ("iq2_xxs", "iq1_s", "iq2_xs", "iq1_m"):
        with pytest.raises(QuantError, match="requires an importance matrix"):
            api.quantize(x, name)
    got = list(type_errors(x, types=["iq2_xxs", "q8_0"]))
    assert got[0].note and np.isnan(got[0].rel_rmse)
    assert got[-1].qtype == "q8_0" and not got[-1].note


def test_default_list_has_no_interleaved_duplicates():
    """_R4/_R8 forms dequantize to their base type's values, so they are not listed twice."""
    from iqk_studio.jobs.type_errors import default_types
    from iqk_studio.quant.types import by_name

    names = default_types()
    assert names and all(by_name(n).interleave == 1 for n in names)
    assert len(names) == len(set(names))
    x = _x()[:8, :256]
    for rep in ("iq4_ks_r4", "q4_k_r4"):
        base = by_name(rep).base
        assert base in names and rep not in names
        a = api.dequantize(api.quantize(x, rep), rep, 256)
        b = api.dequantize(api.quantize(x, base), base, 256)
        assert np.array_equal(a, b)
