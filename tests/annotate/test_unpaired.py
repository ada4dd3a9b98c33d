"""type_unpaired: cells whose partner profile is not their own are typed from the modalities they were measured in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics._keys import Keys
from spatialmultiomics._mudata import mudata_options


@pytest.fixture(scope="module")
def corrupted():
    """Synthetic tissue where 12 % of the cells carry the protein profile of a cell of another type (as an imputed
    or wrongly matched profile would), half flagged 'imputed', half 'matched' with a low pair confidence."""
    mdata = smo.datasets.synthetic_tissue(n_cells=2000, seed=1)
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    bad = np.sort(rng.choice(mdata.n_obs, 240, replace=False))
    donors = np.array([rng.choice(np.flatnonzero(truth != truth[i])) for i in bad])
    X = np.asarray(mdata["protein"].X).copy()
    X[bad] = X[donors]
    mdata["protein"].X = X
    status = np.full(mdata.n_obs, "matched", dtype=object)
    status[bad[::2]] = "imputed"
    confidence = rng.uniform(0.6, 1.0, mdata.n_obs)
    confidence[bad[1::2]] = 0.2
    confidence[bad[::2]] = np.nan
    mdata.obs["protein_status"] = pd.Categorical(status)
    mdata.obs["protein_match_confidence"] = confidence
    smo.pp.preprocess(mdata)
    smo.factorize.joint_nmf(mdata, n_components=14, seed=0)
    smo.annotate.annotate(mdata, markers=mdata.uns["markers"], seed=0)
    return mdata, truth, bad


def test_cells_without_their_own_partner_get_their_type_back(corrupted) -> None:
    mdata, truth, bad = corrupted
    with mudata_options():
        mdata = mdata.copy()
    before = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    summary = smo.annotate.type_unpaired(mdata)
    after = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    assert summary["n_cells"] == bad.size and summary["groups"]["rna"]["n_cells"] == bad.size
    acc_before, acc_after = np.mean(before[bad] == truth[bad]), np.mean(after[bad] == truth[bad])
    assert acc_after >= 0.9 and acc_after > acc_before + 0.1
    others = np.setdiff1d(np.arange(mdata.n_obs), bad)
    assert np.array_equal(after[others], before[others])  # fully measured cells keep the joint type
    src = mdata.obs[Keys.CELL_TYPE_FROM].astype(str).to_numpy()
    assert set(src[bad]) == {"rna"} and set(src[others]) == {"joint"}
    conf = np.asarray(mdata.obs[Keys.CELL_TYPE_CONFIDENCE])[bad]
    assert np.all((conf > 0) & (conf <= 1))


def test_confident_pairs_and_runs_without_alignment_are_left_alone(corrupted) -> None:
    mdata, _, bad = corrupted
    with mudata_options():
        mdata = mdata.copy()
    before = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    summary = smo.annotate.type_unpaired(mdata, min_confidence=0.0)  # only the imputed half
    assert summary["n_cells"] == bad[::2].size
    after = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    assert np.array_equal(after[bad[1::2]], before[bad[1::2]])
    del mdata.obs["protein_status"]
    assert smo.annotate.type_unpaired(mdata) is None


def test_annotate_measured_learns_the_types_from_the_fully_measured_cells_only(corrupted) -> None:
    mdata, truth, bad = corrupted
    with mudata_options():
        mdata = mdata.copy()
        own = np.setdiff1d(np.arange(mdata.n_obs), bad)
        alone = mdata[own].copy()
    markers = mdata.uns["markers"]
    smo.annotate.annotate(alone, markers=markers, seed=0)
    summary = smo.annotate.annotate_measured(mdata, markers=markers, seed=0)
    labels = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    # the fully measured cells are typed exactly as a run on them alone; the others by their vote
    assert np.array_equal(labels[own], alone.obs[Keys.CELL_TYPE].astype(str).to_numpy())
    assert summary["n_cells"] == bad.size and np.mean(labels[bad] == truth[bad]) >= 0.9
    assert (
        mdata.obs[Keys.CLUSTER].isna().to_numpy()[bad].all() and mdata.obs[Keys.CLUSTER].notna().to_numpy()[own].all()
    )
    # nothing imputed or doubtful: the same as annotate
    del mdata.obs["protein_status"]
    assert smo.annotate.annotate_measured(mdata, markers=markers, seed=0) is None
    with mudata_options():
        ref = mdata.copy()
    smo.annotate.annotate(ref, markers=markers, seed=0)
    assert np.array_equal(
        mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy(), ref.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    )


def test_measured_part_holds_only_what_annotate_reads(corrupted) -> None:
    from spatialmultiomics.annotate._unpaired import _measured_part

    mdata, _, bad = corrupted
    own = np.setdiff1d(np.arange(mdata.n_obs), bad)
    before = mdata.uns[Keys.NMF_UNS]["annotation"]
    sub = _measured_part(mdata, own)
    assert list(sub.obs_names) == list(mdata.obs_names[own])
    for name, adata in sub.mod.items():
        assert adata.X is None and list(adata.layers) == [Keys.PREPROCESSED]  # no raw values, no other layer
        got, full = adata.layers[Keys.PREPROCESSED], mdata[name].layers[Keys.PREPROCESSED][own]
        assert sp.issparse(got) == sp.issparse(full)  # sparse stays sparse
        np.testing.assert_array_equal(*(m.toarray() if sp.issparse(m) else m for m in (got, full)))
        assert adata.varm[Keys.NMF_LOADINGS].shape == mdata[name].varm[Keys.NMF_LOADINGS].shape
    np.testing.assert_array_equal(sub.obsm[Keys.NMF], mdata.obsm[Keys.NMF][own])
    smo.annotate.annotate(sub, markers=mdata.uns["markers"], seed=0)
    assert sub.uns[Keys.NMF_UNS]["annotation"]["params"]["clustering"]["n_clustered"] == own.size
    assert mdata.uns[Keys.NMF_UNS]["annotation"] is before  # the original's record untouched
