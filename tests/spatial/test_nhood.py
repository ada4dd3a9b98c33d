from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import norm

from spatialmultiomics._errors import InputError
from spatialmultiomics.spatial import (
    ColocalizationResult,
    colocalization,
    colocalization_table,
    knn_graph,
    radius_graph,
    spatial_neighbors,
)
from spatialmultiomics.spatial._nhood import _graph_stats, _join_count_moments, _permuted_counts

# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def _labels(sizes_per_fov: list[list[int]], rng: np.random.Generator) -> np.ndarray:
    """Concatenated random label codes, FOV by FOV (cells of FOV f are contiguous)."""
    parts = [rng.permutation(np.repeat(np.arange(len(s)), s)) for s in sizes_per_fov]
    return np.concatenate(parts)


def _mc_counts(graph: sp.csr_matrix, codes: np.ndarray, fov: np.ndarray, n_types: int, n_perms: int, seed: int):
    """Vectorised Monte-Carlo join counts (n_perms, K, K) under within-FOV relabelling (fov sorted ascending)."""
    rng = np.random.default_rng(seed)
    n = codes.size
    order = np.argsort(fov + rng.random((n_perms, n)), axis=1)  # random order inside each (contiguous) FOV block
    lab = codes[order]
    rows = np.repeat(np.arange(n), np.diff(graph.indptr))
    key = np.arange(n_perms)[:, None] * n_types * n_types + lab[:, rows] * n_types + lab[:, graph.indices]
    return np.bincount(
        key.ravel(), weights=np.tile(graph.data, n_perms), minlength=n_perms * n_types * n_types
    ).reshape(n_perms, n_types, n_types)


def _assert_moments_match_mc(graph, codes, fov, n_types, n_perms=20_000, seed=0):
    counts = np.zeros((int(fov.max()) + 1, n_types))
    np.add.at(counts, (fov, codes), 1)
    mean, var = _join_count_moments(counts, _graph_stats(graph, fov, counts.shape[0]))
    mc = _mc_counts(graph, codes, fov, n_types, n_perms, seed)
    mc_mean = mc.mean(axis=0)
    mc_var = mc.var(axis=0, ddof=1)
    centred = mc - mc_mean
    se_mean = np.sqrt(mc_var / n_perms)
    se_var = np.sqrt(np.maximum((centred**4).mean(axis=0) - mc_var**2, 0) / n_perms)
    assert np.all(var > 0)
    assert np.all(np.abs(mc_mean - mean) <= 5 * se_mean + 1e-12), np.max(np.abs(mc_mean - mean) / se_mean)
    assert np.all(np.abs(mc_var - var) <= 5 * se_var + 1e-12), np.max(np.abs(mc_var - var) / se_var)
    assert np.all(np.abs(mc_var / var - 1) < 0.05)
    return mean, var


