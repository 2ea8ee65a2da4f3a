"""Edge cases of the 256-block k-quant and iq4_xs/mxfp4 kernels that the reference files do not
pin down: all-zero super-blocks, Q2_K's ternary-net path, sub-blocks of zeros, huge outliers."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.quant import api

K_TYPES = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs"]


@pytest.mark.parametrize("qtype", ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"])
def test_all_zero_superblock_is_all_zero_bytes(qtype):
    x = np.zeros((2, 512), np.float32)
    x[1, 256:] = np.linspace(-1, 1, 256, dtype=np.float32)  # second block of row 1 is not zero
    for kw in ({}, {"importance": np.ones(512, np.float32)}):
        raw = api.quantize(x, qtype, **kw)
        half = raw.shape[1] // 2
        assert np.all(raw[0] == 0) and np.all(raw[1, :half] == 0), (qtype, kw)
        assert np.any(raw[1, half:] != 0)


def test_iq4_xs_zero_superblock_layout():
    raw = api.quantize(np.zeros((1, 256), np.float32), "iq4_xs")[0]
    assert raw[:2].tobytes() == b"\x00\x80"  # fp16(-0.0)
    assert raw[2:4].tobytes() == b"\xaa\xaa"  # every scale 32: high bits 0b10
    assert np.all(raw[4:8] == 0) and np.all(raw[8:] == 0x88)


def test_q2_k_ternary_rows_take_the_trinet_path_and_reconstruct_exactly():
    rng = np.random.default_rng(4)
    x = (rng.integers(-1, 2, size=(4, 512)) * 0.125).astype(np.float32)
    raw = api.quantize(x, "q2_K")
    blocks = raw.reshape(4, 2, 84)
    assert np.all(blocks[:, :, :16] == 0x11)
    assert np.all(blocks[:, :, 80:82].copy().view(np.float16) == np.float16(0.125))
    np.testing.assert_array_equal(api.dequantize(raw, "q2_K", 512), x)


@pytest.mark.parametrize("qtype", K_TYPES + ["mxfp4"])
def test_zero_sub_blocks_and_a_huge_outlier(qtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 512)).astype(np.float32) * np.float32(0.01)
    x[0, :32] = 0  # zero sub-blocks inside a non-zero super-block
    x[1, 100] = 11356.0  # like the ffn_up outlier in the reference inputs
    for kw in ({}, {"importance": rng.uniform(0.1, 3, 512).astype(np.float32)}, {"uniform": True}):
        y = api.dequantize(api.quantize(x, qtype, **kw), qtype, 512)
        assert np.all(np.isfinite(y))
        assert np.all(y[0, :32] == 0) or qtype in ("q2_K", "q4_K", "q5_K"), qtype  # min offsets
        assert abs(y[1, 100] - 11356.0) / 11356.0 < 0.2, (qtype, kw, y[1, 100])
        rel = np.sqrt(np.mean((y[2] - x[2]) ** 2) / np.mean(x[2] ** 2))
        if qtype == "q2_K" and not kw:  # the outlier makes the whole call look ternary
            assert rel == 1.0
            continue
        assert rel < 0.6, (qtype, kw, rel)


def test_q2_k_trinet_test_spans_all_rows_of_one_call():
    """quantize_row_q2_K_ref runs its ternary test over everything one call gets (llama-quantize
    passes a whole expert matrix with 1 thread): one huge outlier flips every row to ternary."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 256)).astype(np.float32) * np.float32(0.01)
    alone = api.quantize(x[2:3], "q2_K")
    x[0, 0] = 1000.0
    together = api.quantize(x, "q2_K")
    assert not np.array_equal(together[2:3], alone)
    np.testing.assert_array_equal(api.quantize(x[2:3], "q2_K"), alone)


def test_mxfp4_ignores_importance():
    x = np.random.default_rng(6).standard_normal((2, 64)).astype(np.float32)
    imp = np.random.default_rng(7).uniform(0.1, 3, 64).astype(np.float32)
    np.testing.assert_array_equal(api.quantize(x, "mxfp4"), api.quantize(x, "mxfp4", importance=imp))


@pytest.mark.parametrize("qtype", ["q6_K", "q3_K"])
def test_uniform_mode_is_the_imatrix_path_with_unit_weights_where_w_is_qw(qtype):
    """Q6_K uses w = qw with an imatrix, so uniform (w = 1) must equal importance = 1.
    Q3_K uses w = qw·sqrt(σ²+x²): there the two differ."""
    x = np.random.default_rng(9).standard_normal((4, 512)).astype(np.float32)
    same = np.array_equal(api.quantize(x, qtype, uniform=True),
                          api.quantize(x, qtype, importance=np.ones(512, np.float32)))
    assert same == (qtype == "q6_K")


@pytest.mark.parametrize("qtype", ["q4_K", "q5_K"])
def test_importance_zero_over_a_superblock_is_refused_like_llama_quantize(qtype):
    x = np.random.default_rng(10).standard_normal((2, 512)).astype(np.float32)
    imp = np.ones(512, np.float32)
    imp[256:] = 0
    with pytest.raises(api.QuantError, match="row 0 block 1"):
        api.quantize(x, qtype, importance=imp)
    imp[256:300] = 1  # partly zero is fine
    assert np.all(np.isfinite(api.dequantize(api.quantize(x, qtype, importance=imp), qtype, 512)))


@pytest.mark.parametrize("qtype", ["iq4_nl", "iq4_xs", "q4_0", "q6_K", "q2_K", "q3_K"])
def test_importance_zero_over_a_block_does_not_raise(qtype):
    """The reference writes these blocks (a NaN scale for iq4_nl, as C's 0/0 gives) and goes on."""
    x = np.random.default_rng(11).standard_normal((2, 512)).astype(np.float32)
    imp = np.ones(512, np.float32)
    imp[:256] = 0
    assert api.quantize(x, qtype, importance=imp).shape[0] == 2
