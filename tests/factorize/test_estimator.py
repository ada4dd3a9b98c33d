"""JointNMF: planted-factor recovery, input kinds, determinism, weighting, parity with scikit-learn, errors."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.decomposition import NMF

from spatialmultiomics._errors import InputError
from spatialmultiomics._warnings import ConvergenceWarning
from spatialmultiomics.factorize import JointNMF


@pytest.mark.parametrize(("solver", "max_iter"), [("hals", 400), ("mu", 2000)])
def test_planted_factors_are_recovered(planted, match, solver: str, max_iter: int) -> None:
    W, Hs, Xs = planted()
    model = JointNMF(5, solver=solver, max_iter=max_iter)
    Wh = model.fit_transform(Xs)
    assert match(W, Wh).min() > 0.99
    for H, Hh in zip(Hs, model.components_, strict=True):
        assert match(H.T, Hh.T).min() > 0.99
    # components_ are in input units: X_b ~ W @ H_b block by block
    for X, Hh in zip(Xs, model.components_, strict=True):
        assert np.linalg.norm(X - Wh @ Hh) < 0.03 * np.linalg.norm(X)


def test_outputs_dtypes_shapes_and_attributes(planted) -> None:
    _, _, Xs = planted()
    model = JointNMF(5)
    W = model.fit_transform([X.astype(np.float64) for X in Xs])
    assert W.dtype == np.float32
    assert W.shape == (300, 5)
    assert [H.shape for H in model.components_] == [(5, 200), (5, 30), (5, 12)]
    assert all(H.dtype == np.float32 for H in model.components_)
    assert model.n_features_in_ == [200, 30, 12]
    assert model.n_components_ == 5
    assert isinstance(model.loss_curve_, list)
    assert model.loss_curve_[-1] == model.reconstruction_err_
    assert len(model.loss_curve_) == model.n_iter_ + 1
    np.testing.assert_allclose(model.block_scales_, [1 / np.linalg.norm(X) for X in Xs], rtol=1e-6)
    # reconstruction_err_ is the Frobenius norm of the weighted residual
    residual = sum(
        s**2 * np.sum((X - W.astype(np.float64) @ H) ** 2)
        for X, H, s in zip(Xs, model.components_, model.block_scales_, strict=True)
    )
    assert model.reconstruction_err_ == pytest.approx(np.sqrt(residual), rel=1e-4)
    # documented normalisation: unit norm of each row of the weighted joint loadings
    G = np.hstack([s * H for H, s in zip(model.components_, model.block_scales_, strict=True)])
    np.testing.assert_allclose(np.linalg.norm(G, axis=1), 1.0, rtol=1e-5)
    assert model.fit(Xs) is model


def test_sparse_input_gives_the_dense_result(planted) -> None:
    _, _, Xs = planted()
    Xs = [np.where(np.median(X, keepdims=True) < X, X, 0.0) for X in Xs]
    # run to a tight tolerance: where a loose one stops can differ by an iteration with the rounding of the sums
    dense = JointNMF(5, tol=1e-7, max_iter=2000).fit_transform(Xs)
    for blocks in (
        [sp.csr_matrix(X) for X in Xs],
        [sp.csc_matrix(Xs[0]), Xs[1], sp.coo_matrix(Xs[2])],
        [sp.csr_array(X) for X in Xs],
    ):
        got = JointNMF(5, tol=1e-7, max_iter=2000).fit_transform(blocks)
        np.testing.assert_allclose(got, dense, rtol=1e-3, atol=1e-4 * dense.max())


def test_sparse_input_with_duplicates_is_summed_and_not_modified() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((30, 8)) * (rng.random((30, 8)) < 0.6)
    coo = sp.coo_matrix(dense)
    rows, cols, half = np.r_[coo.row, coo.row], np.r_[coo.col, coo.col], np.r_[coo.data, coo.data] / 2
    order = np.lexsort((cols, rows))
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=30))]
    raw = sp.csr_matrix((half[order], cols[order], indptr), shape=dense.shape)  # every value split in two
    assert not raw.has_canonical_format
    nnz_before = raw.nnz
    a = JointNMF(2).fit(dense)
    b = JointNMF(2).fit(raw)
    assert raw.nnz == nnz_before
    assert b.block_scales_[0] == pytest.approx(a.block_scales_[0], rel=1e-6)
    assert b.reconstruction_err_ == pytest.approx(a.reconstruction_err_, rel=1e-4)


# short runs: determinism is tested here, not convergence
@pytest.mark.filterwarnings("ignore::spatialmultiomics._warnings.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["hals", "mu"])
@pytest.mark.parametrize("init", ["nndsvda", "random"])
def test_same_seed_is_bit_identical_and_seeds_differ(planted, solver: str, init: str) -> None:
    _, _, Xs = planted(noise=0.2)
    kwargs = {"solver": solver, "init": init, "max_iter": 60, "tol": 1e-3}
    a = JointNMF(5, seed=3, **kwargs).fit_transform(Xs)
    model = JointNMF(5, seed=3, **kwargs)
    b = model.fit_transform(Xs)
    c = model.fit_transform(Xs)  # repeated calls on the same estimator
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    d = JointNMF(5, seed=4, **kwargs).fit_transform(Xs)
    assert not np.array_equal(a, d)


def _modality_errors(blocks: list[np.ndarray], weights) -> tuple[float, float]:
    model = JointNMF(6, modality_weights=weights, max_iter=1000)
    W = model.fit_transform(blocks)
    return tuple(
        float(np.linalg.norm(X - W @ H) / np.linalg.norm(X)) for X, H in zip(blocks, model.components_, strict=True)
    )


def test_balanced_weights_keep_a_small_modality_from_drowning() -> None:
    rng = np.random.default_rng(0)
    n = 400  # 2000 genes driven by 8 programmes, 10 proteins by 3 other ones, only 6 factors for both
    genes = (rng.gamma(1.0, 1.0, (n, 8)) * (rng.random((n, 8)) < 0.3)) @ (
        rng.gamma(1.0, 1.0, (8, 2000)) * (rng.random((8, 2000)) < 0.3)
    ) + 0.05 * rng.random((n, 2000))
    proteins = rng.gamma(1.0, 1.0, (n, 3)) @ rng.gamma(1.0, 1.0, (3, 10)) + 0.05 * rng.random((n, 10))
    genes_bal, proteins_bal = _modality_errors([genes, proteins], None)
    genes_raw, proteins_raw = _modality_errors([genes, proteins], "none")
    # balanced: the 10-protein block is reconstructed at least as well as the 2000-gene block
    assert proteins_bal < 1.2 * genes_bal
    # unweighted: the genes take the factors, the proteins are reconstructed much worse
    assert proteins_raw > 1.5 * genes_raw
    assert proteins_raw > 2.5 * proteins_bal
    # user weights are relative: a heavier protein weight improves the proteins further
    _, proteins_heavy = _modality_errors([genes, proteins], [1.0, 3.0])
    assert proteins_heavy < proteins_bal


@pytest.mark.filterwarnings("ignore::spatialmultiomics._warnings.ConvergenceWarning")  # short runs on purpose
def test_weights_define_block_scales(planted) -> None:
    _, _, Xs = planted()
    norms = np.array([np.linalg.norm(X) for X in Xs])
    model = JointNMF(5, modality_weights=[1.0, 2.0, 0.5], max_iter=20, tol=1e-2).fit(Xs)
    np.testing.assert_allclose(model.block_scales_, np.array([1.0, 2.0, 0.5]) / norms, rtol=1e-6)
    model = JointNMF(5, modality_weights="none", max_iter=20, tol=1e-2).fit(Xs)
    np.testing.assert_array_equal(model.block_scales_, [1.0, 1.0, 1.0])


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_loss_curve_is_non_increasing(planted, solver: str) -> None:
    _, _, Xs = planted(noise=0.01)
    model = JointNMF(5, solver=solver, max_iter=300, tol=1e-6)
    with pytest.warns(ConvergenceWarning) if solver == "mu" else _no_warning():
        model.fit(Xs)
    curve = np.array(model.loss_curve_)
    assert np.all(np.diff(curve) <= 0)
    assert curve[-1] < 0.05 * curve[0]


class _no_warning:  # a do-nothing context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


@pytest.mark.parametrize("noise", [0.05, 0.3])
def test_error_within_2_percent_of_sklearn_cd(planted, noise: float) -> None:
    _, _, Xs = planted(sizes=(200,), noise=noise)
    X = Xs[0].astype(np.float32)
    reference = NMF(5, solver="cd", init="nndsvda", random_state=0, max_iter=1000).fit(X)
    model = JointNMF(5, modality_weights="none", max_iter=1000).fit(X)  # a single array is one block
    assert model.reconstruction_err_ == pytest.approx(reference.reconstruction_err_, rel=0.02)


def test_convergence_warning_at_tiny_max_iter(planted) -> None:
    _, _, Xs = planted()
    # the stopping rule needs two decreases of the error: one iteration can never meet it
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        JointNMF(5, max_iter=1).fit(Xs)
    model = JointNMF(5).fit(Xs)
    with pytest.warns(ConvergenceWarning, match="transform"):
        model.set_params(max_iter=1).transform(Xs)


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_transform_recovers_loadings_of_new_cells(planted, match, solver: str) -> None:
    W, _, Xs = planted(n_cells=400)
    model = JointNMF(5, solver=solver, max_iter=2000, tol=1e-5)
    W_fit = model.fit_transform([X[:300] for X in Xs])
    again = model.transform([X[:300] for X in Xs])
    np.testing.assert_allclose(again, W_fit, atol=0.02 * W_fit.max())
    new = model.transform([X[300:] for X in Xs])
    assert new.dtype == np.float32
    assert new.shape == (100, 5)
    assert match(W[300:], new).min() > 0.99


def test_sklearn_contract(planted) -> None:
    model = JointNMF(4, solver="mu", modality_weights=[1, 2], seed=7)
    params = model.get_params()
    assert params["n_components"] == 4
    assert params["modality_weights"] == [1, 2]
    twin = clone(model)
    assert twin.get_params() == params
    assert not hasattr(twin, "components_")
    with pytest.raises(ValueError, match="not fitted"):
        twin.transform(np.ones((3, 4)))


def test_verbose_logs_progress(planted, caplog) -> None:
    _, _, Xs = planted()
    with caplog.at_level(logging.INFO, logger="spatialmultiomics"):
        JointNMF(5, verbose=True).fit(Xs)
    assert "reconstruction error" in caplog.text


def _ok() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((20, 6)), rng.random((20, 3))]


def _with(index: int, value: np.ndarray) -> list[np.ndarray]:
    blocks = _ok()
    blocks[index] = value
    return blocks


@pytest.mark.parametrize(
    ("kwargs", "blocks", "match"),
    [
        ({}, _with(0, -np.ones((20, 6))), r"blocks\[0\] contains negative values"),
        ({}, _with(1, np.full((20, 3), np.nan)), r"blocks\[1\] contains NaN or infinite"),
        ({}, _with(1, np.full((20, 3), np.inf)), r"blocks\[1\] contains NaN or infinite"),
        ({}, _with(1, sp.csr_matrix(-np.eye(20, 3))), r"blocks\[1\] contains negative values"),
        ({}, _with(1, np.ones((19, 3))), r"different row counts \[20, 19\]"),
        ({}, _with(1, np.ones((20, 0))), r"blocks\[1\] is an empty block"),
        ({}, _with(0, np.ones(20)), r"blocks\[0\] must be 2-D"),
        ({}, _with(0, np.array([["a"] * 6] * 20)), r"blocks\[0\] must be a numeric matrix"),
        ({}, [], "empty list"),
        ({}, "counts.csv", "must be a matrix or a list of matrices"),
        ({}, _with(1, np.zeros((20, 3))), r"blocks\[1\] is all zeros"),
        ({"modality_weights": "none"}, _with(0, sp.csr_matrix((20, 6))), r"blocks\[0\] is all zeros"),
        ({"n_components": 10}, [np.ones((20, 3)), np.ones((20, 4))], "more factors than features"),
        ({"n_components": 25}, _ok(), "more factors than features"),
        ({"n_components": 0}, _ok(), "n_components must be an integer >= 1"),
        ({"solver": "cd"}, _ok(), r"solver must be one of \['hals', 'mu', 'minibatch'\], got 'cd'"),
        ({"init": "svd"}, _ok(), "init must be one of"),
        ({"max_iter": 0}, _ok(), "max_iter must be an integer >= 1"),
        ({"tol": -1}, _ok(), "tol must be a finite number >= 0"),
        ({"seed": "abc"}, _ok(), "seed must be an int"),
        ({"modality_weights": [1.0]}, _ok(), "1 values for 2 blocks"),
        ({"modality_weights": [1.0, 0.0]}, _ok(), "must all be finite and > 0"),
        ({"modality_weights": [1.0, -2.0]}, _ok(), "must all be finite and > 0"),
        ({"modality_weights": "equal"}, _ok(), "modality_weights must be None/'balanced', 'none'"),
        ({"modality_weights": ["a", "b"]}, _ok(), "modality_weights must be None/'balanced', 'none'"),
    ],
)
def test_input_errors(kwargs: dict, blocks, match: str) -> None:
    with pytest.raises(InputError, match=match):
        JointNMF(**{"n_components": 2, **kwargs}).fit(blocks)


def test_transform_input_errors() -> None:
    model = JointNMF(2).fit(_ok())
    with pytest.raises(InputError, match="transform got 1 blocks but the model was fitted on 2"):
        model.transform(_ok()[0])
    with pytest.raises(InputError, match=r"blocks with \[6, 4\] features but the model was fitted on \[6, 3\]"):
        model.transform([np.ones((5, 6)), np.ones((5, 4))])
    with pytest.raises(InputError, match="negative"):
        model.transform([np.ones((5, 6)), -np.ones((5, 3))])


def test_minibatch_solver_recovers_planted_factors(planted, match) -> None:
    W, Hs, Xs = planted(n_cells=1500)
    model = JointNMF(5, solver="minibatch", batch_size=200, max_iter=100)
    Wh = model.fit_transform(Xs)
    assert match(W, Wh).min() > 0.99
    for H, Hh in zip(Hs, model.components_, strict=True):
        assert match(H.T, Hh.T).min() > 0.99
    full = JointNMF(5).fit(Xs)
    assert model.reconstruction_err_ <= 1.01 * full.reconstruction_err_
    again = JointNMF(5, solver="minibatch", batch_size=200, max_iter=100).fit_transform(Xs)
    np.testing.assert_array_equal(Wh, again)


@pytest.mark.parametrize(("solver", "max_iter", "rel", "corr"), [("hals", 1000, 1e-4, 0.9999), ("mu", 300, 2e-2, 0.99)])
def test_torch_backend_gives_the_numpy_result(
    planted, match, solver: str, max_iter: int, rel: float, corr: float
) -> None:
    torch = pytest.importorskip("torch")
    from spatialmultiomics.factorize._torch import torch_device

    _, _, Xs = planted()
    Xs = [sp.csr_matrix(np.where(np.median(Xs[0]) < Xs[0], Xs[0], 0.0)), Xs[1], Xs[2]]
    kwargs = {"solver": solver, "max_iter": max_iter, "tol": 1e-6}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # MU may need more iterations at this tolerance
        reference = JointNMF(5, **kwargs)
        W_ref = reference.fit_transform(Xs)
        model = JointNMF(5, backend="torch", **kwargs)
        W = model.fit_transform(Xs)
    assert isinstance(W, np.ndarray)
    assert W.dtype == np.float32
    assert model.reconstruction_err_ == pytest.approx(reference.reconstruction_err_, rel=rel)
    assert match(W_ref, W).min() > corr
    for H_ref, H in zip(reference.components_, model.components_, strict=True):
        assert match(H_ref.T, H.T).min() > corr
    assert torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "cuda"}, r"backend must be one of \['numpy', 'dask', 'torch'\], got 'cuda'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_backend_and_batch_size_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        JointNMF(2, **kwargs).fit([np.ones((10, 4)), np.ones((10, 2))])


def test_torch_backend_rejects_minibatch() -> None:
    pytest.importorskip("torch")
    with pytest.raises(InputError, match="backend='torch' runs solver 'hals' or 'mu', got solver='minibatch'"):
        JointNMF(2, solver="minibatch", backend="torch").fit([np.ones((10, 4)), np.ones((10, 2))])


def test_torch_backend_runs_on_the_device_asked_for(planted) -> None:
    pytest.importorskip("torch")
    _, _, Xs = planted()
    auto = JointNMF(4, backend="torch", max_iter=20).fit_transform(Xs)
    on_cpu = JointNMF(4, backend="torch", device="cpu", max_iter=20).fit_transform(Xs)
    # on a CPU-only machine 'auto' is the CPU: the same computation; on a GPU machine the CPU is forced
    import torch

    if not torch.cuda.is_available():
        np.testing.assert_array_equal(auto, on_cpu)
    with pytest.raises(InputError, match=r"device must be one of \['cuda', 'cpu'\], got 'tpu'"):
        JointNMF(4, backend="torch", device="tpu").fit(Xs)