def _cliff_ord(graph: sp.csr_matrix, n_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook BB / BW join-count moments (Cliff & Ord 1981, non-free sampling), mapped to C = O.T A O."""
    w = graph.toarray()
    s0 = w.sum()
    s1 = 0.5 * ((w + w.T) ** 2).sum()
    s2 = ((w.sum(axis=1) + w.sum(axis=0)) ** 2).sum()
    n = n_cells.sum()

    def ff(x, r):
        return np.prod([x - t for t in range(r)])

    k = n_cells.size
    mean, var = np.zeros((k, k)), np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            na, nb = n_cells[a], n_cells[b]
            if a == b:  # BB join count = C[a, a] / 2
                e_bb = 0.5 * s0 * ff(na, 2) / ff(n, 2)
                v_bb = (
                    0.25
                    * (
                        s1 * ff(na, 2) / ff(n, 2)
                        + (s2 - 2 * s1) * ff(na, 3) / ff(n, 3)
                        + (s0**2 + s1 - s2) * ff(na, 4) / ff(n, 4)
                    )
                    - e_bb**2
                )
                mean[a, a], var[a, a] = 2 * e_bb, 4 * v_bb
            else:  # BW join count between colours a and b = C[a, b]
                e_bw = s0 * na * nb / ff(n, 2)
                v_bw = (
                    0.25
                    * (
                        2 * s1 * na * nb / ff(n, 2)
                        + (s2 - 2 * s1) * na * nb * (na + nb - 2) / ff(n, 3)
                        + 4 * (s0**2 + s1 - s2) * na * (na - 1) * nb * (nb - 1) / ff(n, 4)
                    )
                    - e_bw**2
                )
                mean[a, b], var[a, b] = e_bw, v_bw
    return mean, var


def _clustered_adata(n: int = 400, seed: int = 0, fov: bool = False) -> ad.AnnData:
    """Cells whose types depend on position (left: T/B, right: tumour/stroma), so types co-localize."""
    rng = np.random.default_rng(seed)
    coords = rng.random((n, 2)) * [400.0, 200.0]
    left = coords[:, 0] < 200
    types = np.where(left, rng.choice(["T", "B"], n, p=[0.7, 0.3]), rng.choice(["tumour", "stroma"], n, p=[0.6, 0.4]))
    obs = pd.DataFrame({"cell_type": pd.Categorical(types, categories=["T", "B", "tumour", "stroma"])})
    obs.index = [f"cell{i}" for i in range(n)]
    if fov:
        obs["fov"] = np.where(coords[:, 1] < 100, "f1", "f2")
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    return adata


# ----------------------------------------------------------------------------------------------------------------
# exact moments
# ----------------------------------------------------------------------------------------------------------------


def test_moments_match_monte_carlo_directed_knn_two_fovs():
    rng = np.random.default_rng(11)
    fov = np.repeat([0, 1], [26, 30])
    coords = rng.random((56, 2)) * 100
    graph, _ = knn_graph(coords, 4, fov=fov)
    graph = graph.astype(np.float64)
    assert (graph != graph.T).nnz > 0  # directed, with some reciprocal edges
    assert graph.multiply(graph.T).nnz > 0
    codes = _labels([[10, 9, 7], [6, 4, 20]], rng)
    _assert_moments_match_mc(graph, codes, fov, 3)


@pytest.mark.parametrize("two_fovs", [False, True])
def test_moments_match_monte_carlo_undirected_radius(two_fovs):
    rng = np.random.default_rng(12)
    coords = rng.random((48, 2)) * 100
    fov = np.repeat([0, 1], [20, 28]) if two_fovs else np.zeros(48, dtype=np.int64)
    graph, _ = radius_graph(coords, 22.0, fov=fov)
    graph = graph.astype(np.float64)
    sizes = [[6, 5, 5, 4], [9, 7, 8, 4]] if two_fovs else [[15, 12, 13, 8]]
    codes = _labels(sizes, rng)
    _assert_moments_match_mc(graph, codes, fov, 4)


def test_moments_match_monte_carlo_weighted_directed_graph():
    # the formulas are exact for any non-negative weights (the container uses 0/1)
    rng = np.random.default_rng(13)
    coords = rng.random((40, 2)) * 100
    graph, _ = knn_graph(coords, 3)
    graph = graph.astype(np.float64)
    graph.data = rng.random(graph.nnz) * 2 + 0.1
    codes = _labels([[14, 16, 10]], rng)
    _assert_moments_match_mc(graph, codes, np.zeros(40, dtype=np.int64), 3)


def test_undirected_moments_equal_classical_cliff_ord():
    rng = np.random.default_rng(14)
    coords = rng.random((90, 2)) * 100
    graph, _ = radius_graph(coords, 18.0)
    graph = graph.astype(np.float64)
    n_cells = np.array([30, 25, 20, 15])
    mean, var = _join_count_moments(n_cells[None, :], _graph_stats(graph, None, 1))
    ref_mean, ref_var = _cliff_ord(graph, n_cells)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-10)
    np.testing.assert_allclose(var, ref_var, rtol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# container
# ----------------------------------------------------------------------------------------------------------------


def test_observed_counts_equal_brute_force_and_uns_layout():
    adata = _clustered_adata(n=200)
    spatial_neighbors(adata, radius=30.0)
    colocalization(adata)
    res = adata.uns["cell_type_nhood_enrichment"]
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    graph = adata.obsp["spatial_connectivities"].tocoo()
    brute = np.zeros((4, 4))
    for i, j in zip(graph.row, graph.col, strict=True):
        brute[codes[i], codes[j]] += 1
    np.testing.assert_array_equal(res["count"], brute)
    np.testing.assert_array_equal(res["count"], res["count"].T)
    assert res["categories"] == ["T", "B", "tumour", "stroma"]
    for key in ("zscore", "count", "expected", "variance", "score", "pvalue", "qvalue", "expected_paper"):
        assert res[key].shape == (4, 4)
        assert res[key].dtype == np.float64
    assert res["directed"] is False
    assert res["params"]["expected"] == "exact"
    # homotypic and same-side pairs attract, cross-side pairs avoid each other
    z = res["zscore"]
    assert z[0, 0] > 3
    assert z[2, 2] > 3
    assert z[0, 2] < -3
    np.testing.assert_allclose(res["score"], (res["count"] - res["expected"]) / res["expected"])
    np.testing.assert_allclose(res["pvalue"], 2 * norm.sf(np.abs(z)))


def _bh_reference(p: np.ndarray) -> np.ndarray:
    """q_i = min over p_j >= p_i of p_j * m / #{p <= p_j}, capped at 1 (Benjamini & Hochberg 1995)."""
    m = p.size
    return np.array([min(1.0, min(p[j] * m / (p <= p[j]).sum() for j in range(m) if p[j] >= pi)) for pi in p])


def test_qvalues_are_bh_over_unordered_pairs_for_undirected_and_ordered_for_directed():
    adata = _clustered_adata(n=250, seed=3)
    spatial_neighbors(adata, radius=25.0)
    res = colocalization(adata, inplace=False)
    iu = np.triu_indices(4)
    p = res.pvalue[iu]
    m = p.size
    assert m == 10
    np.testing.assert_allclose(res.qvalue[iu], _bh_reference(p))
    np.testing.assert_array_equal(res.qvalue, res.qvalue.T)

    spatial_neighbors(adata, method="knn", n_neighbors=5)
    res = colocalization(adata, inplace=False)
    assert res.directed
    np.testing.assert_allclose(res.qvalue.ravel(), _bh_reference(res.pvalue.ravel()))


def test_exact_score_averages_zero_under_relabelling_and_paper_score_is_positive():
    rng = np.random.default_rng(5)
    n = 300
    coords = rng.random((n, 2)) * 150
    graph, _ = radius_graph(coords, 25.0)  # dense: ~25 neighbours per cell
    graph = graph.astype(np.float64)
    codes = rng.permutation(np.repeat(np.arange(3), [150, 100, 50]))
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(codes, ["a", "b", "c"])}, index=[f"c{i}" for i in range(n)]
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    adata.obsp["spatial_connectivities"] = graph
    exact = colocalization(adata, inplace=False)
    paper = colocalization(adata, expected="paper", inplace=False)
    assert np.all(paper.score > 5)  # n_a n_b / n ignores the ~25 edges per cell
    np.testing.assert_array_equal(paper.zscore, exact.zscore)  # z always uses the exact null
    children = np.random.SeedSequence(0).spawn(2000)
    perms = _permuted_counts(children, codes.astype(np.int64), graph.indptr, graph.indices, 3, None, None, None, 1)
    scores = (perms - exact.expected) / exact.expected
    se = scores.std(axis=0) / np.sqrt(len(scores))
    assert np.all(np.abs(scores.mean(axis=0)) < 5 * se)


