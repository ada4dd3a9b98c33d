"""joint_nmf on a MuData: slots written, HVG restriction, layers, inplace=False, errors."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics.factorize import JointNMF, JointNMFResult, joint_nmf


@pytest.fixture(autouse=True)
def _mudata_new_update_behaviour():
    """Adopt mudata's future ``update()`` behaviour, else mudata 0.3 warns (an error here) on copy/write/read."""
    with md.set_options(pull_on_update=False):
        yield


def _mdata(planted, *, layer: bool = True) -> tuple[md.MuData, np.ndarray, np.ndarray]:
    """Three modalities on 300 cells: rna (sparse, with HVG), protein (dense, in a layer), metabolite (dense X)."""
    W, _, (genes, proteins, metabolites) = planted(sizes=(200, 30, 12))
    rng = np.random.default_rng(1)
    n = W.shape[0]
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n)])
    # 60 extra non-HVG genes of pure noise, interleaved with the 200 informative ones
    hvg = np.ones(260, dtype=bool)
    hvg[rng.choice(260, 60, replace=False)] = False
    counts = np.zeros((n, 260))
    counts[:, hvg] = genes
    counts[:, ~hvg] = 5.0 * rng.random((n, 60)) * (rng.random((n, 60)) < 0.3)
    rna = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs.copy())
    rna.var_names = [f"gene{i}" for i in range(260)]
    rna.var[Keys.HVG] = hvg
    protein = ad.AnnData(np.full((n, 30), 1e3, dtype=np.float32), obs=obs.copy())  # X is not what gets used
    protein.var_names = [f"protein{i}" for i in range(30)]
    if layer:
        protein.layers[Keys.PREPROCESSED] = proteins.astype(np.float32)
    else:
        protein.X = proteins.astype(np.float32)
    metabolite = ad.AnnData(metabolites.astype(np.float32), obs=obs.copy())
    metabolite.var_names = [f"met{i}" for i in range(12)]
    mdata = md.MuData({"rna": rna, "protein": protein, "metabolite": metabolite})
    return mdata, W, hvg


def test_joint_nmf_writes_slots(planted, match) -> None:
    mdata, W, hvg = _mdata(planted)
    assert joint_nmf(mdata, n_components=5) is None
    X_nmf = mdata.obsm[Keys.NMF]
    assert X_nmf.shape == (300, 5)
    assert X_nmf.dtype == np.float32
    assert match(W, X_nmf).min() > 0.99
    shapes = {name: mdata.mod[name].varm[Keys.NMF_LOADINGS].shape for name in mdata.mod}
    assert shapes == {"rna": (260, 5), "protein": (30, 5), "metabolite": (12, 5)}
    rna_loadings = mdata.mod["rna"].varm[Keys.NMF_LOADINGS]
    assert rna_loadings.dtype == np.float32
    assert np.all(rna_loadings[~hvg] == 0)
    assert np.all(rna_loadings[hvg].max(axis=1) > 0)
    uns = mdata.uns[Keys.NMF_UNS]
    assert uns["modalities"] == ["rna", "protein", "metabolite"]
    assert uns["block_scales"].shape == (3,)
    assert isinstance(uns["loss_curve"], np.ndarray)
    assert uns["loss_curve"][-1] == uns["reconstruction_err"]
    assert uns["n_iter"] > 0
    params = uns["params"]
    assert params["n_components"] == 5
    assert params["layer"] == Keys.PREPROCESSED
    assert params["solver"] == "hals"
    assert isinstance(params["version"], str)
    assert params["version"]


def test_joint_nmf_matches_the_estimator_on_the_selected_matrices(planted) -> None:
    mdata, _, hvg = _mdata(planted)
    joint_nmf(mdata, n_components=5, solver="mu", tol=1e-2)
    blocks = [
        mdata.mod["rna"].X[:, np.flatnonzero(hvg)],
        mdata.mod["protein"].layers[Keys.PREPROCESSED],  # the layer, not X
        mdata.mod["metabolite"].X,  # no layer: X
    ]
    model = JointNMF(5, solver="mu", tol=1e-2)
    W = model.fit_transform(blocks)
    np.testing.assert_array_equal(mdata.obsm[Keys.NMF], W)
    np.testing.assert_array_equal(mdata.mod["protein"].varm[Keys.NMF_LOADINGS], model.components_[1].T)
    np.testing.assert_array_equal(mdata.uns[Keys.NMF_UNS]["block_scales"], model.block_scales_)


