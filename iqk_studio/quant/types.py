"""The type table, re-exported from where it lives: iqk_studio.gguf.types (the bottom layer)."""

from iqk_studio.gguf.types import *  # noqa: F403
from iqk_studio.gguf.types import __all__  # noqa: F401
