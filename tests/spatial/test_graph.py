from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import Delaunay
from scipy.spatial.distance import cdist

from spatialmultiomics._errors import InputError
from spatialmultiomics.spatial import delaunay_graph, knn_graph, radius_graph, spatial_neighbors


def _two_fov_points(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two FOVs on top of each other (same coordinate range), so any cross-FOV edge would be found."""
    rng = np.random.default_rng(seed)
    coords = rng.random((n, 2)) * 200.0
    fov = np.where(rng.random(n) < 0.45, "fovA", "fovB")
    return coords, fov


def _check_structure(conn: sp.csr_matrix, dist: sp.csr_matrix, coords: np.ndarray) -> None:
    assert conn.dtype == np.float32
    assert dist.dtype == np.float32
    assert conn.format == "csr"
    assert dist.format == "csr"
    np.testing.assert_array_equal(conn.indptr, dist.indptr)
    np.testing.assert_array_equal(conn.indices, dist.indices)
    np.testing.assert_array_equal(conn.data, 1.0)
    assert conn.diagonal().sum() == 0
    rows = np.repeat(np.arange(conn.shape[0]), np.diff(conn.indptr))
    true_d = np.linalg.norm(coords[rows] - coords[conn.indices], axis=1)
    np.testing.assert_allclose(dist.data, true_d, rtol=1e-6, atol=1e-4)


def test_radius_graph_equals_brute_force_with_two_fovs():
    coords, fov = _two_fov_points()
    radius = 18.0
    conn, dist = radius_graph(coords, radius, fov=fov)
    d = cdist(coords, coords)
    expected = (d <= radius) & (fov[:, None] == fov[None, :])
    np.fill_diagonal(expected, False)
    np.testing.assert_array_equal(conn.toarray() > 0, expected)
    _check_structure(conn, dist, coords)
    assert (conn != conn.T).nnz == 0
    # the FOVs overlap in space: without the FOV labels there are more (cross-FOV) edges
    conn_all, _ = radius_graph(coords, radius)
    assert conn_all.nnz > conn.nnz
    rows = np.repeat(np.arange(len(fov)), np.diff(conn.indptr))
    assert np.all(fov[rows] == fov[conn.indices])


def test_radius_is_inclusive_and_keeps_zero_length_edges():
    coords = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 0.0], [20.0, 20.0]])
    conn, dist = radius_graph(coords, 5.0)
    assert conn[0, 1] == 1
    assert dist[0, 1] == 5.0
    assert conn[2, 3] == 1  # duplicated points are neighbours at distance 0
    assert dist.nnz == conn.nnz == 4
    assert conn[4].nnz == 0


def test_knn_graph_equals_brute_force():
    coords, fov = _two_fov_points(n=200, seed=1)
    k = 5
    conn, dist = knn_graph(coords, k, fov=fov)
    _check_structure(conn, dist, coords)
    d = cdist(coords, coords)
    d[fov[:, None] != fov[None, :]] = np.inf
    np.fill_diagonal(d, np.inf)
    expected = np.zeros_like(d, dtype=bool)
    nearest = np.argsort(d, axis=1)[:, :k]
    expected[np.repeat(np.arange(len(d)), k), nearest.ravel()] = True
    np.testing.assert_array_equal(conn.toarray() > 0, expected)
    np.testing.assert_array_equal(np.diff(conn.indptr), k)
    assert (conn != conn.T).nnz > 0  # directed


def test_knn_graph_small_fovs():
    coords = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [6.0, 5.0], [7.0, 5.0], [100.0, 100.0]])
    fov = np.array([0, 0, 1, 1, 1, 2])
    conn, _ = knn_graph(coords, 6, fov=fov)
    # FOVs with <= k cells: everyone joined to all other cells of the FOV; a lone cell gets no edge
    np.testing.assert_array_equal(np.diff(conn.indptr), [1, 1, 2, 2, 2, 0])
    dense = conn.toarray()
    assert dense[0, 1] == dense[1, 0] == 1
    assert dense[:2, 2:].sum() == 0


def test_knn_graph_with_duplicated_points_has_no_self_loop():
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    conn, _ = knn_graph(coords, 2)
    assert conn.diagonal().sum() == 0
    np.testing.assert_array_equal(np.diff(conn.indptr), 2)


def test_delaunay_graph_matches_scipy_and_respects_fovs():
    coords, fov = _two_fov_points(n=150, seed=2)
    conn, dist = delaunay_graph(coords, fov=fov)
    _check_structure(conn, dist, coords)
    assert (conn != conn.T).nnz == 0
    expected = np.zeros((150, 150), dtype=bool)
    for f in np.unique(fov):
        idx = np.flatnonzero(fov == f)
        for simplex in Delaunay(coords[idx]).simplices:
            for a in range(3):
                for b in range(3):
                    if a != b:
                        expected[idx[simplex[a]], idx[simplex[b]]] = True
    np.testing.assert_array_equal(conn.toarray() > 0, expected)
    pruned, pruned_d = delaunay_graph(coords, fov=fov, max_distance=15.0)
    np.testing.assert_array_equal(pruned.toarray() > 0, expected & (cdist(coords, coords) <= 15.0))
    assert pruned_d.data.max() <= 15.0


def test_delaunay_graph_degenerate_fovs():
    # collinear FOV -> chain; two-cell FOV -> one edge; one-cell FOV -> nothing
    coords = np.array([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0], [3.0, 3.0], [50.0, 50.0], [51.0, 50.0], [80.0, 80.0]])
    fov = np.array([0, 0, 0, 0, 1, 1, 2])
    conn, _ = delaunay_graph(coords, fov=fov)
    edges = {tuple(e) for e in np.argwhere(conn.toarray() > 0)}
    chain = {(0, 2), (2, 1), (1, 3)}
    expected = chain | {(b, a) for a, b in chain} | {(4, 5), (5, 4)}
    assert edges == expected


def _adata(coords: np.ndarray, obs: pd.DataFrame | None = None) -> ad.AnnData:
    adata = ad.AnnData(obs=obs if obs is not None else pd.DataFrame(index=[f"c{i}" for i in range(len(coords))]))
    adata.obsm["spatial"] = coords
    return adata


def test_spatial_neighbors_writes_slots_and_uses_fov_column():
    coords, fov = _two_fov_points(n=120, seed=3)
    adata = _adata(coords, pd.DataFrame({"fov": fov}, index=[f"c{i}" for i in range(120)]))
    spatial_neighbors(adata, radius=20.0)
    conn = adata.obsp["spatial_connectivities"]
    expected, _ = radius_graph(coords, 20.0, fov=fov)
    assert (conn != expected).nnz == 0
    assert adata.obsp["spatial_distances"].nnz == conn.nnz
    info = adata.uns["spatial_neighbors"]
    assert info["directed"] is False
    assert info["params"]["method"] == "radius"
    assert info["params"]["radius"] == 20.0
    assert info["params"]["fov_key"] == "fov"
    assert info["connectivities_key"] == "spatial_connectivities"

    spatial_neighbors(adata, method="KNN", n_neighbors=3, key_added="knn")
    assert adata.uns["knn_neighbors"]["directed"] is True
    np.testing.assert_array_equal(np.diff(adata.obsp["knn_connectivities"].indptr), 3)

    spatial_neighbors(adata, method="knn", n_neighbors=3, max_distance=10.0, key_added="knn10")
    assert adata.obsp["knn10_distances"].data.max() <= 10.0
    assert adata.obsp["knn10_connectivities"].nnz < adata.obsp["knn_connectivities"].nnz

    spatial_neighbors(adata, method="delaunay", key_added="del")
    assert (adata.obsp["del_connectivities"] != delaunay_graph(coords, fov=fov)[0]).nnz == 0


def test_spatial_neighbors_without_fov_column_and_on_mudata():
    import mudata as md

    coords, _ = _two_fov_points(n=80, seed=4)
    names = [f"c{i}" for i in range(80)]
    rna = ad.AnnData(np.ones((80, 2), dtype=np.float32), obs=pd.DataFrame(index=names))
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna})
    mdata.obsm["spatial"] = coords
    spatial_neighbors(mdata, radius=25.0, fov_key="no_such_column")
    expected, _ = radius_graph(coords, 25.0)
    assert (mdata.obsp["spatial_connectivities"] != expected).nnz == 0
    assert mdata.uns["spatial_neighbors"]["params"]["fov_key"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": 0.0}, "radius must be a finite number > 0"),
        ({"radius": -5}, "radius must be a finite number > 0"),
        ({"method": "voronoi"}, "method must be one of"),
        ({"method": "knn", "n_neighbors": 0}, "n_neighbors must be an integer >= 1"),
        ({"method": "delaunay", "max_distance": -1.0}, "max_distance must be a finite number > 0"),
    ],
)
def test_spatial_neighbors_bad_arguments(kwargs, match):
    adata = _adata(np.random.default_rng(0).random((10, 2)))
    with pytest.raises(InputError, match=match):
        spatial_neighbors(adata, **kwargs)


def test_spatial_neighbors_bad_coordinates():
    adata = ad.AnnData(obs=pd.DataFrame(index=["a", "b", "c"]))
    with pytest.raises(InputError, match=r"obsm\['spatial'\] is missing"):
        spatial_neighbors(adata)
    adata.obsm["spatial"] = np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]])
    with pytest.raises(InputError, match="1 cells with NaN or infinite coordinates"):
        spatial_neighbors(adata)
    with pytest.raises(InputError, match=r"shape \(n_cells, 2\)"):
        radius_graph(np.zeros(5), 1.0)
