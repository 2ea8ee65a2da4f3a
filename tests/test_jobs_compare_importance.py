"""compare-importance: each mode's in-memory weights are exactly what the quantize job writes with
that importance, the table's PPLs are the perplexity job's on the unquantized and the written
models, and the CLI prints the study's table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from iqk_studio.cli import main
from iqk_studio.commands.compare_importance import print_table
from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
from iqk_studio.gguf.imatrix import load_imatrix, write_imatrix_dat
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.compare_importance import (
    ImportanceRow,
    compare_importance_job,
    importance_modes,
)
from iqk_studio.jobs.events import Finished
from iqk_studio.jobs.perplexity import perplexity_job
from iqk_studio.jobs.quantize import plan_targets, quantize_model
from iqk_studio.jobs.recipe_eval import plan_importance, plan_types
from iqk_studio.recipe import Recipe, Rule, plan
from iqk_studio.recipe.textfile import save

RECIPE = Recipe("Q8_0", rules=(Rule("ffn_down", "iq4_ks"), Rule("ffn|attn", "iq4_nl")))


def _imatrix(model, path):
    """A random positive imatrix for every 2-D+ weight (experts: n_in * n_expert values)."""
    rng = np.random.default_rng(0)
    entries = {}
    for name, t in model.tensors.items():
        if len(t.shape) >= 2 and name.startswith("blk."):
            n = t.shape[0] * (t.shape[2] if len(t.shape) > 2 else 1)
            entries[name] = (1, rng.uniform(0.1, 4.0, n).astype(np.float32))
    return load_imatrix(write_imatrix_dat(path, entries, 1, "random"))


def _text(shared, tmp_path):
    """The first 20 kB of wiki.test.raw (enough for a chunk of 128; tokenizing is quick)."""
    t = tmp_path / "wiki-head.txt"
    t.write_bytes(shared("data", "wiki.test.raw").read_bytes()[:20000])
    return t


def _result(events):
    return next(e.result for e in events if isinstance(e, Finished))


@pytest.mark.parametrize("arch", ["qwen2", "qwen3moe"])
def test_mode_weights_are_what_the_quantize_job_writes(shared, tmp_path, arch):
    """The in-memory path each mode is evaluated through (jobs.evaluate: QuantizedWeights with
    the plan's imatrix slices, or uniform) gives exactly the weights the quantize job writes."""
    path = shared("refs", "ppl", "tiny", f"tiny-{arch}.gguf")
    with open_model(path) as m:
        p = plan(m, RECIPE)
        im = _imatrix(m, tmp_path / "im.dat")
        types = plan_types(p)
        assert "iq4_ks" in types.values() or arch == "qwen3moe"
        gw = GGUFWeights(m)
        got = {}
        # qwen3moe: the imatrix mode only (its expert slices); qwen2 covers all three modes
        modes = importance_modes([("random", im)], arch == "qwen2", arch == "qwen2")
        for mode in modes:
            imp = plan_importance(m, p, mode.imatrix) if mode.importance == "imatrix" else {}
            ws = QuantizedWeights(gw, types, imp, uniform=mode.uniform)
            out = tmp_path / f"{mode.label}.gguf"
            events = list(quantize_model(path, plan_targets(p), out,
                                         None if mode.uniform else mode.imatrix,
                                         mode.uniform))
            assert isinstance(events[-1], Finished), events[-1]
            with open_model(out) as q:
                qw = GGUFWeights(q)
                for name in types:
                    assert np.array_equal(ws.get(name), qw.get(name)), (mode.label, name)
            got[mode.label] = {n: ws.get(n) for n in types}
    if arch == "qwen2":  # the three modes really differ
        a, b, c = got.values()
        name = next(n for n in types if "ffn_down" in n)
        assert not np.array_equal(a[name], b[name]) and not np.array_equal(b[name], c[name])


def test_job_table_and_cli(shared, tmp_path, capsys):
    path = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = _text(shared, tmp_path)
    with open_model(path) as m:
        p = plan(m, RECIPE)
        _imatrix(m, tmp_path / "im.dat")
    modes = importance_modes([], default=False)  # w = 1 only: one quantized evaluation
    events = list(compare_importance_job(path, p, text, modes, n_ctx=128, chunks=1,
                                         recipe_label="r"))
    rows = [e for e in events if isinstance(e, ImportanceRow)]
    table = _result(events)
    assert [r.label for r in rows] == ["no imatrix, w = 1"] and table.rows == tuple(rows)
    base = _result(perplexity_job(path, text, n_ctx=128, chunks=1))
    assert table.base.ppl == base.ppl
    out = tmp_path / "u.gguf"
    list(quantize_model(str(path), plan_targets(p), str(out), uniform=True))
    ref = _result(perplexity_job(out, text, n_ctx=128, chunks=1))
    r = rows[0]
    assert (r.ppl, r.ppl_err, r.ppl_base) == (ref.ppl, ref.ppl_err, base.ppl)
    assert r.quality_loss == pytest.approx(ref.ppl / base.ppl - 1)
    assert r.total_bytes == p.total_bytes and not r.note
    assert r.result.importance == "uniform" and r.result.recipe_name == "r"
    names = [n for n, _ in table.results()]
    assert names == ["tiny-qwen2.gguf (file)", "r: no imatrix, w = 1"]
    assert table.base.is_file and table.base.ppl == base.ppl

    recipe = save(RECIPE, tmp_path / "r.recipe")
    argv = ["compare-importance", str(path), "--recipe", str(recipe), "-f", str(text),
            "-c", "128", "--chunks", "1", "--imatrix", str(tmp_path / "im.dat"), "--no-default",
            "--no-uniform", "--no-base"]
    assert main(argv + ["--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["base"] is None and [x["label"] for x in j["rows"]] == ["imatrix im.dat"]
    assert j["rows"][0]["quality_loss"] is None and math.isfinite(j["rows"][0]["ppl"])
    assert j["rows"][0]["ppl"] != r.ppl  # the imatrix changed the weights
    print_table(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("unquantized (the file as stored)")
    assert lines[2].startswith("no imatrix, w = 1") and f"{r.ppl:.4f}" in lines[2]


@pytest.mark.parametrize("args, msg", [
    (["--chunks", "0"], "--chunks must be at least 1"),
    (["--recipe", "no-such-recipe"], "no recipe named"),
    (["-f", "/no/such.txt"], "no such text file"),
])
def test_cli_errors_are_one_line(shared, tmp_path, capsys, args, msg):
    path = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    recipe = save(RECIPE, tmp_path / "r.recipe")
    argv = ["compare-importance", str(path), "--recipe", str(recipe), "-f",
            str(_text(shared, tmp_path))] + args
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_tensor_mode_errors_against_type_scores(shared):
    """Per-tensor comparison: the default mode is type_errors' unweighted score, the imatrix mode
    is its score with that importance, weighted by the same imatrix."""
    from iqk_studio.jobs.compare_importance import tensor_mode_errors
    from iqk_studio.jobs.type_errors import sample_rows, score

    path = shared("refs", "quant", "inputs.gguf")
    im = load_imatrix(shared("refs", "quant", "imatrix.dat"))
    with open_model(path) as m:
        name = "blk.0.ffn_up.weight"
        x = sample_rows(m, name)
        got = {e.label: e for e in tensor_mode_errors(m, name, "iq4_ks",
                                                      importance_modes([("im", im)]))}
    qw = im.values[name]
    with_im, default = score(x, "iq4_ks", qw), score(x, "iq4_ks")
    assert got["imatrix im"].rel_rmse == pytest.approx(with_im.rel_rmse, rel=1e-12)
    assert got["imatrix im"].weighted_rel_rmse == pytest.approx(with_im.weighted_rel_rmse,
                                                                rel=1e-12)
    assert got["no imatrix (default weights)"].rel_rmse == pytest.approx(default.rel_rmse,
                                                                         rel=1e-12)
    w1 = got["no imatrix, w = 1"]
    assert w1.rel_rmse != default.rel_rmse and math.isfinite(w1.weighted_rel_rmse)


def test_cli_through_llama_perplexity(shared, tmp_path, monkeypatch, capsys):
    """--llama-perplexity: each mode is written by our quantizer into --workdir, evaluated by
    the tool (the stand-in replays a real log), and removed; `--` arguments reach the tool."""
    from test_external_runs import make_fake_bin

    root = make_fake_bin(tmp_path / "llama")
    monkeypatch.setenv("FAKE_DELAY", "0")
    monkeypatch.setenv("FAKE_LOG", str(shared("refs", "ppl", "tiny",
                                              "tiny-qwen2.wiki.c512.4chunks.log")))
    seen = []
    real_unlink = Path.unlink

    def spy(self, *a, **k):  # the mode's file exists until its run has been evaluated
        if self.name.startswith(".iqk-compare-"):
            seen.append((self.name, self.exists()))
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", spy)
    monkeypatch.setenv("FAKE_ARGV", str(tmp_path / "argv.json"))
    path = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    recipe = save(RECIPE, tmp_path / "r.recipe")
    work = tmp_path / "work"
    work.mkdir()
    assert main(["compare-importance", str(path), "--recipe", str(recipe), "-f",
                 str(_text(shared, tmp_path)), "--chunks", "4", "--json", "--llama-perplexity",
                 str(root), "--workdir", str(work), "--", "-t", "2"]) == 0
    j = json.loads(capsys.readouterr().out)
    final = 1551375.1756  # the replayed log's final estimate
    assert j["base"]["ppl"] == pytest.approx(final)
    assert [r["label"] for r in j["rows"]] == ["no imatrix (default weights)",
                                               "no imatrix, w = 1"]
    assert all(r["ppl"] == pytest.approx(final) for r in j["rows"])
    assert seen == [(".iqk-compare-1.gguf", True), (".iqk-compare-2.gguf", True)]
    assert list(work.iterdir()) == []
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:2] == ["-m", str(work / ".iqk-compare-2.gguf")] and argv[-2:] == ["-t", "2"]
    assert main(["compare-importance", str(path), "--recipe", str(recipe), "-f",
                 str(_text(shared, tmp_path)), "--", "-t", "2"]) == 1
    assert "--llama-perplexity" in capsys.readouterr().err


def test_cli_records_each_run_in_the_store(shared, tmp_path, monkeypatch, capsys):
    """Every built-in run of the comparison (the file, each mode) is a run of the results store,
    named as the window's results list names them; --no-store records nothing."""
    from iqk_studio.results import ENV_DATA, open_store

    monkeypatch.setenv(ENV_DATA, str(tmp_path / "data"))
    path = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = _text(shared, tmp_path)
    recipe = save(RECIPE, tmp_path / "r.recipe")
    argv = ["compare-importance", str(path), "--recipe", str(recipe), "-f", str(text),
            "-c", "128", "--chunks", "1", "--no-default", "--json"]
    assert main(argv + ["--no-store"]) == 0
    capsys.readouterr()
    assert not (tmp_path / "data").exists() or not open_store().list_runs()
    assert main(argv) == 0
    j = json.loads(capsys.readouterr().out)
    with open_store() as store:
        runs = {s.name: store.get_run(s.id) for s in store.list_runs(kind="perplexity")}
    assert set(runs) == {"tiny-qwen2.gguf (file)", "r: no imatrix, w = 1"}  # the recipe's stem
    file_run, mode_run = runs["tiny-qwen2.gguf (file)"], runs["r: no imatrix, w = 1"]
    assert file_run.info.status == mode_run.info.status == "finished"
    assert file_run.info.final_ppl == pytest.approx(j["base"]["ppl"])
    assert mode_run.info.final_ppl == pytest.approx(j["rows"][0]["ppl"])
    assert mode_run.info.facts["importance"] == "uniform" and mode_run.info.recipe
    assert len(mode_run.chunks) == 1
