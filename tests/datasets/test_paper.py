import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics._mudata import read_h5mu, write_h5mu
from spatialmultiomics.datasets import paper_benchmark
from spatialmultiomics.datasets._paper import PAPER_MARKERS


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def test_shapes_names_and_slots():
    mdata = paper_benchmark(seed=0)
    rna, prot = mdata["rna"], mdata["protein"]
    assert rna.shape == (200, 500)
    assert prot.shape == (200, 10)
    assert list(rna.obs_names[:2]) == ["cell_0000", "cell_0001"]
    assert rna.obs_names.equals(prot.obs_names)
    assert rna.obs_names.equals(mdata.obs_names)
    assert rna.X.dtype == np.float32
    assert prot.X.dtype == np.float32
    for holder in (mdata, rna, prot):
        xy = holder.obsm["spatial"]
        assert xy.shape == (200, 2)
        assert xy.dtype == np.float64
    np.testing.assert_array_equal(rna.obsm["spatial"], mdata.obsm["spatial"])
    truth = mdata.obs["true_cell_type"]
    assert isinstance(truth.dtype, pd.CategoricalDtype)
    assert list(truth.cat.categories) == list(PAPER_MARKERS)
    assert truth.value_counts().tolist() == [50, 50, 50, 50]  # balanced
    assert set(mdata.uns["markers"]) == set(PAPER_MARKERS)
    assert mdata.uns["truth"]["pixel_size_um"] == 1.0
    # real marker symbols first, fillers GENE_000...
    assert list(rna.var_names[:4]) == ["CD3E", "CD3D", "CD2", "TRAC"]
    assert rna.var_names[16] == "GENE_000"
    assert rna.var_names[-1] == "GENE_483"
    assert list(prot.var_names) == [
        "CD3",
        "CD8",
        "CD68",
        "CD163",
        "PanCK",
        "E-cadherin",
        "aSMA",
        "Vimentin",
        "Ki67",
        "HistoneH3",
    ]


def test_deterministic_per_seed():
    a, b, c = paper_benchmark(seed=3), paper_benchmark(seed=3), paper_benchmark(seed=4)
    np.testing.assert_array_equal(_dense(a["rna"].X), _dense(b["rna"].X))
    np.testing.assert_array_equal(a["protein"].X, b["protein"].X)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert not np.array_equal(a.obsm["spatial"], c.obsm["spatial"])
    assert not np.array_equal(_dense(a["rna"].X), _dense(c["rna"].X))


def test_uneven_n_cells_balanced_and_minimum():
    mdata = paper_benchmark(seed=0, n_cells=7)
    assert sorted(mdata.obs["true_cell_type"].value_counts().tolist()) == [1, 2, 2, 2]
    with pytest.raises(InputError, match="n_cells"):
        paper_benchmark(seed=0, n_cells=3)


def test_negative_binomial_background_moments():
    # mean 5, overdispersion 0.5: var = mu + 0.5 mu^2 = 17.5 (pooled over seeds and non-marker genes)
    X = np.concatenate([_dense(paper_benchmark(seed=s, n_cells=400)["rna"].X)[:, 16:] for s in range(3)])
    assert X.mean() == pytest.approx(5.0, abs=0.05)
    assert X.var() == pytest.approx(17.5, rel=0.04)
    assert np.all(np.round(X) == X)
    assert X.min() >= 0


def test_markers_elevated_in_their_type():
    mdata = paper_benchmark(seed=1, n_cells=2000)
    X = _dense(mdata["rna"].X)
    P = np.asarray(mdata["protein"].X)
    codes = mdata.obs["true_cell_type"].cat.codes.to_numpy()
    genes, prots = list(mdata["rna"].var_names), list(mdata["protein"].var_names)
    for t, (name, m) in enumerate(PAPER_MARKERS.items()):
        for g in m["genes"]:
            col = X[:, genes.index(g)]
            inside, outside = col[codes == t].mean(), col[codes != t].mean()
            assert inside == pytest.approx(55.0, rel=0.03), (name, g)  # NB mean 5 + Poisson(50)
            assert outside == pytest.approx(5.0, rel=0.06), (name, g)
        for p in m["proteins"]:
            col = P[:, prots.index(p)]
            assert col[codes == t].mean() == pytest.approx(6.0, rel=0.05)  # Normal(2, .5) + Poisson(4)
            assert col[codes != t].mean() == pytest.approx(2.0, rel=0.03)
    other = P[:, [prots.index("Ki67"), prots.index("HistoneH3")]]
    assert other.mean() == pytest.approx(2.0, abs=0.05)
    assert other.std() == pytest.approx(0.5, abs=0.03)
    assert other.min() >= 0


def test_spatial_clusters_around_centres():
    mdata = paper_benchmark(seed=2, n_cells=800)
    xy = mdata.obsm["spatial"]
    assert xy.min() >= 0
    assert xy.max() <= 1000
    codes = mdata.obs["true_cell_type"].cat.codes.to_numpy()
    centres = mdata.uns["truth"]["centres_um"]
    for t, name in enumerate(PAPER_MARKERS):
        pts = xy[codes == t]
        np.testing.assert_allclose(pts.mean(axis=0), centres[name], atol=12)
        assert pts.std(axis=0) == pytest.approx([60, 60], rel=0.15)


def test_truth_and_markers_roundtrip_h5mu(tmp_path):
    mdata = paper_benchmark(seed=0)
    write_h5mu(mdata, tmp_path / "b.h5mu")
    back = read_h5mu(tmp_path / "b.h5mu")
    assert list(back.uns["truth"]["attraction"]["type_a"]) == list(PAPER_MARKERS)
    assert list(back.uns["markers"]["T cells"]["genes"]) == ["CD3E", "CD3D", "CD2", "TRAC"]
    assert back.obs["true_cell_type"].tolist() == mdata.obs["true_cell_type"].tolist()
