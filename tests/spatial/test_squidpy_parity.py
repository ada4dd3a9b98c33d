"""Parity with ``squidpy.gr.nhood_enrichment`` on the same graph (squidpy is an optional test dependency).

Run with an environment that has squidpy (``make test-interop``, or ``pip install 'spatialmultiomics[bench]'``);
skipped otherwise.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

with warnings.catch_warnings():
    # squidpy's import emits docrep SyntaxWarnings and dask / numba deprecation warnings (not ours)
    warnings.simplefilter("ignore")
    sq = pytest.importorskip("squidpy")

from spatialmultiomics.spatial import colocalization, spatial_neighbors

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]


def _tissue(n: int = 3000, n_types: int = 8, seed: int = 0, n_fov: int = 1) -> ad.AnnData:
    """Cells whose type depends smoothly on position (patches), so z-scores span a wide range."""
    rng = np.random.default_rng(seed)
    coords = rng.random((n, 2)) * 600
    centres = rng.random((n_types, 2)) * 600
    d2 = ((coords[:, None, :] - centres[None]) ** 2).sum(-1)
    logits = -d2 / (2 * 120.0**2)
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    codes = (prob.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    cats = [f"type{i}" for i in range(n_types)]
    obs = pd.DataFrame({"cell_type": pd.Categorical.from_codes(codes, cats)}, index=[f"c{i}" for i in range(n)])
    if n_fov > 1:
        obs["fov"] = pd.Categorical([f"f{i}" for i in (coords[:, 0] // (600 / n_fov)).astype(int)])
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    return adata


def _squidpy(adata: ad.AnnData, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sq.gr.nhood_enrichment(
            adata,
            cluster_key="cell_type",
            n_perms=1000,
            seed=0,
            copy=True,
            show_progress_bar=False,
            n_jobs=1,
            **kwargs,
        )
    return np.asarray(res.zscore), np.asarray(res.counts)


@pytest.mark.parametrize(
    ("method", "kwargs"), [("radius", {"radius": 30.0}), ("knn", {"n_neighbors": 6}), ("delaunay", {})]
)
def test_zscores_match_squidpy_nhood_enrichment(method: str, kwargs: dict) -> None:
    adata = _tissue()
    spatial_neighbors(adata, method=method, **kwargs)
    ours = colocalization(adata, inplace=False)
    z_sq, count_sq = _squidpy(adata)
    np.testing.assert_array_equal(ours.count, count_sq)
    assert ours.directed == (method == "knn")
    r = np.corrcoef(ours.zscore.ravel(), z_sq.ravel())[0, 1]
    assert r > 0.999, r
    assert np.abs(ours.zscore - z_sq).max() < 0.1 * np.abs(ours.zscore).max()


def test_stratified_zscores_match_squidpy_library_key() -> None:
    adata = _tissue(n=3000, n_fov=3, seed=1)
    spatial_neighbors(adata, radius=30.0)  # per FOV
    ours = colocalization(adata, inplace=False)
    z_sq, count_sq = _squidpy(adata, library_key="fov")
    np.testing.assert_array_equal(ours.count, count_sq)
    assert np.corrcoef(ours.zscore.ravel(), z_sq.ravel())[0, 1] > 0.999


def test_squidpy_plot_draws_our_stored_result(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adata = _tissue(n=800)
    spatial_neighbors(adata, radius=40.0)
    colocalization(adata, n_perms=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sq.pl.nhood_enrichment(adata, cluster_key="cell_type", save=None)
        sq.pl.nhood_enrichment(adata, cluster_key="cell_type", mode="count")
    fig = plt.gcf()
    fig.savefig(tmp_path / "nhood.png")
    assert (tmp_path / "nhood.png").stat().st_size > 1000
    plt.close("all")