def test_permutation_zscores_agree_with_exact_and_are_seeded():
    adata = _clustered_adata(n=400, seed=7)
    spatial_neighbors(adata, radius=30.0)
    res = colocalization(adata, n_perms=1000, seed=1, inplace=False)
    assert np.corrcoef(res.zscore.ravel(), res.perm_zscore.ravel())[0, 1] > 0.999
    assert np.all((res.perm_pvalue > 0) & (res.perm_pvalue <= 1))
    assert res.perm_pvalue[0, 0] == pytest.approx(1 / 1001)  # strong attraction: no permutation as extreme
    again = colocalization(adata, n_perms=50, seed=1, inplace=False)
    threads = colocalization(adata, n_perms=50, seed=1, n_jobs=2, inplace=False)
    other = colocalization(adata, n_perms=50, seed=2, inplace=False)
    np.testing.assert_array_equal(again.perm_zscore, threads.perm_zscore)
    np.testing.assert_array_equal(again.perm_pvalue, threads.perm_pvalue)
    assert not np.array_equal(again.perm_zscore, other.perm_zscore)
    table = colocalization_table(adata) if "cell_type_nhood_enrichment" in adata.uns else None
    assert table is None  # inplace=False leaves the container untouched


def test_stratified_by_fov():
    adata = _clustered_adata(n=300, seed=8, fov=True)
    spatial_neighbors(adata, radius=30.0)
    res = colocalization(adata, n_perms=400, seed=0, inplace=False)
    assert res.params["fov_key"] == "fov"
    fov = (
        adata.obs["fov"].cat.codes.to_numpy() if hasattr(adata.obs["fov"], "cat") else pd.factorize(adata.obs["fov"])[0]
    )
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    counts = np.zeros((2, 4))
    np.add.at(counts, (fov, codes), 1)
    graph = adata.obsp["spatial_connectivities"].astype(np.float64)
    mean, var = _join_count_moments(counts, _graph_stats(graph, fov, 2))
    np.testing.assert_allclose(res.expected_exact, mean)
    np.testing.assert_allclose(res.variance, var)
    assert np.corrcoef(res.zscore.ravel(), res.perm_zscore.ravel())[0, 1] > 0.995
    # a global null differs from the stratified one
    glob = colocalization(adata, fov_key=None, inplace=False)
    assert not np.allclose(glob.variance, res.variance)
    # a graph joining the two FOVs is refused
    adata.obsp["cross"] = radius_graph(adata.obsm["spatial"], 30.0)[0]
    with pytest.raises(InputError, match="edges between cells of different FOVs"):
        colocalization(adata, graph_key="cross")


