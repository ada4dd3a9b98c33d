"""Public warning classes."""

from __future__ import annotations

import warnings

__all__ = ["ConvergenceWarning", "SpatialMultiOmicsWarning", "warn"]


class SpatialMultiOmicsWarning(UserWarning):
    """Base class of the warnings this package emits."""


class ConvergenceWarning(SpatialMultiOmicsWarning):
    """An iterative solver stopped at ``max_iter`` before reaching its tolerance."""


def warn(message: str, category: type[Warning] = SpatialMultiOmicsWarning, stacklevel: int = 3) -> None:
    """Emit ``message`` as ``category``, attributed to the caller's caller (user code)."""
    warnings.warn(message, category, stacklevel=stacklevel)
