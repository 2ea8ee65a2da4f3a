"""The IQK recipes of ik_llama.cpp discussion #359 in the library: their rules are the published
`--custom-q` lists, they plan to the published sizes on the Qwen3-30B-A3B skeleton, and their
published (size, PPL) points parse."""

from __future__ import annotations

import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.skeleton import qwen3_30b_a3b
from iqk_studio.recipe import library, plan
from iqk_studio.recipe.cmdline import split_custom_q
from iqk_studio.recipe.model import stand_in
from iqk_studio.recipe.published import parse_line, points_of, published_points

QWEN = stand_in(*qwen3_30b_a3b()[:2])

# Copied by hand from the discussion's commands (the first --custom-q of each is the same).
HEAD = "attn=iq5_k,token_embd.weight=q4_K,output.weight=q6_K"
PUBLISHED = {
    "IQK-1": ("iq2_ks", [HEAD, r"blk\.[0-5]\.ffn_down_exps=iq4_ks,ffn_down_exps=iq2_ks",
                         "exps=iq2_ks"], 8.745),
    "IQK-2": ("iq2_k", [HEAD, r"blk\.[0-5]\.ffn_down_exps=iq4_ks,ffn_down_exps=iq2_k,exps=iq2_k"],
              9.314),
    "IQK-3": ("iq2_k", [HEAD, r"blk\.[0-5]\.ffn_down_exps=iq4_k,ffn_down_exps=iq3_k,exps=iq2_k"],
              10.389),
    "IQK-4": ("iq3_k", [HEAD, r"blk\.[0-5]\.ffn_down_exps=iq4_k,ffn_down_exps=iq3_k",
                        r"blk\.[0-9]\.ffn=iq3_k,blk\.1[0-5]\.ffn=iq3_k,blk\.4[0-9]\.ffn=iq3_k",
                        "exps=iq2_k"], 11.584),
    "IQK-5": ("iq3_k", [HEAD, r"blk\.[0-5]\.ffn_down_exps=iq4_k,ffn_down_exps=iq3_k,exps=iq3_k"],
              12.779),
    "IQK-6": ("iq4_ks", [HEAD, ".*=iq4_ks"], 15.454),
}
# The follow-up table: IQ4_KS in place of IQ5_K and IQ4_K (size GiB, PPL); bf16 PPL 9.0656.
KS = {"IQK-1": (8.615, 9.9517), "IQK-2": (9.183, 9.7154), "IQK-3": (10.229, 9.3908),
      "IQK-4": (11.454, 9.1057), "IQK-5": (12.620, 9.0147), "IQK-6": (15.324, 8.9873)}


def _rules(items):
    return tuple(r for item in items for r in split_custom_q(item))


def test_the_twelve_are_in_the_library():
    names = library.names()
    for n in PUBLISHED:
        assert n in names and f"{n}-KS" in names


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_is_the_published_command_and_size(name):
    base, items, size = PUBLISHED[name]
    r = library.resolve(name)
    assert r.base.lower() == base and r.rules == _rules(items)
    p = plan(QWEN, r)
    assert not p.errors
    assert f"{p.gib:.3f}" == f"{size:.3f}"
    [pt] = points_of(r, name)
    assert pt.size_gib == size and pt.model == "Qwen3-30B-A3B"


@pytest.mark.parametrize("name", sorted(KS))
def test_ks_recipe_swaps_iq5_k_and_iq4_k_and_plans_to_the_published_size(name):
    base, items, _ = PUBLISHED[name]
    swapped = [r.__class__(r.pattern, "iq4_ks" if r.type_name in ("iq5_k", "iq4_k") else
                           r.type_name) for r in _rules(items)]
    r = library.resolve(f"{name}-KS")
    size, ppl = KS[name]
    if name == "IQK-4":
        # shipped with IQ4_K kept in blk.0-5 ffn_down_exps: that is what the published size is
        keep = [x if "ffn_down_exps=iq4_k" not in str(y) else y
                for x, y in zip(swapped, _rules(items))]
        assert r.rules == tuple(keep)
        assert f"{plan(QWEN, r.with_(rules=tuple(swapped))).gib:.3f}" == "11.424"
    else:
        assert r.rules == tuple(swapped)
    assert r.base.lower() == base
    p = plan(QWEN, r)
    assert not p.errors and f"{p.gib:.3f}" == f"{size:.3f}"
    pt = points_of(r, f"{name}-KS")[0]
    assert (pt.size_gib, pt.ppl, pt.base_ppl) == (size, ppl, 9.0656)
    assert pt.source == "https://github.com/ikawrakow/ik_llama.cpp/discussions/359"


def test_iqk6_ks_carries_the_importance_experiment():
    pts = {p.importance: p.ppl for p in published_points() if p.recipe == "IQK-6-KS"}
    assert pts == {"imatrix (ikawrakow)": 8.9873, "imatrix (Bartowski)": 8.9727,
                   "imatrix (Unsloth)": 8.8787, "no imatrix, w = x^2": 9.3119,
                   "no imatrix, w = 1": 9.1470}


def test_published_points_for_the_chart():
    pts = published_points("qwen3-30b-a3b")
    assert len(pts) == 12 + 4  # one per recipe, four more importance modes for IQK-6-KS
    with_ppl = [p for p in pts if p.ppl is not None]
    assert len(with_ppl) == 6 + 4 + 1  # the KS table, the importance runs, IQK-1's 10.09
    p = next(p for p in pts if p.recipe == "IQK-5-KS")
    assert p.quality_loss == pytest.approx(9.0147 / 9.0656 - 1)
    assert published_points("no such model") == []


@pytest.mark.parametrize("line", [
    "published: PPL 9.1", "published: size 9 GB", "published: size x GiB",
    "published: size 9 GiB; size 9 GiB", "published: size 9 GiB; colour red", "size 9 GiB"])
def test_bad_published_lines_are_errors(line):
    with pytest.raises(ValueError):
        parse_line(line)


def test_recipe_list_shows_published_numbers(capsys):
    assert main(["recipe", "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("IQK-3-KS "))
    assert "10.229 GiB  PPL 9.3908" in line
    assert "no imatrix, w = 1" in out


def test_plan_by_recipe_name(tmp_path, capsys):
    from iqk_studio.gguf.skeleton import write_preset

    path = write_preset("qwen3-30b-a3b", tmp_path / "q.gguf")
    try:
        assert main(["plan", str(path), "--recipe", "IQK-3", "--json"]) == 0
    finally:
        path.unlink()
    import json

    assert f"{json.loads(capsys.readouterr().out)['gib']:.3f}" == "10.389"


DATA = __import__("pathlib").Path(__file__).parent / "data" / "iqk-recipes"


@pytest.mark.parametrize("name", sorted(PUBLISHED) + sorted(f"{n}-KS" for n in KS))
def test_plan_matches_llama_quantize_dry_run(name):
    """Every tensor's type and size and the total, against ik_llama.cpp's own dry run of the
    exported command (tests/data/iqk-recipes/README.md)."""
    import re

    from dry_run_logs import assert_plan_matches, parse_log, read_text

    log = DATA / f"qwen3moe-skeleton_{name}.log.gz"
    run = parse_log(log)
    r = library.resolve(name)
    added = re.findall(r"Adding custom rule (\S+) -> (\S+)", read_text(log))
    assert added == [(x.pattern, x.type_name) for x in r.rules]
    assert run.abort is None and len(run.logged) == len(run.model.tensors)
    p = plan(run.model, r)
    assert_plan_matches(p, run)
    assert f"{float(run.total) / 1024:.3f}" == f"{points_of(r)[0].size_gib:.3f}"
