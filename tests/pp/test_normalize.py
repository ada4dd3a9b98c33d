from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError, Keys
from spatialmultiomics.pp import highly_variable_genes, normalize_counts, scale_intensities


def test_library_normalisation_matches_formula_and_stays_sparse() -> None:
    rng = np.random.default_rng(0)
    X = rng.poisson(1.0, (30, 12)).astype(np.float32)
    X[3] = 0  # an empty cell stays zero
    adata = ad.AnnData(sp.csr_matrix(X))
    normalize_counts(adata, target_sum=100)
    out = adata.layers[Keys.PREPROCESSED]
    assert sp.issparse(out) and out.dtype == np.float32
    lib = X.sum(1, keepdims=True)
    expected = np.log1p(np.divide(X * 100, lib, out=np.zeros_like(X), where=lib > 0))
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-5)
    dense = ad.AnnData(X)
    normalize_counts(dense, target_sum=100)
    np.testing.assert_allclose(dense.layers[Keys.PREPROCESSED], expected, rtol=1e-5)
    normalize_counts(dense, method="log1p")
    np.testing.assert_allclose(dense.layers[Keys.PREPROCESSED], np.log1p(X), rtol=1e-6)


def test_intensity_scaling_removes_background_and_equalises_channels() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(2, 0.1, 500) + 50 * (np.arange(500) < 100), rng.normal(2000, 10, 500)])
    adata = ad.AnnData(np.abs(X).astype(np.float32))
    scale_intensities(adata)
    Y = adata.layers[Keys.PREPROCESSED]
    assert Y.min() >= 0
    np.testing.assert_allclose(np.percentile(Y, 99, axis=0), 1.0, atol=1e-5)
    assert Y[100:, 0].mean() < 0.05  # background near 0, positives near 1
    assert Y[:100, 0].mean() > 0.9


def test_bad_values_are_refused() -> None:
    with pytest.raises(InputError, match="RNA counts contains negative values"):
        normalize_counts(ad.AnnData(np.array([[1.0, -1.0]], dtype=np.float32)))
    with pytest.raises(
        InputError,
        match=r"protein_transform must be one of \['auto', 'arcsinh', 'arcsinh_background', 'clr', 'log1p', 'none'\]",
    ):
        scale_intensities(ad.AnnData(np.ones((2, 2), dtype=np.float32)), transform="sqrt")


def test_hvg_picks_the_planted_variable_genes() -> None:
    rng = np.random.default_rng(2)
    n = 400
    X = rng.poisson(3.0, (n, 60)).astype(np.float32)
    planted = [5, 17, 42]
    for j in planted:
        X[: n // 4, j] += rng.poisson(30, n // 4)
    adata = ad.AnnData(sp.csr_matrix(X))
    normalize_counts(adata)
    highly_variable_genes(adata, n_top_genes=3)
    assert sorted(np.flatnonzero(adata.var[Keys.HVG])) == planted
    highly_variable_genes(adata, n_top_genes=1000)
    assert adata.var[Keys.HVG].all()
