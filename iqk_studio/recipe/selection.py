"""A `--custom-q` rule for a set of tensors picked in the GUI: anchored, comma-free, compact."""

from __future__ import annotations

from iqk_studio.recipe.records import Recipe, Rule


def _esc(text: str) -> str:
    # tensor names hold [A-Za-z0-9_.-]; only '.' is special in an ECMAScript regex here
    return text.replace(".", r"\.")


def selection_pattern(names: list[str]) -> str:
    """`^blk\\.(0|3)\\.attn_v\\.weight$` when the names differ only in their layer number, else an
    anchored alternation of the full names. Matches exactly these names (regex search)."""
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("no tensor selected")
    parts = [n.split(".", 2) for n in names]
    same_role = all(len(p) == 3 and p[0] == "blk" and p[1].isdigit() for p in parts) and len(
        {p[2] for p in parts}) == 1
    if same_role and len(names) > 1:
        layers = "|".join(p[1] for p in parts)
        return rf"^blk\.({layers})\.{_esc(parts[0][2])}$"
    if len(names) == 1:
        return f"^{_esc(names[0])}$"
    return "^(" + "|".join(_esc(n) for n in names) + ")$"


def with_selection_rule(recipe: Recipe, names: list[str], type_name: str) -> Recipe:
    """The recipe with a rule for exactly these tensors put first (first match wins)."""
    return recipe.with_(rules=(Rule(selection_pattern(names), type_name), *recipe.rules))
