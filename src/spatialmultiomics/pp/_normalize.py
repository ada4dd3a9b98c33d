"""Per-modality transforms: RNA library-size normalisation + log1p, protein arcsinh / CLR / log1p + robust scaling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._validate import check_finite_nonnegative, check_option, check_positive
from spatialmultiomics.pp._transforms import PROTEIN_TRANSFORMS, TransformChoice, choose_transform, transform_channels

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["apply_intensity_scaling", "normalize_counts", "scale_intensities", "stored_intensity_transform"]

#: Transforms a modality can have been scaled with (what ``'auto'`` resolves to).
INTENSITY_TRANSFORMS: tuple[str, ...] = tuple(t for t in PROTEIN_TRANSFORMS if t not in ("auto", "arcsinh_background"))


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


def _scale_intensities(
    X: np.ndarray | sp.spmatrix, *, transform: str, cofactor: float | np.ndarray, low: float, high: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transform then map each channel's [low, high] percentiles to [0, 1], clipped at 0 (background removed).

    Returns ``(Y, lo, span)``: the scaled values and the per-channel offset and spread used (transformed units).
    """
    Y = transform_channels(X, transform, cofactor)
    lo = np.percentile(Y, low, axis=0).astype(np.float32) if low > 0 else np.zeros(Y.shape[1], np.float32)
    hi = np.percentile(Y, high, axis=0).astype(np.float32)
    span = hi - lo
    flat = span <= 0
    span[flat] = np.where(Y.max(axis=0)[flat] - lo[flat] > 0, Y.max(axis=0)[flat] - lo[flat], 1.0)
    Y -= lo
    Y /= span
    np.maximum(Y, 0, out=Y)
    return Y, lo, span


def _check_cofactor(cofactor: float | np.ndarray, n_channels: int) -> float | np.ndarray:
    """A positive number, or one positive number per channel."""
    c = np.asarray(cofactor, dtype=np.float64)
    if c.ndim == 0:
        return check_positive(float(c), name="cofactor")
    if c.shape != (n_channels,) or not np.all(np.isfinite(c)) or np.any(c <= 0):
        got = np.array2string(c.ravel(), threshold=6, precision=4)
        msg = f"cofactor must be a positive number or {n_channels} positive numbers (one per channel), got {got}."
        raise InputError(msg)
    return c


def apply_intensity_scaling(
    X: np.ndarray | sp.spmatrix,
    lo: np.ndarray,
    span: np.ndarray,
    *,
    transform: str,
    cofactor: float | np.ndarray = 5.0,
) -> np.ndarray:
    """Scale new observations exactly as :func:`scale_intensities` scaled its input.

    Parameters
    ----------
    X
        New observations, cells x the modality's channels (same order).
    lo, span
        The per-channel offset and spread :func:`scale_intensities` stored in ``var['scale_low']`` /
        ``var['scale_span']``.
    transform
        The transform the modality was scaled with: ``adata.uns['intensity_transform']['transform']``
        (``'arcsinh'``, ``'clr'``, ``'log1p'`` or ``'none'``; not ``'auto'`` or ``'arcsinh_background'``, which
        are resolved from the data).
    cofactor
        Arcsinh cofactor: one number, or one per channel (``var['arcsinh_cofactor']``). Ignored otherwise.

    Returns
    -------
    Dense float32 array, cells x channels.
    """
    transform = check_option(transform, INTENSITY_TRANSFORMS, name="transform")
    if transform == "arcsinh":
        cofactor = _check_cofactor(cofactor, X.shape[1])
    Y = transform_channels(X, transform, cofactor)
    Y -= np.asarray(lo, dtype=np.float32)
    Y /= np.asarray(span, dtype=np.float32)
    np.maximum(Y, 0, out=Y)
    return Y


