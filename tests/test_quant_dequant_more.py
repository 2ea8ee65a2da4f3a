"""Dequantizers of the grid, trellis, small odd and repacked types against slow numpy
references, gguf-py, and ik_llama.cpp's quantized reference files."""

from __future__ import annotations

import numpy as np
import pytest
import quant_refs_numpy as refs

from iqk_studio.quant import api, registry
from iqk_studio.quant.types import BY_NAME


def _random_rows(qtype: str, rows: int, n: int, seed: int = 0) -> np.ndarray:
    """Random bytes of `rows` rows with a sane row scale (f32 or f16) and sane fp16 block scales."""
    t = BY_NAME[qtype]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(rows, t.row_bytes(n)), dtype=np.uint8)
    if t.row_meta == 4:
        raw[:, :4] = rng.uniform(0.01, 0.1, rows).astype(np.float32).view(np.uint8).reshape(rows, 4)
    elif t.row_meta == 2:
        raw[:, :2] = rng.uniform(0.1, 1, rows).astype(np.float16).view(np.uint8).reshape(rows, 2)
    return raw


TRELLIS = ["iq1_kt", "iq2_kt", "iq3_kt", "iq4_kt"]


@pytest.mark.parametrize("qtype", TRELLIS)
def test_trellis_matches_slow_reference(qtype):
    raw = _random_rows(qtype, 5, 512, seed=1)
    got = api.dequantize(raw, qtype, 512)
    want = getattr(refs, f"ref_dequant_{qtype}")(raw, 512)
    np.testing.assert_array_equal(got, want)


GRID = ["iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s"]

# relative RMS error of the dequantized reference file against inputs.gguf, per type: an upper
# bound a little above the worst tensor measured (a wrong layout gives errors near or above 1)
REF_BOUNDS = {
    "iq1_s": 0.70, "iq1_m": 0.60, "iq2_xxs": 0.62, "iq2_xs": 0.52, "iq2_s": 0.48,
    "iq3_xxs": 0.33, "iq3_s": 0.26, "iq1_kt": 0.78, "iq2_kt": 0.64, "iq3_kt": 0.38,
    "iq4_kt": 0.21,
}


def _ref_files(shared, qtype):
    out = []
    for suffix in ("", ".imatrix"):
        p = shared("refs", "quant") / "out" / f"{qtype}{suffix}.gguf"
        if p.exists():
            out.append(p)
    return out


@pytest.mark.parametrize("qtype", sorted(REF_BOUNDS))
def test_reference_files_dequantize_close_to_inputs(shared, qtype):
    from iqk_studio.gguf.reader import open_model

    files = _ref_files(shared, qtype)
    assert files, f"no reference output for {qtype}"
    with open_model(shared("refs", "quant", "inputs.gguf")) as inp:
        for path in files:
            with open_model(path) as m:
                seen = 0
                for name, t in m.tensors.items():
                    if t.qtype.name != qtype:
                        continue
                    n = t.shape[0]
                    y = api.dequantize(m.tensor_data(name), qtype, n)
                    x = inp.tensor_data(name).view(np.float32).reshape(-1, n)
                    rel = np.sqrt(((y - x) ** 2).sum() / (x ** 2).sum())
                    assert rel < REF_BOUNDS[qtype], (path.name, name, rel)
                    seen += 1
                assert seen >= 8


