"""Import optional dependencies with a message that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_optional"]


def import_optional(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise ImportError saying which extra of spatialmultiomics provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"This feature needs {module!r}: pip install 'spatialmultiomics[{extra}]'"
        raise ImportError(msg) from err