def stored_intensity_transform(adata: AnnData, *, fallback: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``transform`` and ``cofactor`` keywords of :func:`apply_intensity_scaling` for a scaled modality.

    Read from ``adata.uns['intensity_transform']`` and ``var['arcsinh_cofactor']``; a modality scaled before they
    were recorded takes ``fallback['protein_transform']`` / ``fallback['cofactor']`` (``mdata.uns['preprocess']``).
    """
    record = adata.uns.get(Keys.INTENSITY_TRANSFORM)
    if isinstance(record, Mapping) and "transform" in record:
        transform = str(record["transform"])
        cofactor: float | np.ndarray = 5.0
        if transform == "arcsinh" and Keys.ARCSINH_COFACTOR in adata.var:
            cofactor = adata.var[Keys.ARCSINH_COFACTOR].to_numpy(dtype=np.float64)
        return {"transform": transform, "cofactor": cofactor}
    fallback = fallback or {}
    transform = str(fallback.get("protein_transform", "arcsinh"))
    if transform not in INTENSITY_TRANSFORMS:
        msg = (
            f"the modality records no intensity transform (uns['{Keys.INTENSITY_TRANSFORM}']) and the preprocessing "
            f"asked for {transform!r}; run smo.pp.preprocess again."
        )
        raise InputError(msg)
    return {"transform": transform, "cofactor": float(fallback.get("cofactor", 5.0))}


def scale_intensities(
    adata: AnnData,
    *,
    transform: str = "auto",
    cofactor: float = 5.0,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
    layer_added: str = Keys.PREPROCESSED,
    inplace: bool = True,
    decide_on: np.ndarray | None = None,
) -> np.ndarray | None:
    """Transform intensities (proteins, metabolites) and scale every channel to a comparable, non-negative range.

    Each channel is transformed (see ``transform``), then its ``low_percentile`` is subtracted (background) and it
    is divided by the spread up to ``high_percentile``; negative values are clipped to 0, so channels land on
    roughly [0, 1] with bright cells above 1.

    Parameters
    ----------
    adata
        Modality with raw intensities or antibody counts in ``X``; its platform is read from
        ``uns['provenance']['platform']`` (``'generic'`` when absent).
    transform
        ``'auto'`` (default): chosen from the platform and the values. Antibody-derived counts (non-negative
        integers, at least two channels, not from an imaging cytometry platform: CITE-seq ADT tables, generic
        tables) -> ``'clr'``; mass cytometry imaging (IMC, MIBI) with integer ion counts -> arcsinh with cofactor
        5; every other intensity table (CODEX, CyCIF, Xenium Protein, generic intensities; IMC / MIBI per-pixel
        mean counts) -> arcsinh with ``cofactor`` (default 5) in the units of the data. Or force one:
        ``'arcsinh'`` (``cofactor`` for every channel, the cytometry convention), ``'arcsinh_background'``
        (arcsinh with a per-channel cofactor at the channel's background, the lower quartile of its positive
        values: linear through the background, logarithmic for the positive cells; it measured worse than
        cofactor 5 on real labelled data, see :mod:`spatialmultiomics.pp._transforms`), ``'clr'`` (centred
        log-ratio per cell across channels, Seurat's CLR with ``margin=2``), ``'log1p'`` or ``'none'``.
    cofactor
        Arcsinh cofactor of ``transform='arcsinh'`` and of the intensity rule of ``'auto'`` (not of ion counts,
        which keep 5), in the units of the values (unused otherwise).
    low_percentile, high_percentile
        Percentiles (0-100) mapped to 0 and 1.
    layer_added
        Layer that receives the result.
    inplace
        Write ``adata.layers[layer_added]``, the per-channel offset and spread (transformed units) to
        ``var['scale_low']`` / ``var['scale_span']``, the arcsinh cofactor of each channel to
        ``var['arcsinh_cofactor']`` (NaN for the other transforms) and the transform used, its cofactor rule and
        the reason to ``uns['intensity_transform']`` (True; :func:`apply_intensity_scaling` reuses them, see
        :func:`stored_intensity_transform`), or return the matrix.
    decide_on
        Rows (boolean mask or indices) the ``'auto'`` rule looks at; None: all. :func:`preprocess` passes the
        measured rows when the alignment imputed others (means of several cells are not whole numbers, and
        antibody counts would be taken for fluorescence).

    Raises
    ------
    InputError
        For an unknown ``transform`` (the message names ``protein_transform`` and the allowed values), a
        cofactor that is not positive, percentiles out of order, or negative / non-finite values.
    """
    choice = _resolve_transform(adata, transform=transform, cofactor=cofactor, rows=decide_on)
    if not 0 <= low_percentile < high_percentile <= 100:
        msg = f"percentiles must satisfy 0 <= low < high <= 100, got low={low_percentile}, high={high_percentile}."
        raise InputError(msg)
    out, lo, span = _scale_intensities(
        adata.X,
        transform=choice.transform,
        cofactor=choice.cofactor if choice.cofactor is not None else 1.0,
        low=low_percentile,
        high=high_percentile,
    )
    if not inplace:
        return out
    adata.layers[layer_added] = out
    adata.var[Keys.SCALE_LOW] = lo
    adata.var[Keys.SCALE_SPAN] = span
    adata.var[Keys.ARCSINH_COFACTOR] = choice.cofactor if choice.cofactor is not None else np.nan
    adata.uns[Keys.INTENSITY_TRANSFORM] = {
        "requested": str(transform).lower(),
        "transform": choice.transform,
        "cofactor_rule": choice.rule or "none",
        "reason": choice.reason,
    }
    return None


def _resolve_transform(
    adata: AnnData, *, transform: str, cofactor: float, rows: np.ndarray | None = None
) -> TransformChoice:
    """Validate the transform options and the values, then pick the modality's transform (from ``rows`` only when
    given: the measured rows when others were imputed as means of several cells, which are not whole numbers)."""
    transform = check_option(transform, PROTEIN_TRANSFORMS, name="protein_transform")
    check_positive(cofactor, name="cofactor")
    check_finite_nonnegative(adata.X, name="intensities")
    prov = adata.uns.get(Keys.PROVENANCE, {})
    platform = prov.get("platform") if isinstance(prov, Mapping) else None
    X = adata.X
    if rows is not None:
        rows = np.asarray(rows)
        if rows.dtype == bool and rows.shape != (adata.n_obs,):
            msg = f"decide_on must be a boolean mask of the {adata.n_obs} rows or row indices, got shape {rows.shape}."
            raise InputError(msg)
        if rows.size and (rows.any() if rows.dtype == bool else True):
            X = X[rows]
    return choose_transform(X, platform=str(platform or "generic").lower(), transform=transform, cofactor=cofactor)
