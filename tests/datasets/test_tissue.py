import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

from spatialmultiomics._errors import InputError
from spatialmultiomics._mudata import read_h5mu, write_h5mu
from spatialmultiomics.datasets import synthetic_tissue
from spatialmultiomics.datasets._tissue import TISSUE_MARKERS, TISSUE_TYPES

RARE = ["Tregs", "Plasma cells", "NK cells", "Dendritic cells", "Neutrophils"]


@pytest.fixture
def tissue():
    return synthetic_tissue(3000, seed=0)


def _join_ratio(xy, codes, n_types, radius):
    """Observed / expected (random relabelling) neighbour pairs for every pair of types."""
    pairs = cKDTree(xy).query_pairs(radius, output_type="ndarray")
    n, n_edges = codes.size, len(pairs)
    obs = np.zeros((n_types, n_types))
    np.add.at(obs, (codes[pairs[:, 0]], codes[pairs[:, 1]]), 1)
    obs = obs + obs.T - np.diag(np.diag(obs))
    cnt = np.bincount(codes, minlength=n_types).astype(float)
    exp = 2 * n_edges * np.outer(cnt, cnt) / (n * (n - 1))
    np.fill_diagonal(exp, n_edges * cnt * (cnt - 1) / (n * (n - 1)))
    return obs / exp


def test_shapes_and_slots(tissue):
    rna, prot = tissue["rna"], tissue["protein"]
    assert rna.shape == (3000, 800)
    assert sp.issparse(rna.X) and rna.X.format == "csr" and rna.X.dtype == np.float32
    assert isinstance(prot.X, np.ndarray) and prot.X.dtype == np.float32
    assert 25 <= prot.n_vars <= 30
    assert {"CD45", "CD3", "PanCK", "E-cadherin", "aSMA", "CD31", "Ki67", "FOXP3"} <= set(prot.var_names)
    assert rna.obs_names.equals(prot.obs_names) and rna.obs_names.equals(tissue.obs_names)
    assert rna.obs_names[0] == "cell_0000"
    for holder in (tissue, rna, prot):
        assert holder.obsm["spatial"].shape == (3000, 2)
        assert holder.obsm["spatial"].dtype == np.float64
    truth = tissue.obs["true_cell_type"]
    assert isinstance(truth.dtype, pd.CategoricalDtype)
    assert truth.nunique() >= 10
    assert set(tissue.uns["markers"]) == set(truth.cat.categories)
    assert {"attraction", "avoidance"} <= set(tissue.uns["truth"])


def test_deterministic_per_seed():
    a, b, c = synthetic_tissue(800, seed=5), synthetic_tissue(800, seed=5), synthetic_tissue(800, seed=6)
    assert (a["rna"].X != b["rna"].X).nnz == 0
    np.testing.assert_array_equal(a["protein"].X, b["protein"].X)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert a.obs["true_cell_type"].tolist() == b.obs["true_cell_type"].tolist()
    assert a.obs["true_cell_type"].tolist() != c.obs["true_cell_type"].tolist()


def test_type_fractions_and_rare_types(tissue):
    frac = tissue.obs["true_cell_type"].value_counts(normalize=True)
    for name, (f, _, _) in TISSUE_TYPES.items():
        assert frac[name] == pytest.approx(f, abs=1e-3)
    for name in RARE:
        assert 0.02 <= frac[name] <= 0.05


def test_counts_sparse_overdispersed_with_varying_library(tissue):
    X = tissue["rna"].X
    density = X.nnz / np.prod(X.shape)
    assert 0.05 < density < 0.35
    assert np.all(X.data == np.round(X.data))
    lib = np.asarray(X.sum(axis=1)).ravel()
    assert lib.std() / lib.mean() > 0.4  # log-normal library sizes
    # overdispersion: within one type, variance > mean for the highly expressed genes
    codes = tissue.obs["true_cell_type"].cat.codes.to_numpy()
    sub = X[codes == 0].toarray()
    mean, var = sub.mean(axis=0), sub.var(axis=0)
    high = mean > 2
    assert np.median(var[high] / mean[high]) > 1.5


