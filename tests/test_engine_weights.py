"""Weight sources: dequantizing a GGUF's tensors (our kernels or gguf-py's), in-memory overrides
and a recipe's quantize-then-dequantize round trip."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import quants
from test_engine_tiny import write_tiny

from iqk_studio.engine.forward import Forward
from iqk_studio.engine.weights import (
    GGUFWeights,
    OverrideWeights,
    QuantizedWeights,
    WeightError,
    dequantize_tensor,
)
from iqk_studio.gguf.reader import open_model
from iqk_studio.quant.types import by_name


def test_dequantize_tensor_matches_gguf_py():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    for name, qt in (("q8_0", gguf.GGMLQuantizationType.Q8_0),
                     ("q4_0", gguf.GGMLQuantizationType.Q4_0)):
        raw = quants.quantize(x, qt)
        got = dequantize_tensor(raw, by_name(name).id, (64, 3))
        np.testing.assert_array_equal(got, quants.dequantize(raw, qt))


def test_override_and_recipe_round_trip(tmp_path):
    write_tiny(tmp_path / "m.gguf", "qwen3moe")
    with open_model(tmp_path / "m.gguf") as m:
        base = GGUFWeights(m)
        name, exps = "blk.0.ffn_up.weight", "blk.1.ffn_up_exps.weight"
        assert name not in base.names()
        q = QuantizedWeights(base, {"blk.0.attn_q.weight": "q8_0", exps: "q4_0"},
                             {exps: np.ones(4 * 32, np.float32)})
        w0 = base.get("blk.0.attn_q.weight")
        wq = q.get("blk.0.attn_q.weight")
        assert wq.shape == w0.shape and 0 < np.abs(wq - w0).max() < 0.02 * np.abs(w0).max()
        e = q.get(exps)
        assert e.shape == base.get(exps).shape and not np.array_equal(e, base.get(exps))
        assert q.get("blk.0.attn_k.weight") is base.get("blk.0.attn_k.weight")
        fw = Forward(Forward.from_model(m).cfg, q)
        tokens = np.arange(10)
        ref = Forward.from_model(m).logits(tokens)
        got = fw.logits(tokens)
        assert 0 < np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
        zero = OverrideWeights(base, {"output.weight": np.zeros_like(base.get("output.weight"))})
        assert np.abs(Forward(fw.cfg, zero).logits(tokens)).max() == 0
        with pytest.raises(WeightError, match="lacks"):
            QuantizedWeights(base, {"blk.9.attn_q.weight": "q8_0"})
        with pytest.raises(WeightError, match="shape"):
            OverrideWeights(base, {"output.weight": np.zeros((2, 2), np.float32)})


def test_set_threads():
    import numba

    from iqk_studio.engine.threads import set_threads

    try:
        set_threads(1)
        assert numba.get_num_threads() == 1
        with pytest.raises(ValueError):
            set_threads(0)
    finally:
        set_threads(numba.config.NUMBA_NUM_THREADS)
