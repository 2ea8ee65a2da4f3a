"""pyproject's explicit package list names every package, and resources are found."""

import tomllib
from pathlib import Path

from iqk_studio import resources_dir
from iqk_studio.recipe import library

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "iqk_studio").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    assert conf["package-dir"]["iqk_studio.resources"] == "resources"


def test_resources_found():
    assert (resources_dir() / "recipes").is_dir()
    assert library.names()