@pytest.mark.parametrize("qtype", GRID)
def test_grid_types_match_gguf_py_bit_for_bit(shared, qtype):
    """Our numba kernels equal gguf-py's numpy dequantizer (ggml's arithmetic) on every tensor of
    a reference file and on random bytes (NaN/Inf scales included)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from iqk_studio.gguf.reader import open_model

    gtype = GGMLQuantizationType[qtype.upper()]
    with open_model(_ref_files(shared, qtype)[0]) as m:
        for name, t in m.tensors.items():
            if t.qtype.name == qtype:
                raw = np.array(m.tensor_data(name))
                np.testing.assert_array_equal(api.dequantize(raw, qtype, t.shape[0]),
                                              dequantize(raw, gtype))
    raw = np.random.default_rng(5).integers(0, 256, (16, 2 * BY_NAME[qtype].type_size), np.uint8)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(api.dequantize(raw, qtype, 512), dequantize(raw, gtype))


def test_q1_0_g128_signs():
    raw = np.zeros((1, 18), dtype=np.uint8)
    raw[0, :2] = np.array([0.5], dtype=np.float16).view(np.uint8)
    raw[0, 2] = 0b00000101
    y = api.dequantize(raw, "q1_0_g128", 128)[0]
    assert y[0] == 0.5 and y[1] == -0.5 and y[2] == 0.5 and (y[3:] == -0.5).all()


def test_iq2_bn_levels():
    raw = np.zeros((1, 4 + 16), dtype=np.uint8)
    raw[0, :4] = np.array([2.0], dtype=np.float32).view(np.uint8)
    raw[0, 4] = 0b10_01_00_10  # value 0 -> 2, value 16 -> 0, value 32 -> 1, value 48 -> 2
    y = api.dequantize(raw, "iq2_bn", 64)[0]
    assert (y[0], y[16], y[32], y[48]) == (2.0, -2.0, 0.0, 2.0)
    assert y[1] == -2.0


def test_iq1_bn_ternary_digits():
    """Five base-3 digits packed as ceil(256·idx/243): digit j = (3·(u8)(q·3^(4−j))) >> 8."""
    def pack(digits):  # the quantizer's packing: digit j has weight 3^j
        return (256 * sum(dv * 3 ** j for j, dv in enumerate(digits)) + 242) // 243

    digits = [2, 0, 1, 1, 2]
    raw = np.zeros((1, 2 + 13), dtype=np.uint8)
    raw[0, :2] = np.array([1.5], dtype=np.float16).view(np.uint8)
    raw[0, 2:14] = pack([1] * 5)  # digits all 1 -> 0.0
    raw[0, 2] = pack(digits)
    y = api.dequantize(raw, "iq1_bn", 64)[0]
    assert list(y[:5]) == [1.5 * (dv - 1) for dv in digits]
    assert (y[5:15] == 0).all()


def test_q8_kv_row_scale():
    raw = np.zeros((2, 8 + 32), dtype=np.uint8)
    raw[:, :4] = np.array([0.25, -1.0], dtype=np.float32).view(np.uint8).reshape(2, 4)
    raw[:, 8:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    y = api.dequantize(raw, "q8_KV", 32)
    np.testing.assert_array_equal(y[0], 0.25 * np.arange(-16, 16))
    np.testing.assert_array_equal(y[1], -np.arange(-16, 16, dtype=np.float32))


def test_every_type_of_this_family_has_a_dequantizer():
    """Loops over the type table: every interleaved type, and every grid / trellis / small odd
    type, dequantizes; only I2_S is left out (one scale after all rows: not row-addressable)."""
    mine = set(GRID) | set(TRELLIS) | {"q1_0_g128", "iq1_bn", "iq2_bn", "q8_KV"}
    mine |= {t.name for t in BY_NAME.values() if t.kind.value == "repacked"}
    missing = sorted(name for name in mine if not registry.can_dequantize(name))
    assert missing == []


def test_i2_s_whole_tensor_layout():
    from iqk_studio.quant.kernels.legacy.dequant_only import dequant_i2_s_tensor

    q = np.random.default_rng(7).integers(0, 3, 256)  # values 0..2 -> -1, 0, 1
    body = np.zeros(64, np.uint8)
    for v in range(256):
        b, g, j = v // 128, (v % 128) // 32, v % 32
        body[32 * b + j] |= q[v] << (6 - 2 * g)
    raw = np.concatenate([body, np.array([0.5], np.float32).view(np.uint8), np.zeros(28, np.uint8)])
    np.testing.assert_array_equal(dequant_i2_s_tensor(raw, 256), 0.5 * (q - 1))
    with pytest.raises(ValueError, match="cannot hold"):
        dequant_i2_s_tensor(raw[:40], 256)