def test_degenerate_types_give_nan_and_flag():
    adata = _clustered_adata(n=150, seed=9)
    cats = ["T", "B", "tumour", "stroma", "rare", "absent"]
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[0] = "rare"
    adata.obs["cell_type"] = pd.Categorical(labels, categories=cats)
    spatial_neighbors(adata, radius=40.0)
    res = colocalization(adata, inplace=False)
    np.testing.assert_array_equal(res.degenerate, [False, False, False, False, True, True])
    for arr in (res.zscore, res.pvalue, res.qvalue):
        assert np.all(np.isnan(arr[4:, :]))
        assert np.all(np.isnan(arr[:, 4:]))
        assert np.all(np.isfinite(arr[:4, :4]))
    assert np.all(np.isnan(res.score[5, :]))  # expected 0 for an absent type
    np.testing.assert_array_equal(res.n_cells[4:], [1, 0])


def test_single_label_and_isolated_graph_do_not_crash():
    adata = _clustered_adata(n=60, seed=10)
    adata.obs["cell_type"] = pd.Categorical(["only"] * 60)
    spatial_neighbors(adata, radius=40.0)
    res = colocalization(adata, inplace=False)
    assert res.count.shape == (1, 1)
    assert np.isnan(res.zscore).all()
    assert np.isnan(res.qvalue).all()
    assert res.score[0, 0] == pytest.approx(0.0)  # every edge is only-only, as expected
    spatial_neighbors(adata, radius=1e-6)  # no edges at all
    res = colocalization(adata, inplace=False)
    assert np.isnan(res.zscore).all()


def test_unlabelled_cells_and_weights_and_self_loops_are_ignored():
    adata = _clustered_adata(n=200, seed=4)
    spatial_neighbors(adata, radius=30.0)
    ref = colocalization(adata, inplace=False)
    weighted = adata.obsp["spatial_connectivities"].copy()
    weighted.data = weighted.data * 3.7
    adata.obsp["w"] = weighted + sp.eye(200, format="csr")
    res = colocalization(adata, graph_key="w", inplace=False)
    np.testing.assert_array_equal(res.count, ref.count)
    np.testing.assert_allclose(res.zscore, ref.zscore)

    labels = adata.obs["cell_type"].copy()
    labels.iloc[:20] = np.nan
    adata.obs["partial"] = labels
    res = colocalization(adata, label_key="partial", inplace=False)
    assert res.n_cells.sum() == 180
    sub = adata[20:].copy()
    spatial_neighbors(sub, radius=30.0)
    np.testing.assert_allclose(res.zscore, colocalization(sub, inplace=False).zscore)


