"""The optimizer end to end on the tiny qwen2 model (4 layers, 1 chunk of 128): the recipe plans
to exactly the solution and fits the budget, a second run is answered from the store, a
cancelled run keeps its measurements, the prediction of a measured assignment is the sum of
its measurements."""

import json
import math

import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.reader import open_model
from iqk_studio.jobs.events import Failed, Finished
from iqk_studio.optimize.costs import table_from_rows
from iqk_studio.optimize.job import Budget, Measured, optimize_job
from iqk_studio.optimize.space import build_space, group_of
from iqk_studio.recipe import plan
from iqk_studio.recipe.records import Recipe, Rule
from iqk_studio.results import CostKey, open_store

TYPES = ("q4_0", "q4_K", "q8_0")


@pytest.fixture
def tiny(shared):
    return (shared("refs", "ppl", "tiny", "tiny-qwen2.gguf"), shared("data", "wiki.test.raw"))


def _run(model, text, budget, store, **kw):
    evs = list(optimize_job(model, text, budget, TYPES, 128, 1, store=store, **kw))
    assert not any(isinstance(e, Failed) for e in evs), [e for e in evs if isinstance(e, Failed)]
    return evs, [e for e in evs if isinstance(e, Finished)][0].result


def test_space_fallbacks_and_tied_roles(tiny):
    with open_model(tiny[0]) as m:
        sp = build_space(m, TYPES)
        # n_embd 64: q4_K needs ne0 % 256, llama-quantize writes q5_0 instead
        assert [o.key for o in sp.options["blk.0.attn_q"]] == ["q4_0", "q5_0", "q8_0"]
        assert sp.groups["blk.0.ffn_gate_up"] == ("blk.0.ffn_gate.weight", "blk.0.ffn_up.weight")
        pl = plan(m, Recipe("Q8_0", (Rule(".", "q4_K"),)))
        want = sum(e.bytes for e in pl.entries if group_of(e.name) == "blk.0.ffn_gate_up")
        assert sp.option("blk.0.ffn_gate_up", "q5_0").bytes == want
        assert sp.n_elements == pl.n_elements


