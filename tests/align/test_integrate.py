"""Integration of modalities measured on different cells: linked features, matching by expression, transfer."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics.align import (
    IntegrationResult,
    Transform,
    integrate_unpaired,
    load_links,
    resolve_links,
    transfer_labels,
    transfer_profiles,
)

#: planted types and the linked protein / gene of each (every type also has its own unlinked genes)
_TYPES = {
    "T cells": [("CD3", "CD3E"), ("CD45", "PTPRC")],
    "B cells": [("CD20", "MS4A1"), ("CD45", "PTPRC")],
    "Epithelial": [("PanCK", "KRT8"), ("E-cadherin", "CDH1")],
    "Macrophages": [("CD68", "CD68"), ("CD45", "PTPRC")],
    "Endothelial": [("CD31", "PECAM1")],
}
_SHARES = np.array([0.35, 0.2, 0.2, 0.15, 0.1])


def _planted(n: int, seed: int, *, side: float = 600.0) -> tuple[ad.AnnData, np.ndarray, ad.AnnData, np.ndarray]:
    """RNA counts on ``n`` cells and protein intensities on ``n`` other cells of the same five types."""
    rng = np.random.default_rng(seed)
    names = list(_TYPES)
    proteins = [*sorted({p for pairs in _TYPES.values() for p, _ in pairs}), "DAPI", "P1", "P2"]
    linked_genes = sorted({g for pairs in _TYPES.values() for _, g in pairs})
    genes = linked_genes + [f"GENE{i:03d}" for i in range(120 - len(linked_genes))]
    mu_rna = np.full((len(names), len(genes)), 0.3)
    mu_prot = np.full((len(names), len(proteins)), 1.0)
    for t, name in enumerate(names):
        for p, g in _TYPES[name]:
            mu_rna[t, genes.index(g)] = 4.0
            mu_prot[t, proteins.index(p)] = 6.0
        mu_rna[t, len(linked_genes) + 20 * t : len(linked_genes) + 20 * t + 20] = 3.0

    def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(len(names), size=k, p=_SHARES)
        return labels, rng.uniform(0.0, side, size=(k, 2))

    ta, xya = draw(n)
    lib = rng.lognormal(0.0, 0.3, size=n)
    counts = rng.poisson(mu_rna[ta] * lib[:, None]).astype(np.float32)
    rna = ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=genes))
    rna.obs_names = [f"r{i}" for i in range(n)]
    rna.obsm["spatial"] = xya
    tb, xyb = draw(n)
    intens = np.clip(mu_prot[tb] + rng.normal(0.0, 0.8, size=(n, len(proteins))), 0.0, None).astype(np.float32)
    prot = ad.AnnData(intens, var=pd.DataFrame(index=proteins))
    prot.obs_names = [f"p{i}" for i in range(n)]
    prot.obsm["spatial"] = xyb
    return rna, np.array(names)[ta], prot, np.array(names)[tb]


@pytest.fixture(scope="module")
def planted() -> tuple[ad.AnnData, np.ndarray, ad.AnnData, np.ndarray]:
    return _planted(500, seed=1)


@pytest.fixture(scope="module")
def result(planted) -> IntegrationResult:
    rna, _, prot, _ = planted
    return integrate_unpaired(rna, prot, seed=0, names=("rna", "protein"))


def _chance(a: np.ndarray, b: np.ndarray) -> float:
    pa = pd.Series(a).value_counts(normalize=True)
    pb = pd.Series(b).value_counts(normalize=True)
    return float((pa * pb.reindex(pa.index).fillna(0)).sum())


def test_matches_pair_cells_of_the_same_type(planted, result) -> None:
    _, ta, _, tb = planted
    best, score = result.best()
    assert (best >= 0).all() and np.isfinite(score).all()
    # five well-separated types (4-6 linked features each): the right type is the known answer
    assert np.mean(tb[best] == ta) >= 0.9
    # the same matching scored against shuffled labels of the other modality sits at chance (0.25 here)
    shuffled = np.random.default_rng(0).permutation(tb)
    assert abs(np.mean(shuffled[best] == ta) - _chance(ta, tb)) < 0.08
    # trusted matches (above the null's 99th percentile) are at least as often right
    trusted = result.trusted()
    assert trusted.mean() > 0.5
    assert np.mean(tb[best[trusted]] == ta[trusted]) >= np.mean(tb[best] == ta) - 1e-9


def test_result_layout(planted, result) -> None:
    rna, _, prot, _ = planted
    n_matches = 5
    assert result.ref_index.size == rna.n_obs * n_matches
    assert (np.diff(result.ref_index) >= 0).all()
    assert set(np.unique(result.rank)) == set(range(n_matches))
    assert result.embedding_ref.shape[0] == rna.n_obs and result.embedding_other.shape[0] == prot.n_obs
    frame = result.matches
    assert list(frame.columns) == ["ref_id", "other_id", "ref_index", "other_index", "score", "rank"]
    assert frame.ref_id.iloc[0] == "r0"
    assert set(result.links["link"]) == {"CD20", "CD3", "CD31", "CD45", "CD68", "E-cadherin", "PanCK"}
    diag = result.diagnostics
    assert diag["n_links"] == 7 and diag["orientation"] == "other"
    assert diag["counts"] == {"rna": True, "protein": False}
    W = result.weights()
    assert W.shape == (rna.n_obs, prot.n_obs)
    np.testing.assert_allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0)


def test_transfer_profiles_and_labels(planted, result) -> None:
    rna, ta, prot, tb = planted
    dense = transfer_profiles(result, np.asarray(prot.X))
    assert dense.shape == (rna.n_obs, prot.n_vars) and dense.dtype == np.float32
    sparse = transfer_profiles(result, sp.csr_matrix(prot.X))
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), dense, rtol=1e-5)
    # the transferred PanCK is high on epithelial RNA cells
    panck = dense[:, list(prot.var_names).index("PanCK")]
    assert panck[ta == "Epithelial"].mean() > 2 * panck[ta != "Epithelial"].mean()
    labels = transfer_labels(result, pd.Series(tb, index=prot.obs_names))
    assert list(labels.index) == list(rna.obs_names)
    assigned = labels.label != "Unassigned"
    assert np.mean(labels.label[assigned] == ta[assigned.to_numpy()]) >= 0.9
    # nothing trusted above a score of 1: every cell is unassigned, none silently labelled
    none = transfer_labels(result, tb, min_score=1.0)
    assert (none.label == "Unassigned").all() and (none.confidence == 0).all()
    dropped = transfer_profiles(result, np.asarray(prot.X), min_score=1.0, untrusted="drop")
    assert not dropped.any()
    with pytest.raises(InputError, match="other_X has 3 rows"):
        transfer_profiles(result, np.zeros((3, prot.n_vars)))


def test_spatial_prior_excludes_far_partners(planted) -> None:
    rna, _, prot, _ = planted
    radius = 40.0
    res = integrate_unpaired(rna, prot, seed=0, spatial_prior_um=radius, n_matches=3)
    d = np.linalg.norm(rna.obsm["spatial"][res.ref_index] - prot.obsm["spatial"][res.other_index], axis=1)
    assert res.ref_index.size > 0 and d.max() <= radius
    # without the prior, partners come from across the slide
    free = integrate_unpaired(rna, prot, seed=0, n_matches=3)
    d_free = np.linalg.norm(rna.obsm["spatial"][free.ref_index] - prot.obsm["spatial"][free.other_index], axis=1)
    assert d_free.max() > 5 * radius
    # a transform puts the other section in the reference frame; far away, nobody has a candidate
    moved = prot.copy()
    moved.obsm["spatial"] = prot.obsm["spatial"] + 10_000.0
    back = integrate_unpaired(
        rna,
        moved,
        seed=0,
        spatial_prior_um=radius,
        n_matches=3,
        transform=Transform.from_params(translation=(-1e4, -1e4)),
    )
    np.testing.assert_array_equal(back.other_index, res.other_index)
    far = integrate_unpaired(rna, moved, seed=0, spatial_prior_um=radius)
    assert far.ref_index.size == 0 and far.diagnostics["n_reference_without_candidates"] == rna.n_obs
    assert not far.trusted().any()


def test_same_seed_same_result(planted) -> None:
    rna, _, prot, _ = planted
    a = integrate_unpaired(rna, prot, seed=3, n_pivots=300)
    b = integrate_unpaired(rna, prot, seed=3, n_pivots=300)
    for field in ("ref_index", "other_index", "score", "rank", "embedding_ref", "embedding_other"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_no_linked_features_is_refused(planted) -> None:
    rna, _, prot, _ = planted
    other = prot[:, ["DAPI", "P1", "P2"]].copy()
    with pytest.raises(
        InputError, match=r"no linked features between 'rna' \(120 features: CD3E.*'codex' \(3 features: DAPI, P1, P2\)"
    ):
        integrate_unpaired(rna, other, names=("rna", "codex"))
    with pytest.raises(InputError, match="smoothing must be > 0"):
        integrate_unpaired(rna, prot, smoothing=0.0)
    with pytest.raises(InputError, match="spatial_prior_um needs obsm"):
        bare = prot.copy()
        del bare.obsm["spatial"]
        integrate_unpaired(rna, bare, spatial_prior_um=30.0)


def test_user_links_rescue_an_unknown_panel(planted) -> None:
    rna, ta, prot, tb = planted
    renamed = prot.copy()
    renamed.var_names = [f"ch_{v}" for v in prot.var_names]  # names no table knows
    links = {f"ch_{p}": g for pairs in _TYPES.values() for p, g in pairs}
    res = integrate_unpaired(rna, renamed, links=links, seed=0)
    best, _ = res.best()
    assert res.diagnostics["n_links"] == 7
    assert np.mean(tb[best] == ta) >= 0.9


@pytest.mark.parametrize(
    ("proteins", "genes", "expected"),
    [
        (["Pan-Keratin", "CD3e", "alpha-SMA"], ["KRT8", "KRT18", "CD3E", "CD3D", "ACTA2"], [(0, 1), (2, 3), (4,)]),
        (["PanCK", "E-Cadherin", "CD45"], ["hg19_KRT19", "hg19_CDH1", "hg19_PTPRC"], [(0,), (1,), (2,)]),
        (["PD1 (CD279)", "MHCII (HLA-DR)", "IgG1"], ["PDCD1", "HLA-DRA", "IGHG1"], [(0,), (1,)]),
        (["CD8a", "CD20", "Ki-67"], ["CD8A", "CD8B", "MS4A1", "MKI67"], [(0, 1), (2,), (3,)]),
    ],
)
def test_link_table_matches_panel_spellings(proteins, genes, expected) -> None:
    lf = resolve_links(genes, proteins)
    assert lf.orientation == "other"
    assert [tuple(sorted(f)) for f in lf.ref_features] == expected
    # the same panels the other way round: proteins as the reference
    back = resolve_links(proteins, genes)
    assert back.orientation == "ref" and [tuple(sorted(f)) for f in back.other_features] == expected


def test_two_antibody_panels_link_by_name() -> None:
    lf = resolve_links(["CD3", "Pan-CK", "SMA", "DAPI"], ["PanCK", "aSMA", "CD3e", "Hoechst"])
    assert lf.orientation == "same"
    assert dict(zip(lf.names, lf.other_features, strict=True)) == {"CD3": (2,), "Pan-CK": (0,), "SMA": (1,)}


def test_load_links_from_dict_and_file(tmp_path) -> None:
    table = load_links({"MyMarker|My-Marker": ["GENE1", "GENE2"], "CD8": "CD8A"})
    assert len(table) > 100
    lf = resolve_links(["GENE2", "CD8A", "CD8B"], ["my marker", "CD8"], table)
    assert lf.ref_features == ((0,), (1,))  # the user's CD8 entry replaced the built-in CD8A/CD8B
    only = load_links({"MyMarker": "GENE1"}, extend=False)
    assert len(only) == 1
    path = tmp_path / "links.csv"
    path.write_text("protein,gene\nMyMarker,GENE1\nMyMarker,GENE2\n")
    from_file = load_links(path, extend=False)
    assert from_file.genes == (("GENE1", "GENE2"),)
    with pytest.raises(InputError, match="links file .* does not exist"):
        load_links(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="has no gene"):
        load_links({"X": []})


def test_adjacent_route_matches_by_expression(planted) -> None:
    from spatialmultiomics.align import align

    rna, ta, prot, tb = planted
    out = align({"rna": rna, "protein": prot}, route="adjacent", transforms={"protein": Transform.identity()})
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "adjacent" and entry["method"] == "expression" and entry["n_links"] == 7
    status = out.obs["protein_status"].astype(str)
    assert set(status) <= {"integrated", "imputed"} and (status == "integrated").mean() > 0.5
    assert entry["n_integrated"] + entry["n_imputed"] == rna.n_obs == out.n_obs
    # the source cell of each row is one of its matches, of the same type far more often than the nearest cell
    src = prot.obs_names.get_indexer(out.obs["protein_id"])
    assert np.mean(tb[src] == ta) >= 0.9
    # panels without linked features: each modality is typed on its own cells (route 'separate')
    bare = prot[:, ["DAPI", "P1", "P2"]].copy()
    apart = align({"rna": rna, "protein": bare}, route="adjacent", transforms={"protein": Transform.identity()})
    assert apart.uns["alignment"]["modalities"]["protein"]["route"] == "separate" and list(apart.mod) == ["rna"]


def test_adjacent_route_needs_no_registration_when_matching_by_expression(planted) -> None:
    from spatialmultiomics.align import align

    rna, ta, prot, tb = planted
    # a square section of uniform density turned by 90°: its orientation is ambiguous, the cells still match
    turned = prot.copy()
    turned.obsm["spatial"] = Transform.from_params(rotation_deg=90.0, center=(300.0, 300.0)).apply(prot.obsm["spatial"])
    out = align({"rna": rna, "protein": turned}, route="adjacent")
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["method"] == "expression" and "positions not used" in entry["reason"]
    assert np.isnan(out.obs["protein_distance_um"]).all()
    src = prot.obs_names.get_indexer(out.obs["protein_id"])
    assert np.mean(tb[src] == ta) >= 0.9
    # frames that do not overlap are refused, expression or not
    far = prot[:40].copy()
    far.obsm["spatial"] = far.obsm["spatial"] * 0.05 + 1e6
    with pytest.raises(InputError, match="registration failed: the frames do not overlap"):
        align({"rna": rna, "protein": far}, route="adjacent")
