"""Join counts on Dask tiles with a halo add up to the counts of the whole radius graph."""

from __future__ import annotations

import numpy as np
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.spatial import colocalization_tiled, join_counts_tiled, radius_graph

distributed = pytest.importorskip("distributed")


def _section(seed: int = 0, n: int = 2500):
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * [900.0, 600.0]
    labels = np.where(xy[:, 0] < 300, rng.integers(0, 2, n), rng.integers(1, 4, n))  # spatial structure
    xy[:5] = xy[5]  # duplicated positions (distance 0) are still edges
    fov = np.where(xy[:, 1] > 400, "b", "a")
    return xy, labels, fov


@pytest.mark.parametrize("tile_size", [40.0, 130.0, 5000.0])
def test_tiles_add_up_to_the_whole_graph(client, tile_size: float) -> None:
    xy, labels, fov = _section()
    conn, _ = radius_graph(xy, 40.0, fov=fov)
    rows = np.repeat(np.arange(xy.shape[0]), np.diff(conn.indptr))
    expected = np.zeros((4, 4))
    np.add.at(expected, (labels[rows], labels[conn.indices]), 1)
    neighbours = np.zeros((xy.shape[0], 4), dtype=np.int64)
    np.add.at(neighbours, (rows, labels[conn.indices]), 1)
    tiled = join_counts_tiled(xy, labels, n_types=4, radius=40.0, tile_size=tile_size, fov=fov, neighbour_counts=True)
    np.testing.assert_array_equal(tiled.count, expected)
    np.testing.assert_array_equal(tiled.neighbour_counts, neighbours)
    degree = np.diff(conn.indptr).astype(float)
    f = (fov == "b").astype(int)
    np.testing.assert_allclose(tiled.degree_sum, np.bincount(f, weights=degree))
    np.testing.assert_allclose(tiled.degree_sq_sum, np.bincount(f, weights=degree**2))
    assert tiled.n_tiles > 1 or tile_size == 5000.0


def test_tiles_of_3d_coordinates_keep_every_edge() -> None:
    """Tiles are x/y squares through every z; their halos too (a halo cut at the owner's z lost 31 % of the edges)."""
    import dask

    rng = np.random.default_rng(0)
    xyz = rng.random((3000, 3)) * [600.0, 400.0, 300.0]
    labels = rng.integers(0, 3, 3000)
    conn, _ = radius_graph(xyz, 30.0)
    rows = np.repeat(np.arange(xyz.shape[0]), np.diff(conn.indptr))
    expected = np.zeros((3, 3))
    np.add.at(expected, (labels[rows], labels[conn.indices]), 1)
    with dask.config.set(scheduler="synchronous"):
        for tile_size in (40.0, 100.0):
            tiled = join_counts_tiled(xyz, labels, n_types=3, radius=30.0, tile_size=tile_size)
            np.testing.assert_array_equal(tiled.count, expected)
            assert tiled.n_tiles > 1


def test_colocalization_tiled_equals_the_graph_statistics(client) -> None:
    import anndata as ad
    import pandas as pd

    from spatialmultiomics.spatial import colocalization, spatial_neighbors

    xy, labels, fov = _section(1)
    adata = ad.AnnData(np.zeros((xy.shape[0], 1), dtype=np.float32))
    adata.obsm["spatial"] = xy
    adata.obs["cell_type"] = pd.Categorical([f"t{c}" for c in labels])
    adata.obs["fov"] = fov
    spatial_neighbors(adata, method="radius", radius=40.0, fov_key="fov")
    ref = colocalization(adata, label_key="cell_type", inplace=False)
    res = colocalization_tiled(xy, adata.obs["cell_type"], radius=40.0, tile_size=100.0, fov=fov)
    assert res.categories == ref.categories
    np.testing.assert_array_equal(res.count, ref.count)
    for name in ("expected_exact", "variance", "score", "zscore", "pvalue", "qvalue"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-10, equal_nan=True)


def test_tiled_input_errors(client) -> None:
    xy, labels, _ = _section()
    with pytest.raises(InputError, match="tile_size=10.0 must be at least radius=40.0"):
        join_counts_tiled(xy, labels, n_types=4, radius=40.0, tile_size=10.0)
    with pytest.raises(InputError, match=r"codes must be 2500 integers in \[0, 3\)"):
        join_counts_tiled(xy, labels, n_types=3, radius=40.0)
