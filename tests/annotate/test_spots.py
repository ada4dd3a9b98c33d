"""Spot composition from the single cells under the spots (annotate._spots)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import nnls

import spatialmultiomics as smo
from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics.annotate._spots import _cell_scores


def test_cell_scores_are_the_nnls_solution() -> None:
    rng = np.random.default_rng(0)
    H = np.abs(rng.normal(size=(5, 30)))
    H[2] = 0.0  # a dead factor gets 0
    Y = np.abs(rng.normal(size=(40, 30)))
    got = _cell_scores(Y, H)
    norms = np.linalg.norm(H, axis=1)
    live = norms > 0
    for i in range(Y.shape[0]):
        ref, _ = nnls((H[live] / norms[live, None]).T, Y[i])
        np.testing.assert_allclose(got[i, live], ref, atol=1e-3 * max(ref.max(), 1.0))
    assert np.all(got[:, 2] == 0.0)


@pytest.fixture(scope="module")
def spot_run():
    data = smo.datasets.visium_like(n_cells=3000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # colocalization of tiny types, convergence at the default max_iter
        res = smo.run_pipeline(data.rna, data.protein, n_factors=12, markers=data.markers, figures=False)
    return data, res


def test_pipeline_types_spots_from_their_cells(spot_run) -> None:
    data, res = spot_run
    m = res.mdata
    assert m.uns["alignment"]["route"] == "spots"
    comp = m.obsm[Keys.COMPOSITION].loc[data.rna.obs_names]
    # every spot's cells are counted exactly: composition rows sum to 1, cell counts equal the aggregation's
    np.testing.assert_allclose(comp.sum(axis=1), 1.0)
    cells = m.uns[Keys.SPOT_CELLS]
    assert len(cells) == data.protein.n_obs
    n_in = cells.loc[cells["spot_id"] != ""].groupby("spot_id").size().reindex(m.obs_names, fill_value=0)
    assert np.array_equal(n_in.to_numpy(), m.obs["protein_n_cells"].to_numpy())
    # cells typed with the factors, spots by their most frequent type: dominant type right (any of a tie) >= 0.85
    cell_acc = np.mean(cells["cell_type"].to_numpy() == data.cell_types.loc[cells["cell_id"]].to_numpy())
    label = res.shared_labels.set_index("cell_id")["cell_type"].loc[data.rna.obs_names]
    ok = [lab in top for lab, top in zip(label, data.dominant_types(), strict=True)]
    before = m.obs["cell_type_from_factors"].astype(str).loc[data.rna.obs_names]
    ok_before = [lab in top for lab, top in zip(before, data.dominant_types(), strict=True)]
    assert cell_acc > 0.8
    assert np.mean(ok) >= 0.85
    assert np.mean(ok) > np.mean(ok_before)
    truth = data.composition.reindex(columns=comp.columns, fill_value=0.0).to_numpy()
    assert np.corrcoef(comp.to_numpy().ravel(), truth.ravel())[0, 1] > 0.9
    share = m.obs[Keys.COMPOSITION_SHARE].to_numpy()
    assert np.all((share > 0) & (share <= 1))


def test_result_files_have_the_composition(spot_run, tmp_path) -> None:
    import pandas as pd

    data, res = spot_run
    smo.write_results(res, tmp_path / "out", figures=False)
    comp = pd.read_csv(tmp_path / "out" / "spot_composition.csv", index_col=0)
    np.testing.assert_allclose(comp.drop(columns="n_cells").sum(axis=1), 1.0)
    cells = pd.read_csv(tmp_path / "out" / "spot_cells.csv", keep_default_na=False)
    assert list(cells.columns) == ["cell_id", "spot_id", "cell_type", "confidence"]
    assert len(cells) == data.protein.n_obs


def test_spot_composition_errors(spot_run) -> None:
    data, res = spot_run
    m = res.mdata
    with pytest.raises(InputError, match="modality='metabolite' is not in mdata"):
        smo.annotate.spot_composition(m, data.protein, modality="metabolite", inplace=False)
    with pytest.raises(InputError, match="cells lack 2 feature"):
        smo.annotate.spot_composition(m, data.protein[:, 2:], modality="protein", inplace=False)
    out = smo.annotate.spot_composition(m, data.protein, inplace=False)
    assert out.n_cells.sum() == m.uns["spot_composition"]["n_cells_in_spots"]


def test_spot_composition_figure(spot_run) -> None:
    from matplotlib.collections import PatchCollection

    _, res = spot_run
    ax = smo.pl.spot_composition(res)
    pies = [c for c in ax.collections if isinstance(c, PatchCollection)]
    assert len(pies) == 1
    # one wedge per (spot, type present in the spot)
    assert len(pies[0].get_paths()) == int((res.mdata.obsm[Keys.COMPOSITION].to_numpy() > 0).sum())
    assert "spot_composition" in [s.name for s in smo.pl.figure_specs()]


@pytest.mark.parametrize("rna_normalization", ["library", "log1p"])
def test_cells_get_the_preprocessing_of_the_modality(rna_normalization: str) -> None:
    # put through the spot-level preprocessing, the very cells it was fitted on give back its own layer
    from spatialmultiomics.annotate._spots import _preprocess_like

    mdata = smo.datasets.paper_benchmark(seed=0)
    raw = {name: mdata[name].copy() for name in ("rna", "protein")}
    smo.pp.preprocess(mdata, rna_normalization=rna_normalization)
    for name, cells in raw.items():
        got = _preprocess_like(mdata, name, cells)
        want = mdata[name].layers[Keys.PREPROCESSED]
        got = got.toarray() if hasattr(got, "toarray") else got
        want = want.toarray() if hasattr(want, "toarray") else want
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