def test_inplace_false_returns_result_and_leaves_mdata_untouched(planted) -> None:
    mdata, _, hvg = _mdata(planted)
    before = mdata.copy()
    result = joint_nmf(mdata, n_components=5, inplace=False)
    assert isinstance(result, JointNMFResult)
    assert Keys.NMF not in mdata.obsm
    assert Keys.NMF_UNS not in mdata.uns
    for name in mdata.mod:
        assert Keys.NMF_LOADINGS not in mdata.mod[name].varm
        assert list(mdata.mod[name].varm) == list(before.mod[name].varm)
    assert list(mdata.obsm) == list(before.obsm)
    assert result.W.shape == (300, 5)
    assert result.components["rna"].shape == (5, 260)
    assert np.all(result.components["rna"][:, ~hvg] == 0)
    assert set(result.block_scales) == {"rna", "protein", "metabolite"}
    joint_nmf(mdata, n_components=5)
    np.testing.assert_array_equal(mdata.obsm[Keys.NMF], result.W)
    assert mdata.uns[Keys.NMF_UNS]["reconstruction_err"] == result.reconstruction_err
    with pytest.raises(AttributeError):
        result.n_iter = 3  # frozen


def test_modalities_subset_weights_mapping_and_no_hvg(planted) -> None:
    mdata, _, _ = _mdata(planted, layer=False)
    joint_nmf(
        mdata,
        n_components=4,
        modalities=["protein", "rna"],
        use_highly_variable=False,
        modality_weights={"rna": 1.0, "protein": 2.0},
    )
    assert Keys.NMF_LOADINGS not in mdata.mod["metabolite"].varm
    assert mdata.mod["rna"].varm[Keys.NMF_LOADINGS].shape == (260, 4)
    assert np.all(mdata.mod["rna"].varm[Keys.NMF_LOADINGS].max(axis=1) > 0)  # all genes used
    uns = mdata.uns[Keys.NMF_UNS]
    assert uns["modalities"] == ["protein", "rna"]
    protein_norm = np.linalg.norm(mdata.mod["protein"].X)
    assert uns["block_scales"][0] == pytest.approx(2.0 / protein_norm, rel=1e-5)


def test_stale_mudata_is_updated(planted) -> None:
    mdata, _, _ = _mdata(planted)
    names = [f"spot{i}" for i in range(300)]
    for name in mdata.mod:
        mdata.mod[name].obs_names = names
    assert not mdata.obs_names.equals(mdata.mod["rna"].obs_names)
    joint_nmf(mdata, n_components=3)
    assert list(mdata.obs_names) == names
    assert mdata.obsm[Keys.NMF].shape == (300, 3)


def test_h5mu_round_trip(planted, tmp_path) -> None:
    mdata, _, _ = _mdata(planted)
    joint_nmf(mdata, n_components=3, seed=None)
    path = tmp_path / "nmf.h5mu"
    mdata.write(path)
    back = md.read_h5mu(path)
    np.testing.assert_array_equal(back.obsm[Keys.NMF], mdata.obsm[Keys.NMF])
    np.testing.assert_array_equal(back.mod["rna"].varm[Keys.NMF_LOADINGS], mdata.mod["rna"].varm[Keys.NMF_LOADINGS])
    assert back.uns[Keys.NMF_UNS]["n_iter"] == mdata.uns[Keys.NMF_UNS]["n_iter"]


def test_errors(planted) -> None:
    mdata, _, _ = _mdata(planted)
    with pytest.raises(InputError, match=r"modalities \['atac'\] are not in mdata.mod"):
        joint_nmf(mdata, modalities=["rna", "atac"])
    with pytest.raises(InputError, match="must not repeat"):
        joint_nmf(mdata, modalities=["rna", "rna"])
    with pytest.raises(InputError, match=r"missing \['metabolite'\]"):
        joint_nmf(mdata, modality_weights={"rna": 1.0, "protein": 1.0})
    with pytest.raises(InputError, match="more factors than features"):
        joint_nmf(mdata, n_components=400)
    mdata.mod["protein"].layers[Keys.PREPROCESSED][0, 0] = -1.0
    with pytest.raises(InputError, match="modality 'protein' contains negative values"):
        joint_nmf(mdata)
    mdata, _, _ = _mdata(planted)
    mdata.mod["rna"].var[Keys.HVG] = False
    with pytest.raises(InputError, match=r"modality 'rna': var\['highly_variable'\] selects no feature"):
        joint_nmf(mdata)
    mdata, _, _ = _mdata(planted)
    mdata.mod["metabolite"].obs_names = [f"other{i}" for i in range(300)]
    with pytest.raises(InputError, match="modality 'metabolite' does not have the same obs_names in the same order"):
        joint_nmf(mdata, inplace=False)
    mdata, _, _ = _mdata(planted)
    order = np.r_[1, 0, 2 : mdata.mod["protein"].n_obs]
    mdata.mod["protein"] = mdata.mod["protein"][order].copy()
    with pytest.raises(InputError, match="same order"):
        joint_nmf(mdata, modalities=["rna", "protein"])
