"""Packaging stays consistent with the code, cheaply (the frozen build itself is packaging/build.py,
slow, not part of the test run): pyproject's package list, the PyInstaller spec's dependency list,
the optional `package` extra, the desktop entry and the icon."""

import ast
import configparser
import re
import sys
import tomllib
from pathlib import Path

from iqk_studio import resources_dir
from iqk_studio.recipe import library

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SPEC = ROOT / "packaging" / "iqk-studio.spec"


def _dist_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip()


def _spec_literal(name: str):
    for node in ast.parse(SPEC.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SPEC.name} has no literal {name}")


def test_every_package_is_listed():
    conf = PYPROJECT["tool"]["setuptools"]
    listed = set(conf["packages"])
    # every folder with modules, namespace packages (no __init__.py) included
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "iqk_studio").rglob("*.py") if "__pycache__" not in p.parts}
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    assert conf["package-dir"]["iqk_studio.resources"] == "resources"


def test_resources_found():
    assert (resources_dir() / "recipes").is_dir()
    assert (resources_dir() / "icons" / "iqk-studio.png").is_file()
    assert library.names()


def test_spec_collects_every_runtime_dependency():
    deps = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    listed = _spec_literal("DEPENDENCIES")
    assert set(listed) == deps, (f"packaging/iqk-studio.spec DEPENDENCIES differs from pyproject: "
                                 f"missing {sorted(deps - set(listed))}, extra "
                                 f"{sorted(set(listed) - deps)}")
    excluded = set(_spec_literal("EXCLUDES"))
    assert not excluded & set(listed.values()), "the spec excludes a runtime dependency"
    # the import names are real (installed with the default dependencies)
    import importlib.util
    for mod in listed.values():
        assert importlib.util.find_spec(mod) is not None, mod


def test_spec_keeps_sources_for_numba_and_finds_every_module():
    text = SPEC.read_text()
    assert 'module_collection_mode={"iqk_studio": "py"}' in text  # numba caches need .py files
    assert 'rglob("*.py")' in text  # hidden imports from the files: commands, namespace kernels
    for f in ("entry_gui.py", "entry_cli.py"):
        assert (ROOT / "packaging" / f).is_file() and f in text


def test_pyinstaller_only_in_the_package_extra():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(_dist_name(r).lower() == "pyinstaller" for r in extras["package"])
    for name in ("test", "demo"):
        assert not any(_dist_name(r).lower() == "pyinstaller" for r in extras[name])
    assert not any(_dist_name(r).lower() == "pyinstaller"
                   for r in PYPROJECT["project"]["dependencies"])


def test_desktop_entry():
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(ROOT / "packaging" / "iqk-studio.desktop")
    e = cp["Desktop Entry"]
    gui = PYPROJECT["project"]["gui-scripts"]
    assert e["Type"] == "Application" and e["Exec"].split()[0] in gui
    assert (ROOT / "resources" / "icons" / f"{e['Icon']}.png").is_file()
    mime = (ROOT / "packaging" / "iqk-studio-mime.xml").read_text()
    for m in e["MimeType"].strip(";").split(";"):
        assert f'type="{m}"' in mime


def test_icon_is_drawn_by_its_script():
    sys.path.insert(0, str(ROOT / "packaging"))
    try:
        import make_icon
    finally:
        sys.path.pop(0)
    svg = (ROOT / "resources" / "icons" / "iqk-studio.svg").read_text()
    assert svg == make_icon.svg(), "stale icon: QT_QPA_PLATFORM=offscreen .venv/bin/python " \
        "packaging/make_icon.py"
    for ext in ("png", "ico", "icns"):
        assert (ROOT / "resources" / "icons" / f"iqk-studio.{ext}").stat().st_size > 1000
