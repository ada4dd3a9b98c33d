"""Input checks with one wording. Each raises :class:`~spatialmultiomics._errors.InputError` (a ValueError)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "check_categorical",
    "check_finite_nonnegative",
    "check_in_range",
    "check_option",
    "check_positive",
    "check_positive_int",
]


def check_positive(value: Any, *, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is a finite number > 0 (>= 0 with ``allow_zero``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        msg = f"{name} must be a number, got {value!r}."
        raise InputError(msg) from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        msg = f"{name} must be a finite number {bound}, got {value!r}."
        raise InputError(msg)
    return v


def check_positive_int(value: Any, *, name: str, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            msg = f"{name} must be an integer >= {minimum}, got {value!r}."
            raise InputError(msg)
    if value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}."
        raise InputError(msg)
    return int(value)


def check_in_range(value: Any, *, name: str, low: float, high: float) -> float:
    """Return ``value`` as float if ``low <= value <= high``."""
    v = check_positive(value, name=name, allow_zero=True) if low >= 0 else float(value)
    if not low <= v <= high:
        msg = f"{name} must be between {low} and {high}, got {value!r}."
        raise InputError(msg)
    return v


def check_option(value: Any, options: Iterable[str], *, name: str) -> str:
    """Return ``value`` lower-cased if it is one of ``options`` (case-insensitive)."""
    opts = list(options)
    if isinstance(value, str) and value.lower() in {o.lower() for o in opts}:
        return value.lower()
    msg = f"{name} must be one of {opts}, got {value!r}."
    raise InputError(msg)


def check_finite_nonnegative(X: Any, *, name: str) -> None:
    """Raise if the dense or sparse matrix ``X`` has NaN, inf or negative values."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size == 0:
        return
    if not np.all(np.isfinite(data)):
        msg = f"{name} contains NaN or infinite values; NMF needs finite non-negative input."
        raise InputError(msg)
    if data.min() < 0:
        msg = f"{name} contains negative values (min {data.min():.4g}); NMF needs non-negative input."
        raise InputError(msg)


def check_categorical(adata: AnnData, key: str) -> tuple[np.ndarray, list[str]]:
    """Return integer codes (int32, -1 for missing) and category names of ``adata.obs[key]``."""
    import pandas as pd

    if key not in adata.obs:
        msg = f"label_key={key!r} is not a column of adata.obs; available: {list(adata.obs.columns)[:20]}."
        raise InputError(msg)
    col = adata.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    return col.cat.codes.to_numpy().astype(np.int32), [str(c) for c in col.cat.categories]
