"""select_n_factors / select_k: the number of factors from factor stability over subsamples."""

from __future__ import annotations

import numpy as np
import pytest

import spatialmultiomics as smo
from spatialmultiomics._errors import InputError
from spatialmultiomics._mudata import read_h5mu, write_h5mu
from spatialmultiomics.factorize import KSelection, select_n_factors
from spatialmultiomics.factorize._select import _matched_similarity, select_k


@pytest.mark.parametrize(("k_true", "seed"), [(3, 1), (5, 2), (7, 1)])
def test_planted_programmes_give_k_true(planted, k_true, seed):
    # cells made of k_true non-negative programmes (each with a dominant one, 40 % mixing) + 5 % noise, two
    # blocks (60 and 12 features): the rule returns k_true (measured over 18 planted sets: k_true in 16, k_true + 1
    # in 2; these seeds are among the exact ones)
    _, _, Xs = planted(n_cells=300, sizes=(60, 12), k=k_true, noise=0.05, seed=seed)
    sel = select_k(Xs, k_grid=list(range(2, k_true + 3)), seed=0)
    assert sel.k == k_true
    at = dict(zip(sel.k_grid.tolist(), sel.stability.tolist(), strict=True))
    assert at[k_true] > 0.99
    assert at[k_true + 1] < 0.95
    assert sel.stable.tolist() == [s >= 0.95 for s in sel.stability]
    assert np.all(np.diff(sel.error) < 0)  # more factors, less unexplained sum of squares
    assert "largest k" in sel.reason


def test_matched_similarity_ignores_factor_order():
    rng = np.random.default_rng(0)
    G = rng.random((5, 30))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    assert _matched_similarity(G, G[[3, 0, 4, 1, 2]]) == pytest.approx(1.0)
    other = rng.random((5, 30))
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    assert _matched_similarity(G, other) < 0.9


def test_deterministic_and_seed_dependent(planted):
    _, _, Xs = planted(n_cells=200, sizes=(40,), k=3, noise=0.2, seed=0)
    a = select_k(Xs, k_grid=[2, 3, 4, 5], n_restarts=3, seed=1)
    b = select_k(Xs, k_grid=[2, 3, 4, 5], n_restarts=3, seed=1)
    c = select_k(Xs, k_grid=[2, 3, 4, 5], n_restarts=3, seed=2)
    assert a.k == b.k and np.array_equal(a.stability, b.stability) and np.array_equal(a.error, b.error)
    assert not np.array_equal(a.stability, c.stability)


def test_default_grid_is_cut_by_features_and_cells(planted):
    _, _, Xs = planted(n_cells=400, sizes=(9,), k=3, noise=0.05, seed=0)
    sel = select_k(Xs, n_restarts=2)
    assert sel.k_grid.max() == 4  # half of 9 features: beyond it NMF can give one factor per feature
    _, _, Xs = planted(n_cells=120, sizes=(200,), k=3, noise=0.05, seed=0)
    sel = select_k(Xs, n_restarts=2)
    assert sel.k_grid.max() == 4  # 60 cells per subsample, at least 15 per factor
    assert sel.params["n_cells_per_fit"] == 60


def test_patience_stops_the_scan(planted):
    _, _, Xs = planted(n_cells=300, sizes=(60, 12), k=3, noise=0.05, seed=1)
    full = select_k(Xs, k_grid=[2, 3, 4, 5, 6, 7, 8], seed=0)
    early = select_k(Xs, k_grid=[2, 3, 4, 5, 6, 7, 8], patience=2, seed=0)
    assert full.k == early.k == 3
    assert early.k_grid.tolist() == [2, 3, 4, 5]  # two unstable k after the stable k = 3
    assert np.array_equal(early.stability, full.stability[:4])
    assert "stopped at k=5" in early.reason


def test_container_function_stores_the_curve(tmp_path):
    mdata = smo.datasets.paper_benchmark(seed=0)
    smo.pp.preprocess(mdata)
    sel = select_n_factors(mdata, k_grid=[2, 3, 4, 5], n_restarts=3)
    assert isinstance(sel, KSelection)
    assert 3 <= sel.k <= 5
    stored = mdata.uns["nmf"]["k_selection"]
    assert stored["k"] == sel.k
    for key in ("k_grid", "stability", "stability_sd", "error", "error_sd", "stable"):
        assert len(stored[key]) == len(sel.k_grid), key
    assert stored["params"]["modalities"] == ["rna", "protein"]
    path = tmp_path / "sel.h5mu"
    write_h5mu(mdata, path)
    back = read_h5mu(path).uns["nmf"]["k_selection"]
    assert int(back["k"]) == sel.k
    assert np.allclose(back["stability"], sel.stability)
    untouched = smo.datasets.paper_benchmark(seed=0)
    smo.pp.preprocess(untouched)
    select_n_factors(untouched, k_grid=[2, 3], n_restarts=2, inplace=False)
    assert "nmf" not in untouched.uns


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_grid": [2, 500]}, "k_grid values \\[500\\] are too large"),
        ({"k_grid": "2,3"}, "k_grid must be a sequence"),
        ({"k_grid": []}, "k_grid is empty"),
        ({"k_grid": [0, 2]}, "k_grid values must be an integer >= 1"),
        ({"n_restarts": 1}, "n_restarts must be an integer >= 2"),
        ({"subsample": 0}, "subsample must be a fraction"),
        ({"subsample": 1.5}, "subsample must be between"),
        ({"threshold": 2}, "threshold must be between"),
        ({"patience": 0}, "patience must be an integer >= 1"),
    ],
)
def test_input_errors(planted, kwargs, match):
    _, _, Xs = planted(n_cells=100, sizes=(20,), k=2, seed=0)
    with pytest.raises(InputError, match=match):
        select_k(Xs, **kwargs)


def test_container_errors_name_the_modality():
    mdata = smo.datasets.paper_benchmark(seed=0)
    smo.pp.preprocess(mdata)
    mdata["protein"].layers["preprocessed"][:] = 0
    with pytest.raises(InputError, match="modality 'protein' is all zeros"):
        select_n_factors(mdata, k_grid=[2])
    with pytest.raises(InputError, match="not in mdata.mod"):
        select_n_factors(mdata, modalities=["atac"])


def test_pipeline_auto_k_stores_the_selection():
    mdata = smo.datasets.paper_benchmark(seed=0)
    res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors="auto", markers=dict(mdata.uns["markers"]))
    sel = res.mdata.uns["nmf"]["k_selection"]
    k = int(sel["k"])
    assert 4 <= k <= 6
    assert res.H_shared.shape == (k, mdata.n_obs)
    params = res.mdata.uns["pipeline"]["params"]
    assert params["n_factors"] == k and params["n_factors_requested"] == "auto"
    truth = mdata.obs["true_cell_type"].astype(str)
    called = res.shared_labels.set_index("cell_id")["cell_type"].reindex(truth.index).astype(str)
    assert np.mean(called.to_numpy() == truth.to_numpy()) >= 0.95
    with pytest.raises(InputError, match="n_factors must be 'auto' or an integer >= 1, got 'many'"):
        smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors="many")
