from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics.spatial import niche_composition, niche_table, niches, spatial_neighbors


def _adata(n: int = 200, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    coords = rng.random((n, 2)) * 300
    cats = ["tumour", "T cell", "B cell"]  # not alphabetical: ties must follow category order
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(rng.choice(cats, n), categories=cats)}, index=[f"cell{i}" for i in range(n)]
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    return adata


def _brute_force(graph: sp.csr_matrix, labels: np.ndarray, cats: list[str], include_self: bool):
    n = graph.shape[0]
    frac = np.zeros((n, len(cats)))
    n_nb = np.zeros(n, dtype=int)
    niche = []
    for i in range(n):
        neighbours = list(graph[i].indices)
        if include_self:
            neighbours.append(i)
        counts = [sum(labels[j] == c for j in neighbours) for c in cats]
        n_nb[i] = len(neighbours)
        if neighbours:
            frac[i] = np.array(counts) / len(neighbours)
            best = max(counts)
            niche.append(next(c for c, k in zip(cats, counts, strict=True) if k == best))
        else:
            niche.append("isolated")
    return frac, n_nb, niche


@pytest.mark.parametrize("method", ["radius", "knn"])
@pytest.mark.parametrize("include_self", [False, True])
def test_composition_equals_brute_force(method, include_self):
    adata = _adata()
    spatial_neighbors(adata, method=method, radius=25.0, n_neighbors=4)
    niche_composition(adata, include_self=include_self)
    cats = list(adata.obs["cell_type"].cat.categories)
    frac, n_nb, niche = _brute_force(
        adata.obsp["spatial_connectivities"], adata.obs["cell_type"].astype(str).to_numpy(), cats, include_self
    )
    comp = adata.obsm["niche_composition"]
    assert comp.dtype == np.float32
    assert comp.shape == (200, 3)
    np.testing.assert_allclose(comp, frac, atol=1e-6)
    np.testing.assert_array_equal(adata.obs["n_neighbors"], n_nb)
    assert adata.obs["niche_type"].astype(str).tolist() == niche
    sums = comp.sum(axis=1)
    np.testing.assert_allclose(sums[n_nb > 0], 1.0, atol=1e-6)
    assert adata.uns["niche_composition"]["categories"] == cats
    assert adata.uns["niche_composition"]["params"]["include_self"] is include_self
    if method == "radius" and not include_self:
        assert (n_nb == 0).any()  # this radius leaves some cells isolated, exercised above


def test_ties_go_to_lowest_category_and_isolated_cells_are_marked():
    cats = ["tumour", "T cell", "B cell"]
    labels = pd.Categorical(["B cell", "T cell", "tumour", "B cell", "T cell"], categories=cats)
    adata = ad.AnnData(obs=pd.DataFrame({"cell_type": labels}, index=list("abcde")))
    # a: neighbours b (T cell), d (B cell) -> tie T cell / B cell -> T cell (index 1 < 2)
    # b: neighbours a (B cell), c (tumour) -> tie -> tumour; c: neighbour b only -> T cell; e: isolated
    rows, cols = [0, 0, 1, 1, 2, 3], [1, 3, 0, 2, 1, 0]
    adata.obsp["spatial_connectivities"] = sp.csr_matrix((np.ones(6), (rows, cols)), shape=(5, 5))
    niche_composition(adata)
    assert adata.obs["niche_type"].tolist() == ["T cell", "tumour", "T cell", "B cell", "isolated"]
    assert list(adata.obs["niche_type"].cat.categories) == [*cats, "isolated"]
    np.testing.assert_array_equal(adata.obs["n_neighbors"], [2, 2, 1, 1, 0])
    np.testing.assert_array_equal(adata.obsm["niche_composition"][4], 0.0)
    np.testing.assert_allclose(adata.obsm["niche_composition"][0], [0.0, 0.5, 0.5])

    table = niche_table(adata)
    assert list(table.columns) == [
        "cell_id",
        "niche_type",
        "composition",
        "n_neighbors",
        "frac_tumour",
        "frac_T cell",
        "frac_B cell",
    ]
    assert table["cell_id"].tolist() == list("abcde")
    assert table["composition"].tolist() == [
        '{"T cell": 0.5, "B cell": 0.5}',
        '{"tumour": 0.5, "B cell": 0.5}',
        '{"T cell": 1.0}',
        '{"B cell": 1.0}',
        "{}",
    ]
    assert json.loads(table["composition"][0]) == {"T cell": 0.5, "B cell": 0.5}
    assert table["n_neighbors"].tolist() == [2, 2, 1, 1, 0]


