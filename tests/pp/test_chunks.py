"""Chunk transforms: row chunks give the in-memory preprocessing's values exactly."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics._errors import InputError


@pytest.mark.parametrize("method", ["library", "log1p"])
@pytest.mark.parametrize("sparse", [True, False])
def test_normalize_chunk_gives_the_rows_of_normalize_counts(method, sparse):
    rng = np.random.default_rng(0)
    X = rng.poisson(0.7, (300, 40)).astype(np.float32)
    X[5] = 0  # an empty cell stays empty
    X = sp.csr_matrix(X) if sparse else X
    adata = ad.AnnData(X=X)
    whole = smo.pp.normalize_counts(adata, method=method, inplace=False)
    parts = [smo.pp.normalize_chunk(X[a : a + 128], method=method) for a in range(0, 300, 128)]
    stacked = sp.vstack(parts).toarray() if sparse else np.vstack(parts)
    assert sp.issparse(parts[0]) == sparse and parts[0].dtype == np.float32
    np.testing.assert_array_equal(stacked, whole.toarray() if sparse else whole)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (sp.csr_matrix(np.array([[1.0, -0.5], [0.0, 2.0]])), r"negative \(min -0\.5\)"),
        (np.array([[1.0, np.nan]]), "non-finite"),
    ],
)
def test_normalize_chunk_refuses_values_that_are_not_counts(X, match):
    """Scaled or log-transformed data would give NaN from log1p and fail far downstream (PCA) without a name."""
    with pytest.raises(InputError, match=match):
        smo.pp.normalize_chunk(X)


@pytest.mark.parametrize("transform", ["auto", "arcsinh", "arcsinh_background", "clr", "log1p", "none"])
def test_fit_on_all_rows_then_apply_per_chunk_equals_scale_intensities(transform):
    rng = np.random.default_rng(1)
    X = rng.gamma(2.0, 30.0, (400, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.2] = 0
    adata = ad.AnnData(X=X)
    whole = smo.pp.scale_intensities(adata, transform=transform, inplace=False)
    fit = smo.pp.fit_intensity_scaling(X, transform=transform)
    parts = [smo.pp.apply_intensity_scaling(X[a : a + 150], **fit.apply_kwargs()) for a in range(0, 400, 150)]
    np.testing.assert_array_equal(np.vstack(parts), whole)
    assert fit.n_rows == 400


def test_auto_rule_on_a_row_sample_picks_clr_for_antibody_counts():
    counts = np.random.default_rng(2).poisson(20.0, (1000, 5)).astype(np.float32)
    fit = smo.pp.fit_intensity_scaling(counts[::10], platform="generic")
    assert fit.transform == "clr" and np.isnan(fit.cofactor).all()
    assert smo.pp.fit_intensity_scaling(counts[::10], platform="imc").transform == "arcsinh"


@pytest.mark.parametrize(
    ("X", "kwargs", "match"),
    [
        (-np.ones((3, 2)), {}, r"finite and non-negative .* found negative \(min -1\) values"),
        (np.ones((0, 2)), {}, "at least one row"),
        (np.ones((3, 2)), {"low_percentile": 50, "high_percentile": 10}, "percentiles"),
        (np.ones((3, 2)), {"transform": "sqrt"}, "protein_transform"),
    ],
)
def test_fit_intensity_scaling_refuses_bad_input(X, kwargs, match):
    with pytest.raises(InputError, match=match):
        smo.pp.fit_intensity_scaling(X, **kwargs)