def test_markers_elevated_in_their_type(tissue):
    codes = tissue.obs["true_cell_type"].cat.codes.to_numpy()
    types = list(tissue.obs["true_cell_type"].cat.categories)
    X = tissue["rna"].X
    lib = np.asarray(X.sum(axis=1)).ravel()
    norm = sp.diags(1e3 / lib) @ X
    P = tissue["protein"].X
    genes, prots = list(tissue["rna"].var_names), list(tissue["protein"].var_names)
    gene_means = np.stack([np.asarray(norm[codes == t].mean(axis=0)).ravel() for t in range(len(types))])
    prot_means = np.stack([P[codes == t].mean(axis=0) for t in range(len(types))])
    for t, name in enumerate(types):
        for g in TISSUE_MARKERS[name]["genes"]:
            j = genes.index(g)
            assert gene_means[t, j] > 3 * np.median(gene_means[:, j]), (name, g)
        for p in TISSUE_MARKERS[name]["proteins"]:
            j = prots.index(p)
            assert prot_means[t, j] > 1.5 * np.median(prot_means[:, j]), (name, p)


def test_shared_markers_and_state_programmes(tissue):
    codes = tissue.obs["true_cell_type"].astype(str).to_numpy()
    X = tissue["rna"].X
    genes = list(tissue["rna"].var_names)

    def mean_of(gene, mask):
        return float(X[mask][:, genes.index(gene)].mean())

    # CD3E is shared by the three T cell types, not by B cells
    for t in ("CD4 T cells", "CD8 T cells", "Tregs"):
        assert mean_of("CD3E", codes == t) > 5 * mean_of("CD3E", codes == "B cells")
    cycling = tissue.obs["true_cycling"].to_numpy()
    ifn = tissue.obs["true_interferon"].to_numpy()
    assert 0.05 < cycling.mean() < 0.3 and 0.05 < ifn.mean() < 0.4
    for gene, flag in (("TOP2A", cycling), ("MKI67", cycling), ("ISG15", ifn), ("IFIT1", ifn)):
        assert mean_of(gene, flag) > 4 * mean_of(gene, ~flag)
    # the programmes cut across types
    assert len(set(codes[cycling])) >= 8 and len(set(codes[ifn])) >= 8
    ki67 = tissue["protein"].X[:, list(tissue["protein"].var_names).index("Ki67")]
    assert ki67[cycling].mean() > 3 * ki67[~cycling].mean()


def test_planted_attraction_and_avoidance():
    mdata = synthetic_tissue(5000, seed=0)
    types = list(mdata.obs["true_cell_type"].cat.categories)
    codes = mdata.obs["true_cell_type"].cat.codes.to_numpy()
    ratio = _join_ratio(mdata.obsm["spatial"], codes, len(types), radius=30.0)
    truth = mdata.uns["truth"]
    for a, b in zip(truth["attraction"]["type_a"], truth["attraction"]["type_b"], strict=True):
        assert ratio[types.index(a), types.index(b)] > 1.15, (a, b)
    for a, b in zip(truth["avoidance"]["type_a"], truth["avoidance"]["type_b"], strict=True):
        assert ratio[types.index(a), types.index(b)] < 0.6, (a, b)


def test_cells_do_not_overlap(tissue):
    d, _ = cKDTree(tissue.obsm["spatial"]).query(tissue.obsm["spatial"], k=2)
    assert d[:, 1].min() > 2.0  # µm
    side = np.sqrt(3000 * 150.0)
    assert tissue.obsm["spatial"].min() >= 0 and tissue.obsm["spatial"].max() <= side


def test_parameters_validated_and_roundtrip(tmp_path):
    with pytest.raises(InputError, match="n_cells"):
        synthetic_tissue(10)
    with pytest.raises(InputError, match="protein_spillover"):
        synthetic_tissue(500, protein_spillover=-1)
    mdata = synthetic_tissue(300, seed=1, n_genes=300)
    assert mdata["rna"].n_vars == 300
    write_h5mu(mdata, tmp_path / "t.h5mu")
    back = read_h5mu(tmp_path / "t.h5mu")
    assert back.obs["true_cell_type"].tolist() == mdata.obs["true_cell_type"].tolist()
    assert list(back.uns["truth"]["avoidance"]["type_a"]) == list(mdata.uns["truth"]["avoidance"]["type_a"])
