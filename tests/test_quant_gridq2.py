"""IQ2_XXS / IQ2_XS / IQ1_S / IQ1_M quantizers: search tables and helpers against obvious numpy
versions, golden bytes from ik_llama.cpp's ggml-quants.c (compiled as the reference was, run on
the inputs below), the imatrix requirement and the reference's abort cases as QuantError."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from iqk_studio.quant import api, registry
from iqk_studio.quant.kernels import MODE_IMATRIX, MODE_UNIFORM
from iqk_studio.quant.kernels.iqgrid.neighbours import argsort_stable
from iqk_studio.quant.kernels.iqgrid.tables import grid_codes
from iqk_studio.quant.kernels.iqgrid.tables import neighbour_tables as search_tables

TYPES = ("iq2_xxs", "iq2_xs", "iq1_s", "iq1_m")
CASES = ("mixed", "ties", "zeros", "uniform")


def lcg_inputs(case: str, rows: int = 4, n: int = 512):
    """Platform-independent inputs: small integers from a 64-bit LCG times powers of two (exact
    in float32), with heavy tails; 'zeros' adds all-zero and 1e-9 blocks; 'uniform' has w = 1."""
    state = 0x9E3779B97F4A7C15 + CASES.index(case)
    vals = np.empty(rows * n + n, np.int64)
    for i in range(vals.size):
        state = (state * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
        vals[i] = state >> 40  # 24 random bits
    a = (vals[:rows * n] % 2001 - 1000).reshape(rows, n)
    tail = ((vals[:rows * n] >> 12 & 31) == 0).reshape(rows, n)
    x = np.where(tail, a * 8, a).astype(np.float32) * np.float32(2.0**-16)
    if case == "ties":
        x = np.round(x * 256) / 256
    if case == "zeros":  # row 0 intact: IQ1_M's skipped blocks then never read unset shifts
        x[1, :] = 0
        x[2, 32:64] = 0
        x[3, 272:288] = 1e-9
    qw = np.exp2(((vals[rows * n:] % 9) - 4).astype(np.float32)).astype(np.float32)
    if case == "uniform":
        qw = np.ones(n, np.float32)
    return np.ascontiguousarray(x, np.float32), qw


# sha256(bytes)[:32] of quantize_<type>() in ik_llama.cpp 8337e4cd3 ggml-quants.c built with
# gcc 12.2 -O3 -march=native -mtune=znver3 -DNDEBUG (reproduces ../shared/refs/quant byte for byte)
GOLDEN = {
    ("iq2_xxs", "mixed"): "4a77e182f1150dda70d6021fd17602e6",
    ("iq2_xxs", "ties"): "a7dfe0ce410a6aac4ec1f514f4da7236",
    ("iq2_xxs", "zeros"): "e0c7f83e61cab9344b879f744cfe8167",
    ("iq2_xxs", "uniform"): "990f7f85d92f085484c70ca6c7f615df",
    ("iq2_xs", "mixed"): "2aaa7d375a2b47cc3ea6406b3e10d6b3",
    ("iq2_xs", "ties"): "4c298c049b831ac3f584174481aedc51",
    ("iq2_xs", "zeros"): "d91683ec43bbf6f5580d1d8e0f95a140",
    ("iq2_xs", "uniform"): "ba647a3709c9797e2d16a5ce967eb148",
    ("iq1_s", "mixed"): "24a2c3687ea733b53c963a29372b1e74",
    ("iq1_s", "ties"): "5809f483bc6b243179f6b674e406befa",
    ("iq1_s", "zeros"): "12b3d51f6c469d5e729a022fa76e661a",
    ("iq1_s", "uniform"): "4c1ecfad98b76b234545a367b8503779",
    ("iq1_m", "mixed"): "5f9bf17e72db1e963bfebbf2ec030a81",
    ("iq1_m", "ties"): "3489655fc7baaa87020f121e1073dc14",
    ("iq1_m", "zeros"): "2bfde443cd660fc5700ea0975642ec39",
    ("iq1_m", "uniform"): "8720fc844be27fed52239cf3226eefe7",
}


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("case", CASES)
def test_golden_bytes(qtype, case):
    x, qw = lcg_inputs(case)
    mode = MODE_UNIFORM if case == "uniform" else MODE_IMATRIX
    out = registry.quantizers()[qtype](x, None if case == "uniform" else qw, mode)
    assert hashlib.sha256(out.tobytes()).hexdigest()[:32] == GOLDEN[(qtype, case)]


@pytest.mark.parametrize("kind, n", [("iq2xxs", 256), ("iq2xs", 512), ("iq1s", 2048)])
def test_grid_codes_match_gguf_grid(kind, n):
    codes = grid_codes(kind)
    assert codes.shape == (n, 8)
    assert set(np.unique(codes)) <= {1, 3, 5}
    assert len({c.tobytes() for c in codes}) == n


@pytest.mark.parametrize("kind", ["iq2xxs", "iq2xs", "iq1s"])
def test_search_tables_against_brute_force(kind):
    codes, kmap, nb_off, nb_idx = search_tables(kind)
    lv = (codes.astype(np.int64) - 1) // 2
    keys = (lv << (2 * np.arange(8))).sum(1)
    assert (kmap[keys] == np.arange(len(codes))).all()
    assert (kmap >= 0).sum() == len(codes)
    nwant = 3 if kind == "iq1s" else 2
    rng = np.random.default_rng(5)
    checked = 0
    while checked < 25:
        pos = rng.integers(0, 3, 8)
        u = int((pos << (2 * np.arange(8))).sum())
        if kmap[u] >= 0:
            continue
        d2 = [int(((codes[j].astype(int) - (2 * pos + 1)) ** 2).sum()) for j in range(len(codes))]
        cut = sorted(set(d2))[nwant - 1]
        want = sorted((d, j) for j, d in enumerate(d2) if d <= cut)
        assert list(nb_idx[nb_off[u]:nb_off[u + 1]]) == [j for _, j in want]
        checked += 1


def test_argsort_stable_is_numpy_stable():
    rng = np.random.default_rng(1)
    for n in (16, 32):
        v = rng.integers(-3, 4, n).astype(np.float32) * np.float32(0.5)
        idx = np.zeros(n, np.int64)
        argsort_stable(idx, v, n)
        assert (idx == np.argsort(v, kind="stable")).all()


@pytest.mark.parametrize("qtype", TYPES)
def test_needs_an_importance_matrix(qtype):
    x, _ = lcg_inputs("mixed", rows=1, n=256)
    with pytest.raises(api.QuantError, match="requires an importance matrix"):
        api.quantize(x, qtype)


@pytest.mark.parametrize("qtype", TYPES)
def test_round_trip_error_and_zero_rows(qtype):
    x, qw = lcg_inputs("zeros")
    y = api.dequantize(api.quantize(x, qtype, qw), qtype, x.shape[1])
    assert (y[1] == 0).all()
    rel = np.sqrt((qw * (y - x) ** 2).sum() / (qw * x ** 2).sum())  # importance-weighted
    assert rel < {"iq2_xxs": 0.5, "iq2_xs": 0.4, "iq1_s": 0.65, "iq1_m": 0.5}[qtype]


@pytest.mark.parametrize("qtype, reason", [("iq2_xxs", "off the grid"),
                                           ("iq1_s", "zero over a whole block")])
def test_reference_abort_is_a_quant_error(qtype, reason):
    x, qw = lcg_inputs("mixed", rows=2, n=256)
    qw[32:64] = 0  # the reference aborts on such a block
    with pytest.raises(api.QuantError, match=reason):
        api.quantize(x, qtype, qw)
