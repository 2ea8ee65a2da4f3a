"""iqk-studio: design, size, quantize and evaluate GGUF quantization mixes."""

from pathlib import Path

from iqk_studio import _numba_cache

__version__ = "0.1.0"
_numba_cache.configure()


def resources_dir() -> Path:
    """The top-level `resources/` folder (recipes, icons) next to the package source."""
    return Path(__file__).resolve().parent.parent / "resources"
