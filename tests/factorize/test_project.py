"""smo.factorize.project: cell loadings from some modalities, the joint loadings held fixed."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pytest
from scipy.optimize import nnls

from spatialmultiomics import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics.factorize import joint_nmf, project


def _planted(seed: int = 0) -> md.MuData:
    rng = np.random.default_rng(seed)
    W = rng.gamma(1.0, 1.0, (120, 4))
    rna = ad.AnnData((W @ rng.gamma(1.0, 1.0, (4, 30))).astype(np.float32))
    prot = ad.AnnData((W @ rng.gamma(1.0, 1.0, (4, 6))).astype(np.float32))
    rna.var_names = [f"g{i}" for i in range(30)]
    prot.var_names, prot.obs_names = [f"p{i}" for i in range(6)], rna.obs_names
    rna.var[Keys.HVG] = np.arange(30) % 5 != 0  # a feature mask, as preprocess writes it
    with md.set_options(pull_on_update=False):
        return md.MuData({"rna": rna, "protein": prot})


@pytest.mark.filterwarnings(
    "ignore::spatialmultiomics._warnings.ConvergenceWarning"
)  # the fit's convergence is not tested here
def test_project_equals_per_cell_nnls_on_the_chosen_block() -> None:
    mdata = _planted()
    joint_nmf(mdata, n_components=4, max_iter=500, seed=0)
    cells = np.array([3, 10, 50, 119])
    got = project(mdata, "rna", cells=cells)
    mask = mdata["rna"].var[Keys.HVG].to_numpy()
    H = np.asarray(mdata["rna"].varm[Keys.NMF_LOADINGS], dtype=np.float64)[mask].T  # (k, used genes)
    X = np.asarray(mdata["rna"].X, dtype=np.float64)[:, mask]
    for row, cell in zip(got, cells, strict=True):
        ref, _ = nnls(H.T, X[cell])
        assert np.allclose(row, ref, rtol=2e-3, atol=2e-3 * ref.max())


@pytest.mark.filterwarnings("ignore::spatialmultiomics._warnings.ConvergenceWarning")
def test_project_on_every_block_reproduces_the_fitted_loadings() -> None:
    mdata = _planted(1)
    joint_nmf(mdata, n_components=4, max_iter=2000, tol=1e-8, seed=0)
    W = np.asarray(mdata.obsm[Keys.NMF])
    got = project(mdata, ["rna", "protein"])
    assert np.abs(got - W).max() <= 1e-2 * W.max()


def test_project_refuses_what_was_not_factorized() -> None:
    mdata = _planted()
    with pytest.raises(InputError, match="run joint_nmf first"):
        project(mdata, "rna")
    joint_nmf(mdata, n_components=3, max_iter=50, tol=0.5, seed=0)
    with pytest.raises(InputError, match="subset of the factorized"):
        project(mdata, "atac")
