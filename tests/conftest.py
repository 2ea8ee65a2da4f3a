"""Shared test fixtures: where ../shared is, and environment for Qt and numba."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the results store of every run (CLI in-process or as a subprocess) goes to a throw-away folder
_DATA = tempfile.mkdtemp(prefix="iqk-studio-test-data-")
os.environ["IQK_STUDIO_DATA"] = _DATA
atexit.register(shutil.rmtree, _DATA, True)

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IQK_SHARED", ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference data {p} is absent (../shared not available)")
    return p


@pytest.fixture
def shared():
    return shared_path
