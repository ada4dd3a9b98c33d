"""annotate(method='cluster'): clustering, naming through the lineage hierarchy, per-cell overrides."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics._errors import InputError
from spatialmultiomics._mudata import make_mudata
from spatialmultiomics.annotate import _by_cluster
from spatialmultiomics.annotate._by_cluster import MIN_BETWEEN_SHARE, MIN_CLUSTER_CELLS, between_cluster_share
from spatialmultiomics.annotate._cluster import RESOLUTION_GRID, _igraph, _modality_blocks, joint_embedding, snn_graph

pytest.importorskip("leidenalg")
pytest.importorskip("igraph")

CHANNELS = ["CD45", "CD3", "CD4", "CD8", "PanCK", "aSMA", "CD20"]
#: planted populations: the channels each is positive for
POPULATIONS = {
    "CD4 T": {"CD45", "CD3", "CD4"},
    "CD8 T": {"CD45", "CD3", "CD8"},
    "Epithelial": {"PanCK"},
    "Smooth muscle": {"aSMA"},
    "CD45 only": {"CD45"},
}
#: the name each planted population must get from the built-in (hierarchical) reference
EXPECTED = {
    "CD4 T": "CD4 T cells",  # FOXP3 is not in the panel: not Tregs
    "CD8 T": "CD8 T cells",
    "Epithelial": "Epithelial",
    "Smooth muscle": "Smooth muscle",
    "CD45 only": "Immune cells",  # CD45 but no lineage marker
}


def _planted(populations=POPULATIONS, channels=CHANNELS, n_per=250, seed=0, uniform="CD20"):
    """Protein-only MuData: background gamma(2, 2) everywhere, +N(60, 10) on each population's channels.

    ``uniform`` is drawn U(0, 50) for every cell (no population differs in it).
    """
    rng = np.random.default_rng(seed)
    blocks, truth = [], []
    for name, on in populations.items():
        X = rng.gamma(2.0, 2.0, (n_per, len(channels)))
        for j, c in enumerate(channels):
            if c in on:
                X[:, j] += rng.normal(60.0, 10.0, n_per).clip(20.0)
        blocks.append(X)
        truth += [name] * n_per
    X = np.vstack(blocks).astype(np.float32)
    if uniform is not None:
        X[:, channels.index(uniform)] = rng.uniform(0.0, 50.0, X.shape[0])
    adata = ad.AnnData(X)
    adata.var_names = channels
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    mdata = make_mudata({"protein": adata})
    smo.pp.preprocess(mdata)
    if uniform is not None:
        # the uniform channel is left out of the embedding: kept in, it is a dimension of pure noise as wide as
        # the lineage channels after scaling, and Leiden splits the populations along it (see the report)
        mdata["protein"].var["highly_variable"] = [c != uniform for c in channels]
    return mdata, np.array(truth)


@pytest.fixture(scope="module")
def planted():
    mdata, truth = _planted()
    result = smo.annotate.annotate(mdata, method="cluster", inplace=False)
    return mdata, truth, result


# ---------------------------------------------------------------- synthetic tissue


@pytest.fixture(scope="module")
def tissue():
    mdata = smo.datasets.synthetic_tissue(n_cells=3000, seed=1)
    smo.pp.preprocess(mdata)
    return mdata


def test_tissue_reaches_high_macro_f1_with_every_type(tissue):
    from sklearn.metrics import f1_score

    res = smo.annotate.annotate(tissue, method="cluster", markers=tissue.uns["markers"], inplace=False)
    truth = tissue.obs["true_cell_type"].astype(str).to_numpy()
    calls = res.cell_type.astype(str).to_numpy()
    # measured: macro-F1 0.9926 (seed 1, 3,000 cells; 19 clusters at resolution 2; lowest type Tregs, F1 0.942).
    # synthetic_tissue(n_cells=3000, seed=0) gives 0.905 with Tregs never predicted (see the xfail test below)
    assert f1_score(truth, calls, average="macro") >= 0.98
    assert set(calls) == set(truth)
    params = res.params["clustering"]
    assert params["resolution"] == 2.0 and params["n_clusters"] >= len(set(truth))
    assert res.params["method"] == "cluster"
    assert np.all((res.confidence >= 0) & (res.confidence <= 1))


def test_tissue_seed0_reaches_the_same_bar():
    # measured 0.983 (0.905 before the sub-clustering on the reference's markers, which finds the Tregs that
    # Leiden left inside the CD4 T cells)
    from sklearn.metrics import f1_score

    mdata = smo.datasets.synthetic_tissue(n_cells=3000, seed=0)
    smo.pp.preprocess(mdata)
    res = smo.annotate.annotate(mdata, method="cluster", markers=mdata.uns["markers"], inplace=False)
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    calls = res.cell_type.astype(str).to_numpy()
    assert set(calls) == set(truth)
    assert f1_score(truth, calls, average="macro") >= 0.97


# ---------------------------------------------------------------- informative markers


def _brute_epsilon_squared(v: np.ndarray, labels: np.ndarray) -> float:
    groups = [v[labels == c] for c in np.unique(labels)]
    n, k = v.size, len(groups)
    grand = v.mean()
    ss_total = sum(((v - grand) ** 2).tolist())
    ss_between = sum(g.size * (g.mean() - grand) ** 2 for g in groups)
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    return (ss_between - (k - 1) * ss_within / (n - k)) / ss_total


def test_between_cluster_share_is_epsilon_squared():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    V = np.column_stack(
        [
            rng.normal(size=400),  # noise: about 0
            labels * 2.0 + rng.normal(size=400),  # mostly between
            np.where(labels == 3, 5.0, 0.0),  # all between: 1
            np.full(400, 2.0),  # constant: 0
        ]
    )
    share = between_cluster_share(V, labels)
    expected = [_brute_epsilon_squared(V[:, j], labels) for j in range(3)]
    np.testing.assert_allclose(share[:3], expected, rtol=1e-10)
    assert abs(share[0]) < 0.02 and share[1] > 0.8 and share[2] == pytest.approx(1.0)
    assert share[3] == 0.0
    # eta squared of noise grows with the number of groups (about (k - 1) / (n - 1) = 0.25 here); epsilon squared
    # removes that share
    many = np.unique(rng.integers(0, 100, 400), return_inverse=True)[1]  # contiguous labels, as Leiden gives
    eps = between_cluster_share(V[:, :1], many)[0]
    assert eps == pytest.approx(_brute_epsilon_squared(V[:, 0], many), rel=1e-10)
    sizes = np.bincount(many)
    means = np.bincount(many, weights=V[:, 0]) / np.maximum(sizes, 1)
    eta = (sizes * (means - V[:, 0].mean()) ** 2).sum() / ((V[:, 0] - V[:, 0].mean()) ** 2).sum()
    assert eta > 0.2 and abs(eps) < 0.1 < eta - eps
    assert MIN_BETWEEN_SHARE == 0.05


# ---------------------------------------------------------------- built-in reference on a planted protein panel


def test_builtin_hierarchy_names_the_planted_populations(planted):
    _, truth, res = planted
    calls = res.cell_type.astype(str).to_numpy()
    table = pd.crosstab(truth, calls)
    for pop, name in EXPECTED.items():
        agree = float(np.mean(calls[truth == pop] == name))
        assert agree >= 0.99, (pop, name, table.loc[pop].to_dict())
    assert "Tregs" not in set(calls) and "Unknown" not in set(calls)
    params = res.params
    assert "Tregs" in params["types_dropped"]  # no FOXP3 / CD25 in the panel
    assert {"Immune cells", "T cells", "CD4 T cells", "CD8 T cells", "Epithelial"} <= set(params["types_used"])
    # the uniform channel is a marker (of B cells) but differs between no clusters: set aside
    assert params["clustering"]["uninformative_markers"] == ["CD20"]
    assert set(params["clustering"]["gates"]) == set(CHANNELS)
    assert np.all((res.confidence >= 0) & (res.confidence <= 1))
    assert list(res.cell_scores.columns) == params["types_used"]


def test_auto_resolution_records_the_rule(planted):
    _, _, res = planted
    params = res.params["clustering"]
    assert params["resolution_requested"] == "auto"
    assert params["resolution"] in RESOLUTION_GRID
    assert params["resolution_grid"] == list(RESOLUTION_GRID)
    assert "finest resolution" in params["resolution_rule"] and str(MIN_CLUSTER_CELLS) in params["resolution_rule"]
    covered, n_clusters = params["cells_in_nameable_clusters"][f"{params['resolution']:g}"]
    assert covered >= 0.95 and n_clusters >= len(POPULATIONS)


def test_auto_resolution_is_the_finest_grid_value_with_large_enough_clusters():
    # 300 cells: at the finest resolutions many clusters have fewer than 30 cells, so 'auto' must go coarser
    mdata, _ = _planted(n_per=60, seed=3)
    res = smo.annotate.annotate(mdata, method="cluster", inplace=False, seed=0)
    params = res.params["clustering"]
    # the same embedding, graph and partitions, scanned by hand
    E = joint_embedding(_modality_blocks(mdata), seed=0)
    g = _igraph(snn_graph(E, n_neighbors=15))
    scanned, chosen = {}, None
    for r in sorted(RESOLUTION_GRID, reverse=True):
        sizes = np.bincount(_by_cluster.leiden(g, resolution=r, seed=0))
        covered = sizes[sizes >= MIN_CLUSTER_CELLS].sum() / sizes.sum()
        scanned[f"{r:g}"] = [round(float(covered), 4), int(sizes.size)]
        chosen = r
        if covered >= 0.95:
            break
    assert chosen < max(RESOLUTION_GRID)  # the case this test is about
    assert params["resolution"] == chosen
    assert params["cells_in_nameable_clusters"] == scanned


def test_fixed_resolution_and_argument_errors():
    mdata, _ = _planted(n_per=60, seed=4)
    res = smo.annotate.annotate(mdata, method="cluster", resolution=0.3, inplace=False)
    params = res.params["clustering"]
    assert params["resolution"] == 0.3 and params["resolution_requested"] == 0.3
    assert params["resolution_rule"] == "given" and params["cells_in_nameable_clusters"] == {}
    for bad in ("fine", -1, 0, float("nan")):
        with pytest.raises(InputError, match="resolution"):
            smo.annotate.annotate(mdata, method="cluster", resolution=bad)
    with pytest.raises(InputError, match="n_neighbors"):
        smo.annotate.annotate(mdata, method="cluster", n_neighbors=1)
    assert "cell_type" not in mdata.obs
    raw = make_mudata({"protein": ad.AnnData(np.ones((50, 2), dtype=np.float32))})
    raw["protein"].var_names = ["CD45", "CD3"]
    with pytest.raises(InputError, match="preprocess"):
        smo.annotate.annotate(raw, method="cluster")


def test_inplace_slots_and_determinism(planted):
    _, _, first = planted
    mdata, _ = _planted()
    assert smo.annotate.annotate(mdata, method="cluster") is None
    obs = mdata.obs
    assert isinstance(obs["annotation_cluster"].dtype, pd.CategoricalDtype)
    assert obs["cell_type_overridden"].dtype == bool
    assert isinstance(obs["cell_type"].dtype, pd.CategoricalDtype)
    # the same seed on the same data: the same clusters, calls and confidences
    np.testing.assert_array_equal(obs["cell_type"].astype(str).to_numpy(), first.cell_type.astype(str).to_numpy())
    np.testing.assert_array_equal(obs["cell_type_confidence"].to_numpy(), first.confidence)
    stored = mdata.uns["annotation"]
    assert stored["params"]["clustering"] == first.params["clustering"]
    clusters = stored["clusters"]
    assert clusters["cluster"] == list(range(len(clusters["cluster"])))
    assert sum(clusters["n_cells"]) == mdata.n_obs
    # each cell's cluster is a row of the cluster table, which carries its size and name
    codes = obs["annotation_cluster"].astype(int).to_numpy()
    np.testing.assert_array_equal(np.bincount(codes), clusters["n_cells"])
    named = np.array(clusters["cell_type"], dtype=object)[codes]
    not_over = ~obs["cell_type_overridden"].to_numpy()
    np.testing.assert_array_equal(named[not_over], obs["cell_type"].astype(str).to_numpy()[not_over])


# ---------------------------------------------------------------- per-cell overrides

OVERRIDE_CHANNELS = ["CD45", "CD3", "CD4", "CD8", "PanCK", "aSMA"]


def _contradicted(fourth: dict[str, set[str]], monkeypatch):
    """Planted panel clustered as planted (Leiden replaced), with five PanCK+ only and five aSMA+ only cells put in
    the CD8 T cluster. Returns the data, the truth, and the two groups of planted cells."""
    pops = {"CD4 T": {"CD45", "CD3", "CD4"}, "CD8 T": {"CD45", "CD3", "CD8"}, "Epithelial": {"PanCK"}, **fourth}
    mdata, truth = _planted(pops, OVERRIDE_CHANNELS, n_per=200, seed=5, uniform=None)
    X = mdata["protein"].layers["preprocessed"]
    cd8 = np.flatnonzero(truth == "CD8 T")
    epi_like, sm_like = cd8[:5], cd8[5:10]
    X[np.r_[epi_like, sm_like]] = 0.05
    X[epi_like, OVERRIDE_CHANNELS.index("PanCK")] = 1.0
    X[sm_like, OVERRIDE_CHANNELS.index("aSMA")] = 1.0
    planted_labels = pd.Categorical(truth, categories=list(pops)).codes.astype(np.int64)

    def planted_leiden(g, **_):
        # the planted partition for the whole graph; any subgraph (re-clustering a cluster) is left whole
        n_nodes = g.shape[0] if sp.issparse(g) else g.vcount()
        return planted_labels.copy() if n_nodes == planted_labels.size else np.zeros(n_nodes, dtype=np.int64)

    monkeypatch.setattr(_by_cluster, "leiden", planted_leiden)
    return mdata, truth, epi_like, sm_like


def test_overrides_flip_contradicting_cells_only_to_types_that_name_a_cluster(monkeypatch):
    # aSMA+ T cells (named CD4 T cells): aSMA differs between clusters but no cluster is smooth muscle
    mdata, truth, epi_like, sm_like = _contradicted({"aSMA T": {"CD45", "CD3", "CD4", "aSMA"}}, monkeypatch)
    res = smo.annotate.annotate(mdata, method="cluster", resolution=1.0, inplace=False)
    calls = res.cell_type.astype(str).to_numpy()
    # the epithelial cells take their own type (a population of the sample), nothing else moves
    assert set(calls[epi_like]) == {"Epithelial"}
    assert calls[sm_like].tolist() == ["CD8 T cells"] * 5  # smooth muscle names no cluster: no override
    rest = np.setdiff1d(np.arange(mdata.n_obs), epi_like)
    expected = {"CD4 T": "CD4 T cells", "CD8 T": "CD8 T cells", "Epithelial": "Epithelial", "aSMA T": "CD4 T cells"}
    np.testing.assert_array_equal(calls[rest], [expected[t] for t in truth[rest]])
    assert res.params["clustering"]["n_overridden"] == 5
    assert np.all(res.confidence[epi_like] >= 0.8)  # the confidence of an overridden cell is its own evidence
    smo.annotate.annotate(mdata, method="cluster", resolution=1.0)
    np.testing.assert_array_equal(np.flatnonzero(mdata.obs["cell_type_overridden"].to_numpy()), epi_like)

    # without overrides every cell keeps its cluster's name
    res = smo.annotate.annotate(mdata, method="cluster", resolution=1.0, override=False, inplace=False)
    assert set(res.cell_type.astype(str).to_numpy()[epi_like]) == {"CD8 T cells"}
    assert res.params["clustering"]["n_overridden"] == 0 and res.params["clustering"]["override"] is False


def test_overrides_to_a_type_that_names_a_cluster(monkeypatch):
    # the same cells, but now smooth muscle is a population of the sample: the aSMA+ cells flip too
    mdata, _, epi_like, sm_like = _contradicted({"Smooth muscle": {"aSMA"}}, monkeypatch)
    res = smo.annotate.annotate(mdata, method="cluster", resolution=1.0, inplace=False)
    calls = res.cell_type.astype(str).to_numpy()
    assert set(calls[epi_like]) == {"Epithelial"} and set(calls[sm_like]) == {"Smooth muscle"}
    assert res.params["clustering"]["n_overridden"] == 10


# ---------------------------------------------------------------- known problems (strict: they fail once fixed)


def test_missing_intermediate_level_is_passed_through():
    pops = {"CD4 T": {"CD45", "CD4"}, "CD8 T": {"CD45", "CD8"}, "CD45- CD4+": {"CD4"}, "Epithelial": {"PanCK"}}
    mdata, truth = _planted(pops, ["CD45", "CD4", "CD8", "PanCK"], n_per=200, seed=0, uniform=None)
    res = smo.annotate.annotate(mdata, method="cluster", inplace=False)
    calls = res.cell_type.astype(str).to_numpy()
    # measured: CD4 T -> 'Immune cells' (200/200), CD8 T -> 'Immune cells', CD45- CD4+ -> 'CD4 T cells' (200/200)
    assert np.mean(calls[truth == "CD45- CD4+"] == "CD4 T cells") < 0.05
    assert np.mean(calls[truth == "CD4 T"] == "CD4 T cells") > 0.95
    assert np.mean(calls[truth == "CD8 T"] == "CD8 T cells") > 0.95


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Otsu's threshold always cuts: on a channel no population carries (CD8 here) it splits the background "
    "noise, the over-clustered partition separates high- and low-noise cells, and CD4 T cells of the high half "
    "fail their CD8-negative gate",
)
def test_channel_without_a_positive_population_is_not_positive():
    pops = {"CD4 T": {"CD45", "CD3", "CD4"}, "CD45- CD4+": {"CD4"}, "Epithelial": {"PanCK"}}
    mdata, truth = _planted(pops, ["CD45", "CD3", "CD4", "CD8", "PanCK"], n_per=250, seed=0, uniform=None)
    res = smo.annotate.annotate(mdata, method="cluster", inplace=False)
    calls = res.cell_type.astype(str).to_numpy()
    # measured: 160 of 250 CD4 T cells 'CD4 T cells', 90 'T cells'
    assert np.mean(calls[truth == "CD4 T"] == "CD4 T cells") > 0.95