def test_table_layout_and_roundtrip(tmp_path):
    adata = _clustered_adata(n=200, seed=2)
    spatial_neighbors(adata, radius=30.0)
    colocalization(adata, n_perms=20)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    table = colocalization_table(back)
    assert list(table.columns) == [
        "cell_type_pair",
        "jones_scornecchi_score",
        "cell_type_a",
        "cell_type_b",
        "observed",
        "expected",
        "z_score",
        "p_value",
        "q_value",
        "expected_paper",
        "perm_z_score",
        "perm_p_value",
    ]
    assert len(table) == 16
    assert table["cell_type_pair"].iloc[:5].tolist() == ["T|T", "T|B", "T|tumour", "T|stroma", "B|T"]
    res = adata.uns["cell_type_nhood_enrichment"]
    row = table.iloc[2]  # T|tumour
    assert row["observed"] == res["count"][0, 2]
    assert row["z_score"] == res["zscore"][0, 2]
    np.testing.assert_allclose(
        table["jones_scornecchi_score"], (table["observed"] - table["expected"]) / table["expected"]
    )


def test_errors():
    adata = _clustered_adata(n=50)
    with pytest.raises(InputError, match="run smo.spatial.spatial_neighbors"):
        colocalization(adata)
    with pytest.raises(InputError, match="run smo.spatial.colocalization"):
        colocalization_table(adata)
    spatial_neighbors(adata, radius=30.0)
    with pytest.raises(InputError, match="expected must be one of"):
        colocalization(adata, expected="seed")
    with pytest.raises(InputError, match="label_key='nope' is not a column"):
        colocalization(adata, label_key="nope")
    with pytest.raises(InputError, match="n_perms must be an integer >= 0"):
        colocalization(adata, n_perms=-1)
    assert isinstance(colocalization(adata, inplace=False), ColocalizationResult)
    adata.obs["empty"] = pd.Categorical([None] * 50, categories=["x"])
    with pytest.raises(InputError, match="has no labelled cell"):
        colocalization(adata, label_key="empty")


# ----------------------------------------------------------------------------------------------------------------
# per-sample tables
# ----------------------------------------------------------------------------------------------------------------


def _two_samples(seed: int = 0) -> ad.AnnData:
    """Two samples side by side: in 'mixed' the types are random, in 'segregated' they sit in halves."""
    rng = np.random.default_rng(seed)
    n = 300
    coords = rng.random((2 * n, 2)) * 200
    coords[n:, 0] += 1000  # far apart: a graph cannot join them
    types = np.concatenate(
        [
            rng.choice(["T", "tumour", "stroma"], n),
            np.where(coords[n:, 1] < 100, "T", rng.choice(["tumour", "stroma"], n)),
        ]
    )
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(types, categories=["T", "tumour", "stroma"]),
            "patient": pd.Categorical(np.repeat(["mixed", "segregated"], n)),
            "fov": np.where(coords[:, 1] < 100, "top", "bottom"),
        },
        index=[f"c{i}" for i in range(2 * n)],
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    return adata


def test_by_sample_tables_equal_per_sample_runs_and_pooled_is_their_stratified_sum():
    adata = _two_samples()
    spatial_neighbors(adata, radius=25.0, fov_key=None)
    res = colocalization(adata, sample_key="patient", fov_key=None, inplace=False)
    assert list(res.by_sample) == ["mixed", "segregated"]
    for name, sub_res in res.by_sample.items():
        sub = adata[adata.obs["patient"] == name].copy()
        spatial_neighbors(sub, radius=25.0, fov_key=None)
        ref = colocalization(sub, fov_key=None, inplace=False)
        for attr in ("count", "expected_exact", "variance", "zscore", "pvalue", "qvalue", "score", "expected_paper"):
            np.testing.assert_allclose(getattr(sub_res, attr), getattr(ref, attr), rtol=1e-12, err_msg=attr)
    # pooled = the stratified null over samples = fov_key=patient
    strat = colocalization(adata, fov_key="patient", inplace=False)
    for attr in ("count", "expected_exact", "variance", "zscore", "qvalue"):
        np.testing.assert_allclose(getattr(res, attr), getattr(strat, attr), rtol=1e-12)
    np.testing.assert_array_equal(res.count, sum(r.count for r in res.by_sample.values()))
    # the planted biology: T cells attract each other only in the segregated sample
    assert abs(res.by_sample["mixed"].zscore[0, 0]) < 3
    assert res.by_sample["segregated"].zscore[0, 0] > 10


