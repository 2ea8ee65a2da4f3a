"""The numba cache folder is keyed by the kernel sources, so an edited helper never runs stale."""

import os

from iqk_studio import _numba_cache


def _tree(tmp_path, text):
    (tmp_path / "quant").mkdir(exist_ok=True)
    (tmp_path / "engine").mkdir(exist_ok=True)
    (tmp_path / "quant" / "common.py").write_text(text)
    (tmp_path / "engine" / "x.py").write_text("y = 1\n")


def test_hash_follows_helper_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(_numba_cache, "_PKG", tmp_path)
    _tree(tmp_path, "def f(): return 1\n")
    h1 = _numba_cache.source_hash()
    assert _numba_cache.source_hash() == h1
    _tree(tmp_path, "def f(): return 2\n")
    assert _numba_cache.source_hash() != h1


def test_configure_sets_dir_and_drops_old_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    _tree(pkg, "a = 1\n")
    monkeypatch.setattr(_numba_cache, "_PKG", pkg)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _numba_cache.configure()
    first = os.environ["NUMBA_CACHE_DIR"]
    assert first.startswith(str(tmp_path / "cache"))
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    _tree(pkg, "a = 2\n")
    _numba_cache.configure()
    second = os.environ["NUMBA_CACHE_DIR"]
    # the other version's folder was used just now: another checkout may still need it
    assert second != first and os.path.isdir(second) and os.path.isdir(first)


def test_prune_keeps_recent_and_the_last_few(tmp_path):
    now = 1_000_000_000.0
    day = 24 * 3600
    keep = tmp_path / "current"
    keep.mkdir()
    ages = {"fresh": 0.5 * day, **{f"old{i}": (2 + i) * day for i in range(6)}}
    for name, age in ages.items():
        d = tmp_path / name
        d.mkdir()
        os.utime(d, (now - age, now - age))
    _numba_cache.prune(tmp_path, keep=keep, now=now)
    left = sorted(p.name for p in tmp_path.iterdir())
    # the current one, the KEEP most recently used others (fresh, old0..old2), nothing older
    assert left == ["current", "fresh", "old0", "old1", "old2"]
    # a folder younger than a day survives even beyond KEEP
    for i in range(6):
        d = tmp_path / f"new{i}"
        d.mkdir()
        os.utime(d, (now - 3600, now - 3600))
    _numba_cache.prune(tmp_path, keep=keep, now=now)
    assert all((tmp_path / f"new{i}").is_dir() for i in range(6))
    assert (tmp_path / "fresh").is_dir() and not (tmp_path / "old0").exists()


def test_user_choice_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    _numba_cache.configure()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)


def test_numba_imported_first_still_uses_the_keyed_dir(tmp_path):
    import subprocess
    import sys

    code = ("import numba, os\n"
            "import iqk_studio\n"
            "from numba.core import config\n"
            "print(config.CACHE_DIR == os.environ['NUMBA_CACHE_DIR'])\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
