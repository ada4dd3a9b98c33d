"""Highly variable genes (dispersion within mean bins, Seurat flavour) on normalised, log-transformed data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._keys import Keys
from spatialmultiomics._validate import check_positive_int

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["highly_variable_genes"]


def _mean_var(X: np.ndarray | sp.spmatrix, chunk: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Column means and variances without densifying or copying a sparse matrix (float64 sums, by chunks)."""
    n, m = X.shape
    if sp.issparse(X):
        if X.format not in ("csr", "csc") or not X.has_canonical_format:
            X = sp.csr_matrix(X, copy=True)
            X.sum_duplicates()
        total, total_sq = np.zeros(m), np.zeros(m)
        for start in range(0, X.nnz, chunk):
            vals = X.data[start : start + chunk].astype(np.float64)
            if X.format == "csr":
                col = X.indices[start : start + chunk]
            else:  # CSC: the column of a stored value is the segment of indptr it falls in
                col = np.searchsorted(X.indptr, np.arange(start, start + vals.size), side="right") - 1
            total += np.bincount(col, weights=vals, minlength=m)
            total_sq += np.bincount(col, weights=vals * vals, minlength=m)
        mean, mean_sq = total / n, total_sq / n
    else:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        mean_sq = (X**2).mean(axis=0)
    var = np.maximum(mean_sq - mean**2, 0) * (n / max(n - 1, 1))
    return mean, var


def _hvg_mask(X: np.ndarray | sp.spmatrix, n_top: int, genes_per_bin: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask of the ``n_top`` genes whose log-dispersion lies furthest above the mean-dispersion trend.

    The trend is the median log-dispersion within equal-count bins of mean expression (at least
    ``genes_per_bin`` genes per bin, at most 20 bins), interpolated between bin centres; medians keep a few very
    variable genes from raising their own baseline.
    """
    return _select_hvg(*_mean_var(X), n_top, genes_per_bin)


def _select_hvg(
    mean: np.ndarray, var: np.ndarray, n_top: int, genes_per_bin: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The selection of :func:`_hvg_mask` from column means and variances (shared with the chunked statistics)."""
    n_genes = mean.size
    if n_top >= n_genes:
        return np.ones(n_genes, dtype=bool), np.zeros(n_genes)
    expressed = mean > 0
    disp = np.full(n_genes, -np.inf)
    disp[expressed] = np.log(np.maximum(var[expressed], 1e-12) / mean[expressed])
    idx = np.flatnonzero(expressed)
    order = idx[np.argsort(mean[idx], kind="stable")]
    n_bins = int(np.clip(order.size // genes_per_bin, 1, 20))
    centres, medians = [], []
    for chunk in np.array_split(order, n_bins):
        centres.append(np.median(mean[chunk]))
        medians.append(np.median(disp[chunk]))
    trend = np.interp(mean, centres, medians)
    score = np.where(expressed, disp - trend, -np.inf)
    rank = np.lexsort((np.arange(n_genes), -score))  # highest score first, ties by position
    mask = np.zeros(n_genes, dtype=bool)
    mask[rank[:n_top]] = True
    return mask, score


def highly_variable_genes(adata: AnnData, *, n_top_genes: int = 2000, layer: str = Keys.PREPROCESSED) -> None:
    """Flag the ``n_top_genes`` most variable genes in ``adata.var['highly_variable']`` (all when fewer).

    Genes are ranked by how far their log-dispersion (variance / mean, on ``adata.layers[layer]``, normalised and
    log-transformed, or ``X``) lies above the median dispersion of genes with similar mean expression (a robust
    form of Satija et al. 2015's binned dispersion); the excess is stored in ``var['dispersion_norm']``.
    """
    n_top_genes = check_positive_int(n_top_genes, name="n_top_genes")
    X = adata.layers.get(layer, adata.X)
    mask, score = _hvg_mask(X, n_top_genes)
    adata.var[Keys.HVG] = mask
    adata.var["dispersion_norm"] = score
