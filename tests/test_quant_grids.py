"""Value grids against ik_llama.cpp's tables (transcribed from ggml-common.h at 8337e4cd3), the
IQ4_KS / IQ4_K block decoder against the dequantizer, variant choice, and the per-block fits
against a slow numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.quant import api, grids
from iqk_studio.quant.grid_fit import (
    DECODERS,
    TRIALS,
    VARIANTS,
    fit_stats,
    grid_fit_errors,
    variant_counts,
)

# ggml/src/ggml-common.h lines 2212-2252 and ggml-quants.c:3911, as text
GGML_COMMON = {
    "kvalues_iq4nl": "-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113",
    "iq2nl_values": "-31, -13, 1, 17,   -26, -8, 6, 22",
    "iq3nl_values": """-63, -40, -23, -10, 1, 13, 28,  47,
                       -59, -36, -19,  -6, 5, 17, 32,  51,""",
    "iq4k_values": """-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
                      -123, -100, -79, -61, -45, -31, -18,  -6, 5, 17, 29, 42, 57, 73, 93, 117""",
    "iq5nl_values": """-126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18,
        -12, -6, -1, 5, 11, 17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121,
        -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4,  1, 7,
        13, 19, 25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123,""",
    "iq6nl_values": """
    -127, -121, -115, -109, -104,  -98,  -93,  -88,  -84,  -79,  -74,  -70,  -66,  -62,  -58,  -54,
     -51,  -47,  -44,  -40,  -37,  -34,  -31,  -28,  -25,  -22,  -19,  -16,  -13,  -11,   -8,   -5,
      -2,    0,    3,    6,    9,   12,   14,   17,   20,   23,   27,   30,   33,   36,   40,   44,
      47,   51,   55,   59,   63,   68,   72,   77,   82,   87,   92,   98,  103,  109,  115,  121,
    -126, -120, -114, -108, -103,  -97,  -92,  -87,  -83,  -78,  -73,  -69,  -65,  -61,  -57,  -53,
     -50,  -46,  -43,  -39,  -36,  -33,  -30,  -27,  -24,  -21,  -18,  -15,  -12,  -10,   -7,   -4,
      -1,    1,    4,    7,   10,   13,   15,   18,   21,   24,   28,   31,   34,   37,   41,   45,
      48,   52,   56,   60,   64,   69,   73,   78,   83,   88,   93,   99,  104,  110,  116,  122,""",
    "kvalues_mxfp4": "0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,",
    "iq2kl_values": """0xe9c1, 0x0dc1, 0xc1d8, 0xf6d8, 0x0dd8, 0x2fd8, 0xd8e9, 0xe9e9, 0x01e9, 0x0de9,
        0x1ce9, 0xc1f6, 0x01f6, 0x0df6, 0x2ff6, 0xe901, 0xf601, 0x0101, 0x0d01, 0x1c01, 0xd80d,
        0xe90d, 0xf60d, 0x010d, 0x0d0d, 0xc11c, 0xe91c, 0x011c, 0x1c1c, 0x2f1c, 0xe92f, 0x0d2f,""",
}


def _ints(text: str) -> list[int]:
    return [int(t, 0) for t in text.replace("\n", " ").split(",") if t.strip()]


@pytest.mark.parametrize("name", sorted(GGML_COMMON))
def test_ggml_tables_are_the_reference_text(name):
    g = grids.GRID_BY_NAME[name]
    want = _ints(GGML_COMMON[name])
    got = (grids.iq2kl_values if name == "iq2kl_values" else g.values).astype(int).tolist()
    assert got == want
    assert g.source.startswith("ggml/src/")


def test_json_tables_in_index_order():
    j = grids.table_json()
    for name in GGML_COMMON:
        assert all(isinstance(v, (int, list)) for v in j[name]), name
    assert j["iq4k_values"] == _ints(GGML_COMMON["iq4k_values"])
    assert j["iq2kl_values"][0] == [-63, -23]  # 0xe9c1: low byte first
    # fp4 by code: sign bit high, then exponent, then mantissa
    assert j["e2m1"] == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                         -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    assert j["e2m1"] == [v / 2 for v in j["kvalues_mxfp4"]]
    assert j["fe1m2"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75,
                          -0.0, -0.25, -0.5, -0.75, -1.0, -1.25, -1.5, -1.75]
    assert np.signbit(j["fe1m2"][8]) and all(isinstance(v, float) for v in j["nf4"])
    assert j["nf4"][0] == -1.0 and j["nf4"][7] == 0.0 and j["nf4"][15] == 1.0
    assert j["int4"] == [0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1]
    assert j["q4_0"] == list(range(-8, 8))
    assert j["q8_0"][:3] == [0, 1, 2] and j["q8_0"][127:130] == [127, -128, -127]
    assert len(j["q8_0"]) == 256


def test_curves_and_variants():
    c = grids.curves()
    v = grids.iq4k_variants()
    assert list(c)[:4] == list(VARIANTS) == list(v)
    np.testing.assert_array_equal(v["iq4k shifted mirrored"], -(grids.iq4k_values[16:]))
    for name, y in c.items():
        assert np.all(np.diff(y) >= 0) and np.abs(y).max() == 1.0, name
    assert len(c["q8_0"]) == 256 and len(c["iq2k"]) == 4


# ------------------------------------------------------------------- IQ4_KS / IQ4_K bytes

@pytest.mark.parametrize("qtype", ["iq4_ks", "iq4_k"])
def test_decoded_blocks_are_what_the_dequantizer_gives(qtype):
    rng = np.random.default_rng(3)
    x = rng.standard_t(4, size=(8, 512)).astype(np.float32)
    x[2, :64] = 0
    raw = api.quantize(x, qtype)
    codes = DECODERS[qtype](raw, 512)
    want = api.dequantize(raw, qtype, 512)
    assert np.array_equal(codes.values().view(np.uint32), want.view(np.uint32))
    assert codes.scale.shape == (8, 512 // codes.block) and codes.idx.max() < 16


@pytest.mark.parametrize("qtype", ["iq4_ks", "iq4_k"])
@pytest.mark.parametrize("variant", range(4))
def test_blocks_on_one_variant_are_counted_as_it(qtype, variant):
    """Weights that are exactly a positive multiple of one variant's values: the quantizer's
    search picks that variant (error 0), so the decoded sign and shift bit must name it."""
    rng = np.random.default_rng(variant)
    row = grids.iq4k_variants()[VARIANTS[variant]].astype(np.float32)
    block = 32 if qtype == "iq4_ks" else 16
    idx = rng.integers(0, 16, size=(4, 256))
    idx[:, ::block] = np.argmax(np.abs(row))  # each block holds the row's largest magnitude
    x = (row[idx] * rng.uniform(0.01, 0.02, size=(4, 256 // block)).repeat(block, 1))
    codes = DECODERS[qtype](api.quantize(x.astype(np.float32), qtype), 256)
    counts = variant_counts(codes)
    assert counts[variant] == 4 * 256 // block and counts.sum() == counts[variant]


def test_zero_blocks_are_left_out_of_variant_counts():
    x = np.zeros((1, 256), np.float32)
    x[0, :16] = np.linspace(-1, 1, 16)
    codes = DECODERS["iq4_k"](api.quantize(x, "iq4_k"), 256)
    assert variant_counts(codes).sum() == 1  # the other 15 blocks have scale 0
    keep = np.zeros((1, 16), bool)
    assert variant_counts(codes, keep).sum() == 0


# ------------------------------------------------------------------------- per-block fits

def _slow_fit(x, grid):
    g = np.sort(np.asarray(grid, float))
    g = g / np.abs(g).max()
    amax, sxx = np.abs(x).max(), float(x @ x)
    best = sxx
    for t in TRIALS:
        q = np.array([g[np.argmin(np.abs(v - g))] for v in x * (t / amax)])
        sxq, sqq = float(x @ q), float(q @ q)
        best = min(best, sxx - sxq * sxq / sqq if sqq > 0 else sxx)
    return max(best, 0.0)


def test_fit_errors_match_a_slow_reference():
    rng = np.random.default_rng(7)
    xb = rng.standard_normal((12, 32))
    gl = [grids.NF4, grids.E2M1, grids.iq4k_values[16:]]
    got = grid_fit_errors(xb, gl)
    want = np.array([[_slow_fit(x, g) for g in gl] for x in xb])
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_a_block_on_a_grid_fits_it_exactly():
    rng = np.random.default_rng(8)
    e2m1 = grids.E2M1[rng.integers(0, 16, size=(20, 32))]
    e2m1[:, 0] = 6.0  # the max magnitude is on the grid's max
    iq4 = -grids.iq4k_values[16:].astype(float)[rng.integers(0, 16, size=(20, 32))]
    iq4[:, 0] = 123.0  # shifted, mirrored: -(-123)
    x = np.concatenate([e2m1 * 0.003, iq4 * 1e-4, np.zeros((1, 32))])
    fs = fit_stats(x, 32)
    assert fs.errors.shape == (40, 4) and fs.names == ("e2m1", "fe1m2", "nf4", "iq4k")
    assert np.all(fs.errors[:20, 0] <= 1e-12 * fs.energy[:20])
    assert np.all(fs.errors[20:, 3] <= 1e-12 * fs.energy[20:])
    d = fs.distance()
    assert np.all(d[:20] < 0) and np.all(d[20:] > 0)
    rel = fs.rel()
    assert rel["iq4k"] == pytest.approx(fs.errors[:20, 3].sum() / fs.energy.sum())
