"""Per-modality transforms: RNA library-size normalisation + log1p, protein arcsinh/log1p + robust scaling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._validate import check_finite_nonnegative, check_option, check_positive

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["apply_intensity_scaling", "normalize_counts", "scale_intensities"]


def _scale_rows_inplace(X: sp.csr_matrix, scale: np.ndarray, rows_per_chunk: int = 65536) -> None:
    """Multiply each row of a CSR matrix by ``scale[row]`` in place, a chunk of rows at a time (no nnz-sized copy)."""
    indptr = X.indptr
    for r0 in range(0, X.shape[0], rows_per_chunk):
        r1 = min(X.shape[0], r0 + rows_per_chunk)
        a, b = indptr[r0], indptr[r1]
        X.data[a:b] *= np.repeat(scale[r0:r1], np.diff(indptr[r0 : r1 + 1]))


def _normalize_counts(
    X: np.ndarray | sp.spmatrix, *, target_sum: float | None, log: bool
) -> np.ndarray | sp.csr_matrix:
    """Scale each row to ``target_sum`` (median library size when None), then log1p. Sparse stays sparse."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        lib = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    else:
        X = np.array(X, dtype=np.float32, copy=True)
        lib = X.sum(axis=1, dtype=np.float64)
    target = float(np.median(lib[lib > 0])) if target_sum is None and (lib > 0).any() else (target_sum or 1.0)
    scale = np.divide(target, lib, out=np.zeros_like(lib), where=lib > 0).astype(np.float32)
    if sp.issparse(X):
        _scale_rows_inplace(X, scale)
        if log:
            np.log1p(X.data, out=X.data)
    else:
        X *= scale[:, None]
        if log:
            np.log1p(X, out=X)
    return X


def _normalized(X: np.ndarray | sp.spmatrix, *, method: str, target_sum: float | None) -> np.ndarray | sp.csr_matrix:
    """The matrix :func:`normalize_counts` writes: library size then log1p (``'library'``), or log1p only."""
    if method == "library":
        return _normalize_counts(X, target_sum=target_sum, log=True)
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
        np.log1p(out.data, out=out.data)
        return out
    return np.log1p(np.asarray(X, dtype=np.float32))


def normalize_counts(
    adata: AnnData,
    *,
    method: str = "library",
    target_sum: float | None = 1e4,
    layer_added: str = Keys.PREPROCESSED,
    inplace: bool = True,
) -> np.ndarray | sp.csr_matrix | None:
    """Normalise counts for factorization: library size then log1p (``'library'``) or log1p only (``'log1p'``).

    Parameters
    ----------
    adata
        Modality with raw counts in ``X`` (dense or sparse; sparse stays CSR float32).
    method
        ``'library'`` (scale every cell to ``target_sum`` counts, then log1p; default) or ``'log1p'`` (the seed's
        text: log1p of the raw counts).
    target_sum
        Counts per cell after scaling; ``None`` uses the median library size.
    layer_added
        Layer that receives the result.
    inplace
        Write ``adata.layers[layer_added]`` (True) or return the matrix.
    """
    method = check_option(method, ("library", "log1p"), name="rna_normalization")
    if target_sum is not None:
        check_positive(target_sum, name="target_sum")
    check_finite_nonnegative(adata.X, name="RNA counts")
    out = _normalized(adata.X, method=method, target_sum=target_sum)
    if not inplace:
        return out
    adata.layers[layer_added] = out
    return None


def _transform(X: np.ndarray | sp.spmatrix, transform: str, cofactor: float) -> np.ndarray:
    """Return the channel transform of ``X`` (dense float32, a new array)."""
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
    if transform == "arcsinh":
        return np.arcsinh(X / np.float32(cofactor))
    if transform == "log1p":
        return np.log1p(X)
    return X.copy()


def _scale_intensities(
    X: np.ndarray, *, transform: str, cofactor: float, low: float, high: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transform then map each channel's [low, high] percentiles to [0, 1], clipped at 0 (background removed).

    Returns ``(Y, lo, span)``: the scaled values and the per-channel offset and spread used (transformed units).
    """
    Y = _transform(X, transform, cofactor)
    lo = np.percentile(Y, low, axis=0).astype(np.float32) if low > 0 else np.zeros(Y.shape[1], np.float32)
    hi = np.percentile(Y, high, axis=0).astype(np.float32)
    span = hi - lo
    flat = span <= 0
    span[flat] = np.where(Y.max(axis=0)[flat] - lo[flat] > 0, Y.max(axis=0)[flat] - lo[flat], 1.0)
    Y -= lo
    Y /= span
    np.maximum(Y, 0, out=Y)
    return Y, lo, span


def apply_intensity_scaling(
    X: np.ndarray | sp.spmatrix, lo: np.ndarray, span: np.ndarray, *, transform: str, cofactor: float
) -> np.ndarray:
    """Scale new observations exactly as :func:`scale_intensities` scaled its input: same transform, and the
    per-channel offset ``lo`` and spread ``span`` it stored in ``var['scale_low']`` / ``var['scale_span']``."""
    Y = _transform(X, transform, cofactor)
    Y -= np.asarray(lo, dtype=np.float32)
    Y /= np.asarray(span, dtype=np.float32)
    np.maximum(Y, 0, out=Y)
    return Y


def scale_intensities(
    adata: AnnData,
    *,
    transform: str = "arcsinh",
    cofactor: float = 5.0,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
    layer_added: str = Keys.PREPROCESSED,
    inplace: bool = True,
) -> np.ndarray | None:
    """Transform intensities (proteins, metabolites) and scale every channel to a comparable, non-negative range.

    Each channel is transformed (``arcsinh(x / cofactor)``, ``log1p`` or ``none``), then its
    ``low_percentile`` is subtracted (background) and it is divided by the spread up to ``high_percentile``;
    negative values are clipped to 0, so channels land on roughly [0, 1] with bright cells above 1.

    Parameters
    ----------
    adata
        Modality with raw intensities in ``X``.
    transform
        ``'arcsinh'`` (default, cytometry convention), ``'log1p'`` or ``'none'``.
    cofactor
        Arcsinh cofactor, in the units of the intensities.
    low_percentile, high_percentile
        Percentiles (0-100) mapped to 0 and 1.
    layer_added
        Layer that receives the result.
    inplace
        Write ``adata.layers[layer_added]`` and the per-channel offset and spread (transformed units) to
        ``var['scale_low']`` / ``var['scale_span']`` (True; :func:`apply_intensity_scaling` reuses them), or
        return the matrix.
    """
    transform = check_option(transform, ("arcsinh", "log1p", "none"), name="protein_transform")
    check_positive(cofactor, name="cofactor")
    if not 0 <= low_percentile < high_percentile <= 100:
        msg = f"percentiles must satisfy 0 <= low < high <= 100, got low={low_percentile}, high={high_percentile}."
        raise InputError(msg)
    check_finite_nonnegative(adata.X, name="intensities")
    out, lo, span = _scale_intensities(
        adata.X, transform=transform, cofactor=cofactor, low=low_percentile, high=high_percentile
    )
    if not inplace:
        return out
    adata.layers[layer_added] = out
    adata.var[Keys.SCALE_LOW] = lo
    adata.var[Keys.SCALE_SPAN] = span
    return None
