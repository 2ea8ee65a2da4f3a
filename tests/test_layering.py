"""Core modules never load Qt: import every iqk_studio module outside gui/ in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import iqk_studio


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
