"""THE table-driven exactness test: every type of the type table with a reference file in
../shared/refs/quant/out, quantized exactly as llama-quantize did (imatrix lookup through
quant.importance, per-expert slicing) and compared byte for byte; and every reference tensor
dequantized, compared with gguf-py or a slow numpy reference (tests/quant_refs_numpy.py). A
reference file whose type has no kernel, or no dequantization oracle, fails (never skips).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import quant_refs_numpy
from conftest import shared_path

from iqk_studio.gguf.imatrix import load_imatrix
from iqk_studio.gguf.reader import open_model
from iqk_studio.quant import registry
from iqk_studio.quant.importance import importance_for
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX
from iqk_studio.quant.types import BY_NAME, QUANT_TYPES

_SHARED = Path(os.environ.get("IQK_SHARED", Path(__file__).resolve().parents[2] / "shared"))
_OUT = _SHARED / "refs" / "quant" / "out"
MODES = ("plain", "imatrix")

# Types whose quantizer is known not to be bit-exact, with the measured reason:
# {(type, mode): "which rows differ, why, and how the dequantized error differs"}.
KNOWN_INEXACT: dict[tuple[str, str], str] = {}


def _ref_name(qtype: str, mode: str) -> str:
    return f"{qtype}{'.imatrix' if mode == 'imatrix' else ''}.gguf"


def _ref_cases() -> list:
    """(type, mode) for every type in the table with a reference file; one skipping placeholder
    when ../shared is absent (the `shared` fixture then skips with the reason)."""
    if not _OUT.is_dir():
        return [pytest.param("q8_0", "plain", id="no-shared")]
    cases = []
    for t in QUANT_TYPES:
        for mode in MODES:
            if (_OUT / _ref_name(t.name, mode)).exists():
                cases.append(pytest.param(t.name, mode, id=f"{t.name}-{mode}"))
    return cases


def _log_facts(qtype: str, mode: str) -> tuple[set, set]:
    """(tensors the llama-quantize log says it converted, tensors it found no imatrix for).
    A tensor's record runs from its `[ i/ n] name - [...]` header to the next header."""
    log = _SHARED / "refs" / "quant" / "logs" / _ref_name(qtype, mode).replace(".gguf", ".log")
    text = log.read_text(errors="replace")
    converted = set()
    for rec in re.split(r"\n(?=\[\s*\d+/\s*\d+\])", text):
        m = re.match(r"\[\s*\d+/\s*\d+\]\s+(\S+) - ", rec)
        if m and "converting to" in rec:
            converted.add(m.group(1))
    return converted, set(re.findall(r"did not find weights for (\S+)", text))


@pytest.fixture(scope="module")
def inputs():
    with open_model(shared_path("refs", "quant", "inputs.gguf")) as m:
        out = {}
        for name, ti in m.tensors.items():
            x = np.array(m.tensor_data(name)).view(np.float32)
            out[name] = x.reshape(tuple(reversed(ti.shape)))  # (ne2, ne1, ne0)
    return out


@pytest.fixture(scope="module")
def imatrix():
    return load_imatrix(shared_path("refs", "quant", "imatrix.dat")).values


def _reference(path: Path, qtype: str) -> dict:
    with open_model(path) as m:
        return {name: (ti.shape, np.array(m.tensor_data(name)).reshape(-1))
                for name, ti in m.tensors.items() if ti.qtype.name == qtype}


def quantize_like_llama_quantize(qfn, x: np.ndarray, qw) -> np.ndarray:
    """Quantize (ne2, ne1, ne0) or (ne1, ne0) float32 expert by expert; each expert gets its slice
    [e*ne0, (e+1)*ne0) of the imatrix entry. Returns the tensor's bytes, flat."""
    x3 = x.reshape(-1, x.shape[-2], x.shape[-1])
    ne0 = x3.shape[2]
    parts = []
    for e in range(x3.shape[0]):
        if qw is None:
            parts.append(qfn(x3[e], None, MODE_DEFAULT))
        else:
            parts.append(qfn(x3[e], np.ascontiguousarray(qw[e * ne0:(e + 1) * ne0]), MODE_IMATRIX))
    return np.concatenate([p.reshape(-1) for p in parts])


