"""The kernel index (quant/registry.py) against the type table and the kernel modules: every type
the table can hold in a model file has a kernel or is listed here with the reason it has none, and
a mismatch between the index and a module is an error, not a missing entry."""

from __future__ import annotations

import pytest

from iqk_studio.gguf.types import BY_NAME, QUANT_TYPES, Kind
from iqk_studio.quant import registry

# types of the table without a kernel, and why
NO_KERNEL = {
    "i2_s": "not row-addressable (one scale after the whole tensor): "
            "kernels.legacy.dequant_only.dequant_i2_s_tensor",
    "f64": "no model file stores it",
}


def test_every_file_type_has_a_kernel_or_a_reason():
    holdable = {t.name for t in QUANT_TYPES if t.kind not in (Kind.ACTIVATION, Kind.INT)}
    assert holdable - set(registry.KERNELS) == set(NO_KERNEL)
    assert set(registry.KERNELS) <= set(BY_NAME)


def test_index_matches_the_modules():
    q, d = registry.quantizers(), registry.dequantizers()
    assert set(d) == set(registry.KERNELS)
    assert set(q) == {t for t in registry.KERNELS if registry.quantizes(t)}
    assert registry.DEQUANT_ONLY <= set(registry.KERNELS)


@pytest.mark.parametrize("change", ["missing", "extra", "unknown"])
def test_a_mismatch_fails_loudly(monkeypatch, change):
    kernels = dict(registry.KERNELS)
    if change == "missing":  # the index promises a type the module does not export
        kernels["q4_0"] = "legacy.mxfp4"
    elif change == "extra":  # a module exports a type the index does not name
        del kernels["q8_0"]
    else:
        kernels["q9_0"] = "legacy.q_0_1"
    monkeypatch.setattr(registry, "KERNELS", kernels)
    registry._tables.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="kernel index"):
            registry.quantizers()
    finally:
        monkeypatch.undo()
        registry._tables.cache_clear()
    assert registry.can_quantize("q8_0")
