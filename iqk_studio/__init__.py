"""iqk-studio: design, size, quantize and evaluate GGUF quantization mixes."""

from pathlib import Path

from iqk_studio import _blas, _numba_cache

__version__ = "0.1.0"
_numba_cache.configure()
_blas.configure()


def resources_dir() -> Path:
    """The `resources/` folder (recipes, icons): next to the package in a source checkout or an
    editable install; inside the package (`iqk_studio/resources`) in a wheel."""
    here = Path(__file__).resolve().parent
    for p in (here.parent / "resources", here / "resources"):
        if p.is_dir():
            return p
    return here.parent / "resources"