def test_composition_json_rounds_to_four_decimals():
    adata = _adata(n=4)
    adata.obs["cell_type"] = pd.Categorical(
        ["tumour", "T cell", "T cell", "B cell"], categories=["tumour", "T cell", "B cell"]
    )
    adata.obsp["spatial_connectivities"] = sp.csr_matrix(
        np.array([[0, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    )
    table = niche_composition(adata, inplace=False)
    assert table["composition"][0] == '{"T cell": 0.6667, "B cell": 0.3333}'
    assert "niche_composition" not in adata.obsm  # inplace=False leaves the container untouched
    odd = 'a "quoted"\nname'
    adata.obs["cell_type"] = pd.Categorical(["tumour", odd, odd, "B cell"], categories=["tumour", odd, "B cell"])
    table = niche_composition(adata, inplace=False)
    assert json.loads(table["composition"][0]) == {odd: 0.6667, "B cell": 0.3333}
    assert [json.loads(c) for c in table["composition"][1:]] == [{"tumour": 1.0}] * 3


def test_unlabelled_neighbours_are_not_counted():
    adata = _adata(n=3)
    adata.obs["cell_type"] = pd.Categorical(["tumour", None, "B cell"], categories=["tumour", "T cell", "B cell"])
    adata.obsp["spatial_connectivities"] = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]))
    niche_composition(adata)
    np.testing.assert_allclose(adata.obsm["niche_composition"][0], [0, 0, 1])
    np.testing.assert_array_equal(adata.obs["n_neighbors"], [1, 2, 1])


def test_niches_recover_planted_neighbourhoods():
    # left half: mixed tumour/T cell; right half: B cell follicle; k-means with 2 niches must split them
    rng = np.random.default_rng(3)
    n = 600
    coords = rng.random((n, 2)) * [600.0, 300.0]
    left = coords[:, 0] < 300
    labels = np.where(left, rng.choice(["tumour", "T cell"], n), "B cell")
    cats = ["tumour", "T cell", "B cell"]
    adata = ad.AnnData(
        obs=pd.DataFrame({"cell_type": pd.Categorical(labels, categories=cats)}, index=[f"c{i}" for i in range(n)])
    )
    adata.obsm["spatial"] = coords
    adata.obsm["spatial"][0] = [5000.0, 5000.0]  # one isolated cell
    spatial_neighbors(adata, radius=40.0)
    niches(adata, n_niches=2, seed=0)
    niche = adata.obs["niche"]
    assert niche.iloc[0] == "isolated"
    inner = (coords[:, 0] < 260) | (coords[:, 0] > 340)
    inner[0] = False
    assert pd.crosstab(niche[inner].astype(str), left[inner]).to_numpy().max(axis=0).sum() == inner.sum()
    assert list(niche.cat.categories) == ["0", "1", "isolated"]
    sizes = niche.value_counts()
    assert sizes["0"] >= sizes["1"]
    centroids = adata.uns["niche"]["centroids"]
    assert centroids.shape == (2, 3)
    first = niche.to_numpy().copy()
    niches(adata, n_niches=2, seed=0)
    np.testing.assert_array_equal(adata.obs["niche"].to_numpy(), first)
    with pytest.raises(InputError, match="n_niches=1000 is more than"):
        niches(adata, n_niches=1000)


def test_niches_computes_missing_composition_and_errors():
    adata = _adata(n=100)
    with pytest.raises(InputError, match="run smo.spatial.niche_composition"):
        niche_table(adata)
    with pytest.raises(InputError, match="run smo.spatial.spatial_neighbors"):
        niche_composition(adata)
    spatial_neighbors(adata, radius=60.0)
    niches(adata, n_niches=3)
    assert "niche_composition" in adata.obsm
    assert adata.obs["niche"].nunique() == 3
    with pytest.raises(InputError, match="run smo.spatial.niche_composition"):
        niche_table(adata, label_key="other")


def test_on_mudata():
    import mudata as md

    adata = _adata(n=80)
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(
            {"rna": ad.AnnData(np.ones((80, 2), dtype=np.float32), obs=pd.DataFrame(index=adata.obs_names))}
        )
    mdata.obs["cell_type"] = adata.obs["cell_type"]
    mdata.obsm["spatial"] = adata.obsm["spatial"]
    spatial_neighbors(mdata, radius=50.0)
    niche_composition(mdata)
    table = niche_table(mdata)
    assert len(table) == 80
    assert table["cell_id"].tolist() == list(mdata.obs_names)
    assert "niche" not in table.columns
    niches(mdata, n_niches=3, seed=0)
    table = niche_table(mdata)
    assert list(table.columns[:5]) == ["cell_id", "niche_type", "composition", "n_neighbors", "niche"]
    assert table["niche"].tolist() == mdata.obs["niche"].tolist()


def test_composition_in_small_edge_blocks_equals_one_block(monkeypatch):
    import spatialmultiomics.spatial._graph as graph_module

    adata = _adata(n=300, seed=4)
    spatial_neighbors(adata, method="knn", n_neighbors=5)
    niche_composition(adata)
    ref = adata.obsm["niche_composition"].copy()
    monkeypatch.setattr(graph_module, "_EDGE_CHUNK", 7)  # many blocks, rows never split
    niche_composition(adata)
    np.testing.assert_array_equal(adata.obsm["niche_composition"], ref)


def test_niches_with_fewer_distinct_compositions_than_n_niches_warns_and_lowers_k():
    from spatialmultiomics._warnings import SpatialMultiOmicsWarning

    adata = _adata(n=120, seed=5)
    adata.obs["cell_type"] = pd.Categorical(["tumour"] * 120)
    spatial_neighbors(adata, radius=60.0)
    with pytest.warns(SpatialMultiOmicsWarning, match="only 1 distinct composition vectors"):
        niches(adata, n_niches=4)
    has = adata.obs["n_neighbors"].to_numpy() > 0
    assert set(adata.obs["niche"][has]) == {"0"}
    assert adata.uns["niche"]["centroids"].shape == (1, 1)
