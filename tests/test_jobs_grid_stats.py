"""The grid statistics job and `iqk-studio-cli grids`: variant counts from a file's own IQ4_KS bytes
or from quantizing a float tensor, fits summed over the model, the JSON tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.reader import open_model
from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf
from iqk_studio.jobs.events import Failed, Finished
from iqk_studio.jobs.grid_stats import TensorGridStats, eligible, grid_stats_job, tensor_grid_stats
from iqk_studio.quant import api, grids
from iqk_studio.quant.grid_fit import DECODERS, fit_stats, variant_counts
from iqk_studio.quant.types import by_name


def _weights():
    rng = np.random.default_rng(5)
    e2m1 = grids.E2M1[rng.integers(0, 16, size=(8, 512))] * 0.01  # on the e2m1 grid, 32-blocks
    e2m1[:, ::32] = 0.06
    normal = rng.standard_normal((8, 512)).astype(np.float32) * 0.02
    return {"a.weight": e2m1.astype(np.float32), "b.weight": normal,
            "norm.weight": np.ones(512, np.float32)}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    w = _weights()
    ks = api.quantize(w["b.weight"], "iq4_ks")
    specs = [TensorSpec("a.weight", (512, 8), by_name("f32").id),
             TensorSpec("b.weight", (512, 8), by_name("iq4_ks").id),
             TensorSpec("norm.weight", (512,), by_name("f32").id)]
    path = tmp_path_factory.mktemp("g") / "g.gguf"
    write_gguf(path, [KV("general.architecture", "llama")], specs,
               [w["a.weight"], ks, w["norm.weight"]])
    return path


def test_variants_from_the_file_or_quantized(model_path):
    w = _weights()
    with open_model(model_path) as m:
        assert eligible(m) == ["a.weight", "b.weight"] and eligible(m, "^b") == ["b.weight"]
        s = tensor_grid_stats(m, "b.weight")
        assert s.variant_source["iq4_ks"] == "file"
        assert s.variant_source["iq4_k"] == "quantized (default weights)"
        want = variant_counts(DECODERS["iq4_ks"](m.tensor_data("b.weight"), 512))
        assert list(s.variants["iq4_ks"]) == list(want) and want.sum() == 8 * 16
        a = tensor_grid_stats(m, "a.weight", uniform=True)
        assert a.variant_source["iq4_ks"] == "quantized (w = 1)"
        ref = variant_counts(DECODERS["iq4_k"](api.quantize(w["a.weight"], "iq4_k",
                                                            uniform=True), 512))
        assert list(a.variants["iq4_k"]) == list(ref)
    # weights on the e2m1 grid: every block fits e2m1 exactly, better than any iq4k variant
    assert a.rel()["e2m1"] < 1e-12 and a.fp4_better == a.n_blocks == 8 * 16
    assert s.rel()["iq4k"] < s.rel()["e2m1"]


def test_model_totals_are_the_sums(model_path):
    with open_model(model_path) as m:
        events = list(grid_stats_job(m, eligible(m)))
    per = [e for e in events if isinstance(e, TensorGridStats)]
    total = events[-1].result
    assert isinstance(events[-1], Finished) and total.n_tensors == 2
    assert total.n_blocks == sum(p.n_blocks for p in per)
    for q in ("iq4_ks", "iq4_k"):
        assert list(total.variants[q]) == list(sum(p.variants[q] for p in per))
    b = api.dequantize(api.quantize(_weights()["b.weight"], "iq4_ks"), "iq4_ks", 512)
    x = np.concatenate([_weights()["a.weight"], b])  # b as the file stores it
    want = fit_stats(x).rel()  # the model's fit = the fit of all its blocks together
    for g, v in total.rel().items():
        assert v == pytest.approx(want[g], rel=1e-9, abs=1e-30)
    assert all(p.distances is None for p in per)  # events stay small


def test_no_tensor_is_a_failure(model_path):
    with open_model(model_path) as m:
        assert isinstance(next(iter(grid_stats_job(m, []))), Failed)


def test_cli_tables_json(capsys):
    assert main(["grids", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j == json.loads(json.dumps(grids.table_json()))
    assert j["iq4k_values"][16] == -123 and j["nf4"][15] == 1.0
    assert main(["grids"]) == 0
    out = capsys.readouterr().out
    assert "iq4k_values  (32 int; iq4_k, iq4_ks, iq4_kss)" in out and "nf4  (16 float" in out


def test_cli_model_stats(model_path, capsys):
    assert main(["grids", str(model_path), "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in j["tensors"]] == ["a.weight", "b.weight"]
    assert j["model"]["n_blocks"] == 2 * 8 * 16
    assert main(["grids", str(model_path), "--only", "^a"]) == 0
    out = capsys.readouterr().out
    assert "a.weight" in out and "model (1 tensors)" in out
    assert main(["grids", str(model_path), "--only", "("]) == 1
    assert "bad regex" in capsys.readouterr().err