def _first_difference(got: np.ndarray, want: np.ndarray, qtype: str, ne0: int) -> str:
    t = BY_NAME[qtype]
    rb = t.row_bytes(ne0)
    g = got.reshape(-1, rb)
    w = want.reshape(-1, rb)
    same = (g == w).all(axis=1)
    row = int(np.argmin(same))
    byte = int(np.argmax(g[row] != w[row]))
    if byte < t.row_meta:
        lo, hi, where = 0, t.row_meta, "row header"
    else:
        blk = (byte - t.row_meta) // t.type_size
        lo = t.row_meta + blk * t.type_size
        hi, where = lo + t.type_size, f"block {blk}"
    return (f"{same.mean():.1%} of {len(same)} rows equal; first difference row {row} {where}:\n"
            f"  ours {g[row, lo:hi].tobytes().hex()}\n  ref  {w[row, lo:hi].tobytes().hex()}")


@pytest.mark.parametrize("qtype, mode", _ref_cases())
def test_quantize_matches_reference(shared, inputs, imatrix, qtype, mode):
    ref_path = shared("refs", "quant", "out", _ref_name(qtype, mode))
    qfn = registry.quantizers().get(qtype)
    assert qfn is not None, f"{ref_path.name} exists but the kernel index has no {qtype} quantizer"
    if (qtype, mode) in KNOWN_INEXACT:
        pytest.xfail(KNOWN_INEXACT[(qtype, mode)])
    converted, no_imatrix = _log_facts(qtype, mode)
    ref = _reference(ref_path, qtype)
    assert ref, f"{ref_path.name} holds no {qtype} tensor"
    assert set(ref) == converted, f"log and file disagree on converted tensors: {converted}"
    failures = []
    for name, (shape, want) in ref.items():
        qw = None
        if mode == "imatrix" and name not in no_imatrix:
            x = inputs[name]
            qw = importance_for(imatrix, name, x.shape[-1], x.shape[0] if x.ndim == 3 else 1)
        got = quantize_like_llama_quantize(qfn, inputs[name], qw)
        assert got.size == want.size, f"{name}: {got.size} bytes, reference {want.size}"
        if not np.array_equal(got, want):
            failures.append(f"{name}: " + _first_difference(got, want, qtype, shape[0]))
    assert not failures, f"{qtype} {mode}: " + "\n".join(failures)


def _gguf_dequantizer(qtype: str):
    """gguf-py's dequantize for this type when it implements it under the same id and name."""
    import gguf
    from gguf import quants

    t = BY_NAME[qtype]
    try:
        gt = gguf.GGMLQuantizationType(t.id)
    except ValueError:
        return None
    if gt.name.lower() != qtype.lower():
        return None
    if gt in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return lambda raw, n: raw.view(np.float32 if gt.name == "F32" else np.float16)\
            .astype(np.float32).reshape(-1, n)
    try:
        quants.dequantize(np.zeros((1, t.row_bytes(t.block * 8)), np.uint8), gt)
    except (NotImplementedError, KeyError, ValueError):
        return None
    return lambda raw, n: quants.dequantize(raw, gt).reshape(-1, n)


@pytest.mark.parametrize("qtype, mode", _ref_cases())
def test_dequantize_matches_oracle(shared, qtype, mode):
    ref_path = shared("refs", "quant", "out", _ref_name(qtype, mode))
    dfn = registry.dequantizers().get(qtype)
    assert dfn is not None, f"{ref_path.name} exists but the index has no {qtype} dequantizer"
    oracle = _gguf_dequantizer(qtype) or quant_refs_numpy.get(qtype)
    assert oracle is not None, f"{qtype}: neither gguf-py nor quant_refs_numpy.py dequantizes it"
    t = BY_NAME[qtype]
    for name, (shape, raw) in _reference(ref_path, qtype).items():
        rows = raw.reshape(-1, t.row_bytes(shape[0]))
        got = dfn(rows, shape[0])
        want = oracle(rows, shape[0])
        bad = np.flatnonzero((got != want).any(axis=1))
        assert bad.size == 0, (f"{qtype} {name}: {bad.size} of {len(rows)} rows differ, first row "
                               f"{bad[0]}: ours {got[bad[0], :4]} oracle {want[bad[0], :4]}")