def test_by_sample_within_fov_strata_and_permutations():
    adata = _two_samples(seed=1)
    spatial_neighbors(adata, radius=25.0)  # per FOV (top / bottom), so per (FOV, sample) combination too
    res = colocalization(adata, sample_key="patient", n_perms=300, seed=3, inplace=False)
    assert res.params["fov_key"] == "fov"
    sub = adata[adata.obs["patient"] == "segregated"].copy()
    spatial_neighbors(sub, radius=25.0)
    ref = colocalization(sub, n_perms=0, inplace=False)
    np.testing.assert_allclose(res.by_sample["segregated"].variance, ref.variance, rtol=1e-12)
    for r in [res, *res.by_sample.values()]:
        ok = np.isfinite(r.zscore)
        assert np.corrcoef(r.zscore[ok], r.perm_zscore[ok])[0, 1] > 0.98
    threads = colocalization(adata, sample_key="patient", n_perms=40, seed=3, n_jobs=2, inplace=False)
    single = colocalization(adata, sample_key="patient", n_perms=40, seed=3, inplace=False)
    for a, b in zip([threads, *threads.by_sample.values()], [single, *single.by_sample.values()], strict=True):
        np.testing.assert_array_equal(a.perm_zscore, b.perm_zscore)
        np.testing.assert_array_equal(a.perm_pvalue, b.perm_pvalue)


def test_by_sample_table_layout_roundtrip_and_degenerate(tmp_path):
    adata = _two_samples(seed=2)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[:300][labels[:300] == "stroma"] = "tumour"
    labels[0] = "stroma"  # one stroma cell in 'mixed': degenerate there, not pooled
    adata.obs["cell_type"] = pd.Categorical(labels, categories=["T", "tumour", "stroma"])
    spatial_neighbors(adata, radius=25.0, fov_key=None)
    colocalization(adata, sample_key="patient", fov_key=None, n_perms=10)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    table = colocalization_table(ad.read_h5ad(path), by_sample=True)
    assert table.columns[0] == "sample"
    assert table.columns[-2:].tolist() == ["n_cells_a", "n_cells_b"]
    assert table["sample"].tolist() == ["mixed"] * 9 + ["segregated"] * 9 + ["pooled"] * 9
    pooled = table[table["sample"] == "pooled"].drop(columns=["sample", "n_cells_a", "n_cells_b"])
    pd.testing.assert_frame_equal(pooled.reset_index(drop=True), colocalization_table(adata))
    mixed = table[table["sample"] == "mixed"].set_index("cell_type_pair")
    assert mixed.loc["stroma|T", "n_cells_a"] == 1
    assert np.isnan(mixed.loc["stroma|T", "z_score"])
    assert np.isnan(mixed.loc["T|stroma", "q_value"])
    assert np.isfinite(table.set_index(["sample", "cell_type_pair"]).loc[("pooled", "stroma|T"), "z_score"])
    by = adata.uns["cell_type_nhood_enrichment"]["by_sample"]
    assert by["zscore"].shape == (2, 3, 3)
    assert by["n_cells"].shape == (2, 3)
    assert by["sample_key"] == "patient"


def test_by_sample_errors():
    adata = _two_samples(seed=3)
    spatial_neighbors(adata, radius=25.0, fov_key=None)
    colocalization(adata, fov_key=None)
    with pytest.raises(InputError, match="no per-sample tables"):
        colocalization_table(adata, by_sample=True)
    with pytest.raises(InputError, match="sample_key='nope' is not a column"):
        colocalization(adata, sample_key="nope")
    adata.obs["bad"] = adata.obs["patient"].astype(object)
    adata.obs.loc[adata.obs_names[0], "bad"] = np.nan
    with pytest.raises(InputError, match=r"obs\['bad'\] has 1 missing values"):
        colocalization(adata, sample_key="bad")
    adata.obs["bad"] = np.where(adata.obs["patient"] == "mixed", "pooled", "x")
    with pytest.raises(InputError, match="sample named 'pooled'"):
        colocalization(adata, sample_key="bad")
    adata.obs["half"] = np.where(adata.obsm["spatial"][:, 1] < 100, "a", "b")
    with pytest.raises(InputError, match="edges between cells of different samples"):
        colocalization(adata, sample_key="half", fov_key=None)


