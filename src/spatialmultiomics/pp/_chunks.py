"""Preprocessing of row chunks: the in-memory transforms applied one chunk at a time (out of core, Dask).

:func:`~spatialmultiomics.pp.preprocess` works on a whole matrix. Out of core (a zarr store of ten million cells
opened as a row-chunked Dask array), the row-wise steps run inside every chunk's task and the few statistics they
need are computed first:

- counts: :func:`normalize_chunk`, library size to ``target_sum`` then log1p (or log1p only), row by row: the
  values :func:`~spatialmultiomics.pp.normalize_counts` writes, exactly, with a fixed ``target_sum``;
- intensities: :func:`fit_intensity_scaling` resolves the transform (the ``'auto'`` rule, the background cofactors)
  and the per-channel percentiles from a sample of rows, as :func:`~spatialmultiomics.pp.scale_intensities` does
  from all rows; :func:`~spatialmultiomics.pp.apply_intensity_scaling` then scales each chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._validate import check_option, check_positive
from spatialmultiomics.pp._normalize import _normalized, _scale_intensities
from spatialmultiomics.pp._transforms import PROTEIN_TRANSFORMS, choose_transform

__all__ = ["IntensityScaling", "fit_intensity_scaling", "normalize_chunk"]


def normalize_chunk(
    X: np.ndarray | sp.spmatrix, *, method: str = "library", target_sum: float = 1e4
) -> np.ndarray | sp.csr_matrix:
    """Normalise one row chunk of counts as :func:`~spatialmultiomics.pp.normalize_counts` normalises a matrix.

    Every row is scaled to ``target_sum`` counts then log1p-transformed (``'library'``), or log1p-transformed only
    (``'log1p'``). Row-wise, so a chunk gives the rows of the whole matrix's result exactly; sparse stays CSR
    float32. Use it in ``dask_array.map_blocks(normalize_chunk, dtype=np.float32, meta=dask_array._meta)``.

    Parameters
    ----------
    X
        Raw counts of some cells (dense or scipy sparse).
    method
        ``'library'`` (default) or ``'log1p'``, the ``rna_normalization`` of the pipeline.
    target_sum
        Counts per cell after scaling (a number: the median library size of ``normalize_counts(target_sum=None)``
        needs every cell).

    Returns
    -------
    The normalised chunk, CSR float32 for sparse input, else a dense float32 array.

    Examples
    --------
    >>> import numpy as np
    >>> import spatialmultiomics as smo
    >>> smo.pp.normalize_chunk(np.array([[1.0, 3.0], [0.0, 2.0]]), target_sum=4.0).astype(float).round(3).tolist()
    [[0.693, 1.386], [0.0, 1.609]]
    """
    method = check_option(method, ("library", "log1p"), name="rna_normalization")
    check_positive(target_sum, name="target_sum")
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
        bad = "non-finite" if not np.all(np.isfinite(values)) else f"negative (min {float(values.min()):.4g})"
        msg = f"counts must be finite and non-negative (raw counts, before any normalisation); found {bad} values."
        raise InputError(msg)
    return _normalized(X, method=method, target_sum=target_sum)


@dataclass(frozen=True)
class IntensityScaling:
    """The per-channel scaling of an intensity modality, fitted on a sample of its rows.

    Attributes
    ----------
    transform
        ``'arcsinh'``, ``'clr'``, ``'log1p'`` or ``'none'`` (``'auto'`` resolved).
    cofactor
        Arcsinh cofactor per channel (float64, NaN for the other transforms).
    lo, span
        Per-channel offset and spread in transformed units (float32), as ``var['scale_low']`` /
        ``var['scale_span']`` of :func:`~spatialmultiomics.pp.scale_intensities`.
    reason
        Why this transform (one line, as ``uns['intensity_transform']['reason']``).
    n_rows
        Rows the statistics were taken from.
    """

    transform: str
    cofactor: np.ndarray
    lo: np.ndarray
    span: np.ndarray
    reason: str
    n_rows: int

    def apply_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~spatialmultiomics.pp.apply_intensity_scaling` for this scaling (``lo`` ... ``cofactor``)."""
        cofactor: float | np.ndarray = self.cofactor if self.transform == "arcsinh" else 1.0
        return {"lo": self.lo, "span": self.span, "transform": self.transform, "cofactor": cofactor}


def fit_intensity_scaling(
    X: np.ndarray | sp.spmatrix,
    *,
    platform: str = "generic",
    transform: str = "auto",
    cofactor: float = 5.0,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
) -> IntensityScaling:
    """Resolve the transform and the per-channel percentiles of an intensity modality from some of its rows.

    What :func:`~spatialmultiomics.pp.scale_intensities` decides from all rows (the ``'auto'`` rule, the
    background cofactors, the ``low`` / ``high`` percentiles of every transformed channel), decided from the rows
    given: out of core, a sample of rows (e.g. every ``ceil(n / 10**6)``-th row, the whole modality up to a
    million cells). Then :func:`~spatialmultiomics.pp.apply_intensity_scaling` with :meth:`IntensityScaling.apply_kwargs`
    scales any chunk; with all rows given, the result equals ``scale_intensities``'s layer exactly.

    Parameters
    ----------
    X
        Raw intensities of the sampled rows, cells x channels (dense or sparse; finite, non-negative).
    platform
        Canonical platform name (``'generic'``, ``'codex'``, ``'imc'`` ...), for the ``'auto'`` rule.
    transform, cofactor, low_percentile, high_percentile
        As for :func:`~spatialmultiomics.pp.scale_intensities`.

    Returns
    -------
    IntensityScaling

    Raises
    ------
    InputError
        For an unknown transform, a cofactor that is not positive, percentiles out of order, no rows, or negative /
        non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> import spatialmultiomics as smo
    >>> X = np.random.default_rng(0).gamma(2.0, 50.0, (1000, 3)).astype(np.float32)
    >>> fit = smo.pp.fit_intensity_scaling(X)
    >>> fit.transform, fit.lo.shape
    ('arcsinh', (3,))
    >>> Y = smo.pp.apply_intensity_scaling(X, **fit.apply_kwargs())
    >>> float(np.percentile(Y, 99, axis=0).max().round(3))
    1.0
    """
    transform = check_option(transform, PROTEIN_TRANSFORMS, name="protein_transform")
    check_positive(cofactor, name="cofactor")
    if not 0 <= low_percentile < high_percentile <= 100:
        msg = f"percentiles must satisfy 0 <= low < high <= 100, got low={low_percentile}, high={high_percentile}."
        raise InputError(msg)
    if X.shape[0] == 0:
        msg = "fit_intensity_scaling needs at least one row of intensities, got none."
        raise InputError(msg)
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
        bad = "non-finite" if not np.all(np.isfinite(values)) else f"negative (min {float(values.min()):.4g})"
        msg = f"intensities must be finite and non-negative (raw values, before any transform); found {bad} values."
        raise InputError(msg)
    choice = choose_transform(X, platform=str(platform or "generic").lower(), transform=transform, cofactor=cofactor)
    c = choice.cofactor if choice.cofactor is not None else 1.0
    _, lo, span = _scale_intensities(
        X, transform=choice.transform, cofactor=c, low=low_percentile, high=high_percentile
    )
    per_channel = (
        np.asarray(choice.cofactor, dtype=np.float64) if choice.cofactor is not None else np.full(X.shape[1], np.nan)
    )
    return IntensityScaling(choice.transform, per_channel, lo, span, choice.reason, int(X.shape[0]))
