"""highly_variable_genes_chunked: column statistics by chunks select the in-memory function's genes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError, Keys
from spatialmultiomics.pp import highly_variable_genes, highly_variable_genes_chunked, normalize_counts

da = pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def counts() -> ad.AnnData:
    """3,000 cells x 400 genes of sparse counts, genes 0-39 variable (bimodal), the rest Poisson at many means."""
    rng = np.random.default_rng(0)
    mean = rng.gamma(0.5, 1.0, 400)
    X = rng.poisson(mean, (3000, 400)).astype(np.float32)
    on = rng.random((3000, 40)) < 0.3
    X[:, :40] = rng.poisson(np.where(on, 6 * mean[:40] + 1, 0.1 * mean[:40]))
    adata = ad.AnnData(sp.csr_matrix(X))
    normalize_counts(adata, target_sum=1e4)
    return adata


@pytest.mark.parametrize("dense", [False, True])
def test_chunked_statistics_select_the_in_memory_genes(counts, dense) -> None:
    L = counts.layers[Keys.PREPROCESSED]
    highly_variable_genes(counts, n_top_genes=60)
    expected = counts.var[Keys.HVG].to_numpy()
    X = L.toarray() if dense else L
    stats = highly_variable_genes_chunked(da.from_array(X, chunks=(700, -1)), n_top_genes=60)
    np.testing.assert_array_equal(stats.highly_variable, expected)
    np.testing.assert_allclose(stats.dispersion_norm, counts.var["dispersion_norm"].to_numpy(), rtol=1e-9)
    # the statistics themselves against NumPy on the dense matrix
    D = L.toarray().astype(np.float64)
    np.testing.assert_allclose(stats.mean, D.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.var, D.var(axis=0, ddof=1), rtol=1e-8, atol=1e-12)
    assert stats.n_obs == 3000
    assert expected[:40].sum() >= 38  # the planted variable genes are found


def test_column_chunks_and_in_memory_input(counts) -> None:
    L = counts.layers[Keys.PREPROCESSED].toarray()
    a = highly_variable_genes_chunked(da.from_array(L, chunks=(1000, 100)), n_top_genes=60)
    b = highly_variable_genes_chunked(L, n_top_genes=60)
    np.testing.assert_array_equal(a.highly_variable, b.highly_variable)
    everything = highly_variable_genes_chunked(da.from_array(L, chunks=(1000, -1)), n_top_genes=2000)
    assert everything.highly_variable.all()  # fewer genes than n_top_genes: all kept


def test_bad_input_raises(counts) -> None:
    with pytest.raises(InputError, match="two-dimensional"):
        highly_variable_genes_chunked(np.zeros(5))
    with pytest.raises(InputError, match="n_top_genes"):
        highly_variable_genes_chunked(np.zeros((5, 3)), n_top_genes=0)