N_PROBES = 4 * 6 + 2 * 3  # 6 groups in each of 4 layers at their smallest option; 2 x 3 others


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One full run into a store shared by the tests below (the store the CLI uses, too)."""
    from conftest import shared_path

    model = shared_path("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    text = shared_path("data", "wiki.test.raw")
    folder = tmp_path_factory.mktemp("optimize-store")
    with open_model(model) as m:
        n_el = sum(t.n_elements for t in m.tensors.values())
    budget = Budget(total=int(5.5 * n_el / 8))
    evs, res = _run(model, text, budget, folder / "results.sqlite3")
    return folder, budget, evs, res


def test_end_to_end_cached_and_exact(tiny, measured):
    model, text = tiny
    folder, budget, evs, res = measured
    store = folder / "results.sqlite3"
    new = [e for e in evs if isinstance(e, Measured)]
    assert len(new) == N_PROBES and not any(e.cached for e in new)
    assert res.plan.total_bytes <= budget.total
    with open_model(model) as m:
        got = {e.name: e.type for e in plan(m, res.recipe).entries}
        best = [c for c in res.candidates if c.recipe == res.recipe][0]
        assert all(got[n] == t for n, t in best.types.items())
        assert set(best.types) == {e.name for e in res.plan.entries if e.quantized}
    assert len(res.recipe.rules) < len(best.types)  # compact, not one rule per tensor
    assert math.isfinite(res.predicted["measured_kld"]) and res.predicted["kld"] > 0
    evs2, res2 = _run(model, text, budget, store)
    assert not any(isinstance(e, Measured) for e in evs2)  # everything came from the store
    assert res2.recipe == res.recipe and res2.predicted == res.predicted


def test_prediction_of_measured_points_is_their_sum(tiny, measured):
    model, text = tiny
    store = measured[0] / "results.sqlite3"
    with open_store(store) as s, open_model(model) as m:
        key = [k for k in _keys(s)][0]
        rows = s.get_costs(key)
        sp = build_space(m, TYPES)
        table = table_from_rows(rows, sp.sources, sp.groups)
        kld = {(r.group, r.type): r.kld for r in rows if not r.group.endswith(".weight")}
        # every layer group at its smallest option (measured), token_embd and output at q8_0
        rules = [Rule(r"^(token_embd|output)\.weight$", "q8_0"), Rule(".", "q4_0")]
        pr = table.predict(plan(m, Recipe("Q8_0", tuple(rules))))
        want = sum(v for (g, t), v in kld.items() if (t == "q4_0" and g.startswith("blk."))
                   or (t == "q8_0" and not g.startswith("blk.")))
        assert pr.complete and pr.kld == pytest.approx(want, rel=1e-12)
        # a type never measured nor in the error table: those groups are reported missing
        pr2 = table.predict(plan(m, Recipe("Q8_0", (Rule(r"attn_v", "q6_0"),))))
        assert not pr2.complete and "blk.0.attn_v" in pr2.missing


def _keys(store):
    with store._lock:
        cols = "model_id, text_id, n_ctx, chunks, imatrix_id, method"
        return [CostKey(*r) for r in store._db.execute(f"SELECT DISTINCT {cols} FROM costs")]


def test_cancel_keeps_measurements(tiny, tmp_path):
    model, text = tiny
    store = tmp_path / "r.sqlite3"
    job = optimize_job(model, text, Budget(total=10**9), TYPES, 128, 1, store=store, verify=0)
    n = 0
    for ev in job:
        if isinstance(ev, Measured):
            n += 1
            if n == 3:
                break
    job.close()
    with open_store(store) as s:
        rows = s.get_costs(_keys(s)[0])
    assert len([r for r in rows if not r.group.endswith(".weight")]) == 3
    assert len([r for r in rows if r.group.endswith(".weight")]) > 20  # every error, too


def test_budget_too_small_is_one_line(tiny, tmp_path):
    evs = list(optimize_job(*tiny, Budget(total=1000), TYPES, 128, 1, store=False, verify=0))
    assert len(evs) == 1 and isinstance(evs[0], Failed)  # before measuring anything
    assert "budget too small" in evs[0].message


def test_cli_json_and_errors(tiny, measured, capsys, tmp_path, monkeypatch):
    model, text = tiny
    monkeypatch.setenv("IQK_STUDIO_DATA", str(measured[0]))
    out = tmp_path / "best.recipe"
    rc = main(["optimize", str(model), "-f", str(text), "--target-bpw", "6", "-c", "128",
               "--types", ",".join(TYPES), "--verify", "1", "--json", "-o", str(out)])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(d) == {"recipe", "total_bytes", "bpw", "predicted"}
    assert d["bpw"] <= 6 and d["recipe"] == out.read_text()
    assert {"kld", "unit", "measured_kld", "candidates"} <= set(d["predicted"])
    assert main(["optimize", str(model), "-f", str(text)]) == 1
    assert "give a budget" in capsys.readouterr().err
    assert main(["optimize", str(model), "-f", str(text), "--gpu-gib", "1"]) == 1
    assert "go together" in capsys.readouterr().err
    assert main(["optimize", str(model), "-f", str(text), "--target-gib", "1",
                 "--types", "q4_k"]) == 1
    assert "unknown type" in capsys.readouterr().err
    assert main(["optimize", str(model), "-f", str(tmp_path / "nope.txt"), "--target-gib",
                 "1"]) == 1
    assert "cannot read the text" in capsys.readouterr().err
    assert main(["optimize", str(model), "-f", str(text), "--gpu-gib", "1", "--cpu-gib", "1",
                 "--placement", "ffn_=CPU,=CPU"]) == 1
    assert "bad placement '=CPU' (expected regex=DEVICE)" in capsys.readouterr().err


def test_gpu_cpu_budgets(tiny, measured):
    model, text = tiny
    from iqk_studio.recipe.records import Placement

    place = (Placement("ffn_", "CPU"),)
    budget = Budget(gpu=3_800_000, cpu=300_000)
    evs, res = _run(model, text, budget, measured[0] / "results.sqlite3", verify=0,
                    placement=place)
    assert not any(isinstance(e, Measured) for e in evs)
    assert res.plan.cpu_bytes <= 300_000 and res.plan.gpu_bytes <= 3_800_000
    assert res.plan.cpu_bytes > 200_000  # the CPU budget is used, not left empty
    assert res.recipe.placement == place


def test_live_prediction_matches_the_solver(tiny, measured):
    from iqk_studio.optimize.predict import LivePredictor, format_prediction

    model, _ = tiny
    folder, _, _, res = measured
    live = LivePredictor.for_model(model, store=folder / "results.sqlite3")
    best = [c for c in res.candidates if c.recipe == res.recipe][0]
    with open_model(model) as m:
        p = live.predict(plan(m, res.recipe))
        assert p.complete and p.kld == pytest.approx(best.predicted, rel=1e-9)
        assert format_prediction(p) == f"predicted KLD {p.kld:.4f}"
        # the unchanged model: nothing quantized, nothing lost
        p0 = live.predict(plan(m, Recipe("F32")))
        assert p0.groups == 0 and p0.kld == 0
    assert LivePredictor.for_model(model, store=folder / "empty.sqlite3") is None
