"""The bundled library of well-known mixes (resources/recipes/*.recipe), loadable by name."""

from __future__ import annotations

import os
from pathlib import Path

from iqk_studio import resources_dir
from iqk_studio.recipe.records import Recipe
from iqk_studio.recipe.textfile import load


def recipes_dir() -> Path:
    env = os.environ.get("IQK_RECIPES")
    return Path(env) if env else resources_dir() / "recipes"


def names() -> list[str]:
    d = recipes_dir()
    return sorted(p.stem for p in d.glob("*.recipe")) if d.is_dir() else []


def load_named(name: str) -> Recipe:
    """A library recipe by name (file stem), e.g. 'moe-iq2_ks-experts'."""
    p = recipes_dir() / f"{name}.recipe"
    if not p.is_file():
        raise KeyError(f"no recipe named {name!r} (known: {', '.join(names()) or 'none'})")
    return load(p)


def resolve(name_or_path: str, need_base: bool = False) -> Recipe:
    """A recipe file path, or the name of a library recipe (see textfile.load for need_base)."""
    p = Path(name_or_path)
    return load(p, need_base) if p.is_file() else load_named(name_or_path)
