"""Layers only point down (docs/ARCHITECTURE.md): every import in iqk_studio, module level or inside
a function, goes to a lower layer or stays in its own unit, and no unit's modules import each other
in a cycle. Core modules never load Qt (checked in a fresh interpreter)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import iqk_studio

PKG = Path(iqk_studio.__file__).resolve().parent

# unit -> layer; a module belongs to the longest unit its name starts with
LAYERS: dict[str, float] = {
    "iqk_studio": -1,  # the package root's leaves: __init__, _numba_cache, demo
    "iqk_studio.gguf": 0,
    "iqk_studio.quant": 1,
    "iqk_studio.recipe": 1,
    "iqk_studio.engine": 2,
    "iqk_studio.jobs": 3,
    "iqk_studio.external": 3.5,  # drives llama.cpp's tools; yields the jobs' events
    "iqk_studio.results": 3.5,  # the results store; records any job's events
    "iqk_studio.optimize": 3.7,  # sensitivities (jobs) cached in the results store, the solver
    "iqk_studio.gui": 4,
    "iqk_studio.cli": 4,
    "iqk_studio.commands": 4,
}
SAME_UNIT = {"iqk_studio.commands": "iqk_studio.cli"}  # cli.py + commands/: one headless app


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _unit(mod: str) -> str:
    best = "iqk_studio"
    for u in LAYERS:
        if (mod == u or mod.startswith(u + ".")) and len(u) > len(best):
            best = u
    return SAME_UNIT.get(best, best)


def _imports(mod: str, path: Path, known: dict) -> set[str]:
    """iqk_studio modules imported anywhere in the file (relative imports resolved; `from pkg
    import name` counts as pkg.name when that is a module)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        else:
            continue
        out.update(n for n in names if n == "iqk_studio" or n.startswith("iqk_studio."))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_every_package_has_a_layer():
    missing = sorted({".".join(m.split(".")[:2]) for m in _modules()
                      if m.count(".") >= 2 and _unit(m) == "iqk_studio"})
    assert not missing, f"give these packages a layer in LAYERS (tests/test_layering.py): {missing}"


def test_every_import_points_down():
    bad = []
    for mod, imports in _graph().items():
        u = _unit(mod)
        for imp in imports:
            v = _unit(imp)
            if v != u and LAYERS[v] >= LAYERS[u]:
                bad.append(f"{mod} (L{LAYERS[u]}) imports {imp} (L{LAYERS[v]})")
    assert not bad, "imports that do not point down:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_inside_a_unit():
    g = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(g.get(m, ())):
            if n not in g or _unit(n) != _unit(m):
                continue
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_layering_check_can_fail():
    """The scanner sees a function-level import and resolves relative ones."""
    mods = _modules()
    reader = _imports("iqk_studio.gguf.reader", mods["iqk_studio.gguf.reader"], mods)
    assert "iqk_studio.gguf.types" in reader and "iqk_studio.gguf.split" in reader
    jobs_q = _imports("iqk_studio.jobs.quantize", mods["iqk_studio.jobs.quantize"], mods)
    assert "iqk_studio.gguf.reader" in jobs_q  # imported inside quantize_model
    assert _unit("iqk_studio.commands.plan") == _unit("iqk_studio.cli")
    assert LAYERS[_unit("iqk_studio.gguf.reader")] < LAYERS[_unit("iqk_studio.quant.api")]


def _core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(iqk_studio.__path__, "iqk_studio."):
        if info.name == "iqk_studio.gui" or info.name.startswith("iqk_studio.gui."):
            continue
        names.append(info.name)
    return names


def test_core_imports_no_qt():
    mods = _core_modules()
    assert "iqk_studio.gguf.reader" in mods and "iqk_studio.cli" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"Qt loaded by core modules: {r.stdout.strip()}"