def test_small_edge_blocks_give_the_same_graph_counts_and_moments(monkeypatch):
    import spatialmultiomics.spatial._graph as graph_module

    adata = _two_samples(seed=5)
    results, graphs = [], []
    for chunk in (1 << 22, 5):  # one block, then many blocks (rows are never split)
        monkeypatch.setattr(graph_module, "_EDGE_CHUNK", chunk)
        for method in ("radius", "knn"):
            spatial_neighbors(adata, method=method, radius=30.0, n_neighbors=4)
            graphs.append(adata.obsp["spatial_distances"].copy())
            results.append(colocalization(adata, sample_key="patient", n_perms=20, inplace=False))
    for a, b in zip(graphs[:2], graphs[2:], strict=True):
        assert (a != b).nnz == 0
    for a, b in zip(results[:2], results[2:], strict=True):
        for attr in ("count", "variance", "zscore", "perm_zscore"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
            np.testing.assert_array_equal(getattr(a.by_sample["mixed"], attr), getattr(b.by_sample["mixed"], attr))
    assert results[1].directed


def test_known_symmetric_shortcut_equals_the_checked_path_and_detects_changes(tmp_path):
    from spatialmultiomics.spatial._graph import _known_symmetric

    adata = _clustered_adata(n=300, seed=6)
    spatial_neighbors(adata, radius=30.0)
    graph = adata.obsp["spatial_connectivities"]
    assert _known_symmetric(adata, "spatial_connectivities", graph)
    fast = colocalization(adata, inplace=False)
    info = adata.uns.pop("spatial_neighbors")
    checked = colocalization(adata, inplace=False)
    for attr in ("count", "expected_exact", "variance", "zscore"):
        np.testing.assert_array_equal(getattr(fast, attr), getattr(checked, attr))
    adata.uns["spatial_neighbors"] = info
    # survives an h5ad round trip
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert _known_symmetric(back, "spatial_connectivities", back.obsp["spatial_connectivities"])
    # an edited graph (one edge redirected: same nnz, now directed) is no longer trusted
    edited = graph.copy()
    row = int(np.flatnonzero(np.diff(edited.indptr) > 0)[0])
    start, stop = edited.indptr[row], edited.indptr[row + 1]
    free = np.setdiff1d(np.arange(300), np.r_[edited.indices[start:stop], row])
    edited.indices[stop - 1] = free[-1]
    edited.sort_indices()
    adata.obsp["spatial_connectivities"] = edited
    assert not _known_symmetric(adata, "spatial_connectivities", edited)
    res = colocalization(adata, inplace=False)
    assert res.directed
    del adata.uns["spatial_neighbors"]
    np.testing.assert_array_equal(res.variance, colocalization(adata, inplace=False).variance)
    # a knn graph is never taken as symmetric
    spatial_neighbors(adata, method="knn", n_neighbors=4)
    assert not _known_symmetric(adata, "spatial_connectivities", adata.obsp["spatial_connectivities"])


# ----------------------------------------------------------------------------------------------------------------
# excluded labels ("Unknown"): in the graph and the null, not reported
# ----------------------------------------------------------------------------------------------------------------


def _with_unknown_region(n: int = 64, seed: int = 21) -> tuple[ad.AnnData, np.ndarray]:
    """Cells on 100 x 100 µm; the left third is 'Unknown' (a region without calls), the rest T / B / tumour."""
    rng = np.random.default_rng(seed)
    coords = rng.random((n, 2)) * 100
    codes = np.where(coords[:, 0] < 33, 3, rng.choice(3, n, p=[0.4, 0.35, 0.25]))
    cats = ["T", "B", "tumour", "Unknown"]
    obs = pd.DataFrame({"cell_type": pd.Categorical.from_codes(codes, cats)}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    return adata, codes.astype(np.int64)


def test_excluded_label_stays_in_the_null_and_moments_match_monte_carlo():
    adata, codes = _with_unknown_region()
    spatial_neighbors(adata, radius=22.0)
    graph = adata.obsp["spatial_connectivities"].astype(np.float64)
    res = colocalization(adata, exclude=("Unknown",), inplace=False)
    full = colocalization(adata, inplace=False)
    assert res.categories == ["T", "B", "tumour"]
    assert res.params["exclude"] == ["Unknown"]
    np.testing.assert_array_equal(res.count, full.count[:3, :3])
    np.testing.assert_array_equal(res.n_cells, full.n_cells[:3])

    # Monte-Carlo: relabel ALL cells, Unknown ones included; the reported pairs' moments must be exact
    n_perms = 20_000
    mc = _mc_counts(graph, codes, np.zeros(codes.size, dtype=np.int64), 4, n_perms, seed=0)[:, :3, :3]
    mc_mean, mc_var = mc.mean(axis=0), mc.var(axis=0, ddof=1)
    se_mean = np.sqrt(mc_var / n_perms)
    se_var = np.sqrt(np.maximum(((mc - mc_mean) ** 4).mean(axis=0) - mc_var**2, 0) / n_perms)
    assert np.all(np.abs(mc_mean - res.expected_exact) <= 5 * se_mean)
    assert np.all(np.abs(mc_var - res.variance) <= 5 * se_var)
    np.testing.assert_allclose(res.zscore, (res.count - mc_mean) / np.sqrt(mc_var), atol=0.1)
    # the seed's n_a n_b / n counts every cell of the graph, the unreported ones too
    np.testing.assert_allclose(res.expected_paper, np.outer(res.n_cells, res.n_cells) / codes.size)

    # dropping the Unknown cells instead (a missing label) changes the graph and the null: the Monte-Carlo
    # expectation of the full relabelling is then missed by far
    adata.obs["dropped"] = adata.obs["cell_type"].cat.remove_categories("Unknown")
    dropped = colocalization(adata, label_key="dropped", inplace=False)
    order = [dropped.categories.index(c) for c in res.categories]
    dropped_mean = dropped.expected_exact[np.ix_(order, order)]
    assert np.max(np.abs(dropped_mean - mc_mean) / se_mean) > 20

    # q-values: BH over the 6 reported unordered pairs only
    iu = np.triu_indices(3)
    np.testing.assert_allclose(res.qvalue[iu], _bh_reference(res.pvalue[iu]))


def test_exclude_by_sample_permutations_table_and_no_degenerate_warning(tmp_path, caplog):
    adata, _ = _with_unknown_region(n=300, seed=22)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[np.flatnonzero(labels == "Unknown")[1:]] = "T"  # a single Unknown cell: degenerate if reported
    adata.obs["cell_type"] = pd.Categorical(labels, categories=["T", "B", "tumour", "Unknown"])
    adata.obs["patient"] = np.where(adata.obsm["spatial"][:, 1] < 50, "p1", "p2")
    spatial_neighbors(adata, radius=20.0, fov_key="patient")
    with caplog.at_level("WARNING", logger="spatialmultiomics"):
        colocalization(adata, fov_key=None, sample_key="patient", inplace=False)
    assert "fewer than 2 cells get NaN statistics: ['Unknown']" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spatialmultiomics"):
        res = colocalization(adata, fov_key=None, sample_key="patient", exclude="Unknown", n_perms=200, seed=1,
                             inplace=False)  # fmt: skip
    assert "NaN statistics" not in caplog.text
    full = colocalization(adata, fov_key=None, sample_key="patient", n_perms=200, seed=1, inplace=False)
    for r, f in zip([res, *res.by_sample.values()], [full, *full.by_sample.values()], strict=True):
        assert r.categories == ["T", "B", "tumour"]
        for attr in ("count", "expected_exact", "variance", "zscore", "perm_zscore", "perm_pvalue"):
            np.testing.assert_array_equal(getattr(r, attr), getattr(f, attr)[:3, :3], err_msg=attr)
        assert not r.degenerate.any()
    colocalization(adata, fov_key=None, sample_key="patient", exclude=["Unknown", "not a label"])
    table = colocalization_table(adata)
    assert len(table) == 9 and "Unknown" not in set(table["cell_type_a"]) | set(table["cell_type_b"])
    by = colocalization_table(adata, by_sample=True)
    assert len(by) == 27
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(colocalization_table(back), table)
    assert list(back.uns["cell_type_nhood_enrichment"]["params"]["exclude"]) == ["Unknown", "not a label"]


def test_exclude_errors():
    adata, _ = _with_unknown_region()
    spatial_neighbors(adata, radius=22.0)
    with pytest.raises(InputError, match=r"exclude=\['T', 'B', 'tumour', 'Unknown'\] leaves no category"):
        colocalization(adata, exclude=["T", "B", "tumour", "Unknown"])
    with pytest.raises(InputError, match="exclude must be None, a label or a list of labels"):
        colocalization(adata, exclude=[3])
