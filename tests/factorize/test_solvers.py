"""Solver functions on arrays: monotone loss, exact errors, NNLS optimality, stopping rule, sparse = dense."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls

from spatialmultiomics.factorize._init import initialize
from spatialmultiomics.factorize._rowpass import RowData
from spatialmultiomics.factorize._solvers import SOLVERS, _fit_hals, _fit_mu, _remaining_decrease, _stop


def _problem(planted, noise: float = 0.05) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[np.ndarray]]:
    _, _, Xs = planted(n_cells=80, sizes=(40, 10), k=3, noise=noise)
    blocks = [X.astype(np.float32) for X in Xs]
    scales = np.array([1.0 / np.linalg.norm(X) for X in blocks])
    W0, G0 = initialize(RowData.build(blocks, scales), 3, init="nndsvda", rng=np.random.default_rng(0))
    return blocks, scales, W0, [G0[:, :40], G0[:, 40:]]


def _error(blocks, scales, W, Hs) -> float:
    return float(
        np.sqrt(
            sum(np.sum((s * X.astype(np.float64) - W @ H) ** 2) for X, s, H in zip(blocks, scales, Hs, strict=True))
        )
    )


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_errors_are_exact_monotone_and_known_every_iteration(planted, solver: str) -> None:
    blocks, scales, W0, Hs0 = _problem(planted)
    W, Hs, n_iter, errors, converged = SOLVERS[solver](blocks, scales, W0, Hs0, max_iter=35, tol=-np.inf)
    assert n_iter == 35
    assert not converged
    assert len(errors) == 36  # initial, then after every iteration
    *_, errors12, _ = SOLVERS[solver](blocks, scales, W0, Hs0, max_iter=12, tol=-np.inf)
    assert errors[12] == pytest.approx(errors12[-1], rel=1e-6)  # the error after iteration 12 of the longer run
    assert errors[0] == pytest.approx(_error(blocks, scales, W0, Hs0), rel=1e-6)
    assert errors[-1] == pytest.approx(_error(blocks, scales, W, Hs), rel=1e-6)
    assert np.all(np.diff(errors) <= 0)
    assert W.dtype == np.float32
    assert all(H.dtype == np.float32 for H in Hs)
    assert W.min() >= 0
    assert min(H.min() for H in Hs) >= 0


def test_remaining_decrease_is_the_geometric_tail() -> None:
    # decreases 0.1, 0.05 (relative to the error before each): ratio 1/2, so 0.05 * (1/2 + 1/4 + ...) remains
    errors = [1.0, 0.9, 0.9 * 0.95]
    assert _remaining_decrease(errors) == pytest.approx(0.05)
    assert _remaining_decrease(errors[:2]) == np.inf  # one decrease: no rate yet
    # 0.1 then 0.111: not slowing down, extrapolated at the capped rate 0.9 (nine more such decreases)
    assert _remaining_decrease([1.0, 0.9, 0.8]) == pytest.approx(9 * 0.1 / 0.9)
    assert _remaining_decrease([1.0, 0.9, 0.9]) == 0.0  # no decrease: at the rounding floor
    assert not _stop(errors, 0.0, 2, 0.01, lambda *a: None, "test")  # 5 % still to come
    assert _stop(errors, 0.0, 2, 0.1, lambda *a: None, "test")
    assert not _stop(errors, 0.02, 2, 0.1, lambda *a: None, "test")  # 2 % of the cells changed factor
    assert not _stop(errors, 0.0, 2, 0.0, lambda *a: None, "test")  # tol=0 never stops


def test_stopping_rule_stops_when_the_rest_is_below_tol(planted) -> None:
    blocks, scales, W0, Hs0 = _problem(planted)
    *_, errors, converged = _fit_hals(blocks, scales, W0, Hs0, max_iter=1000, tol=1e-3)
    assert converged
    assert len(errors) < 1001
    assert _remaining_decrease(errors) < 1e-3
    assert _remaining_decrease(errors[:-1]) >= 1e-3 or len(errors) < 4
    # and the error it stops at is within 0.2 % of the converged one
    *_, full, _ = _fit_hals(blocks, scales, W0, Hs0, max_iter=2000, tol=1e-9)
    assert full[-1] <= errors[-1] <= 1.002 * full[-1]


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_fixed_h_solves_nnls_like_scipy(planted, solver: str) -> None:
    blocks, scales, W0, Hs0 = _problem(planted)
    _, Hs, _, _, _ = _fit_hals(blocks, scales, W0, Hs0, max_iter=200, tol=1e-6)
    G = np.hstack(Hs).astype(np.float64)
    X = np.hstack([s * X.astype(np.float64) for X, s in zip(blocks, scales, strict=True)])
    expected = np.array([nnls(G.T, row)[0] for row in X])
    start = np.full_like(W0, W0.mean())
    W, Hs_after, _, _, _ = SOLVERS[solver](blocks, scales, start, Hs, max_iter=3000, tol=1e-9, update_H=False)
    for before, after in zip(Hs, Hs_after, strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(W, expected, atol=2e-3 * expected.max())


@pytest.mark.parametrize("solver", [_fit_hals, _fit_mu])
def test_sparse_blocks_give_the_dense_result(planted, solver) -> None:
    blocks, scales, W0, Hs0 = _problem(planted)
    blocks = [np.where(np.median(X, keepdims=True) < X, X, 0).astype(np.float32) for X in blocks]
    dense = solver(blocks, scales, W0, Hs0, max_iter=50, tol=-np.inf)
    csr = solver([sp.csr_matrix(X) for X in blocks], scales, W0, Hs0, max_iter=50, tol=-np.inf)
    csc = solver([sp.csc_matrix(blocks[0]), blocks[1]], scales, W0, Hs0, max_iter=50, tol=-np.inf)
    for other in (csr, csc):
        np.testing.assert_allclose(other[0], dense[0], rtol=1e-3, atol=1e-5 * dense[0].max())
        np.testing.assert_allclose(other[3], dense[3], rtol=1e-6)


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_repeated_sweeps_keep_the_loss_monotone_and_help(planted, monkeypatch, solver: str) -> None:
    import spatialmultiomics.factorize._solvers as solvers

    blocks, scales, W0, Hs0 = _problem(planted, noise=0.2)
    monkeypatch.setattr(solvers, "INNER_ALPHA", 0.0)  # one sweep per update
    *_, plain, _ = SOLVERS[solver](blocks, scales, W0, Hs0, max_iter=30, tol=-np.inf)
    monkeypatch.setattr(solvers, "INNER_ALPHA", 1e9)  # up to MAX_INNER sweeps per update
    *_, repeated, _ = SOLVERS[solver](blocks, scales, W0, Hs0, max_iter=30, tol=-np.inf)
    assert np.all(np.diff(repeated) <= 0)
    assert repeated[-1] <= plain[-1]


def test_cost_model_repeats_sweeps_only_when_products_dominate() -> None:
    from spatialmultiomics.factorize._solvers import MAX_INNER, _max_inner, _product_cost, _sweep_cost

    tiny = [np.ones((200, 510), dtype=np.float32)]
    assert _max_inner(_product_cost(tiny, 4), _sweep_cost(200, 4)) == 1
    big = [sp.random(20000, 2000, density=0.1, format="csr", dtype=np.float32, random_state=0)]
    assert _max_inner(_product_cost(big, 20), _sweep_cost(20000, 20)) == MAX_INNER


def test_minibatch_recovers_planted_factors_and_reports_exact_error(planted, match) -> None:
    from spatialmultiomics.factorize._solvers import _fit_minibatch

    W_true, _, Xs = planted(n_cells=2000, sizes=(60, 12), k=4, noise=0.01)
    blocks = [X.astype(np.float32) for X in Xs]
    scales = np.array([1.0 / np.linalg.norm(X) for X in blocks])
    W0, G0 = initialize(RowData.build(blocks, scales), 4, init="nndsvda", rng=np.random.default_rng(0))
    Hs0 = [G0[:, :60], G0[:, 60:]]
    run = _fit_minibatch(blocks, scales, W0, Hs0, max_iter=50, tol=1e-4, batch_size=256, rng=np.random.default_rng(1))
    W, Hs, n_iter, errors, converged = run
    assert converged
    assert n_iter < 50
    assert len(errors) == n_iter + 2  # initial, one per epoch, final exact
    assert errors[-1] == pytest.approx(_error(blocks, scales, W, Hs), rel=1e-6)
    assert errors[-1] < 0.5 * errors[0]
    assert match(W_true, W).min() > 0.99
    # deterministic for the same batch order, different for another
    again = _fit_minibatch(blocks, scales, W0, Hs0, max_iter=50, tol=1e-4, batch_size=256, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(W, again[0])
    other = _fit_minibatch(blocks, scales, W0, Hs0, max_iter=50, tol=1e-4, batch_size=256, rng=np.random.default_rng(2))
    assert not np.array_equal(W, other[0])
    # close to the full-batch optimum
    full = _fit_hals(blocks, scales, W0, Hs0, max_iter=500, tol=1e-6)
    assert errors[-1] <= 1.01 * full[3][-1]


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_numba_path_gives_the_numpy_result(planted, monkeypatch, solver: str) -> None:
    pytest.importorskip("numba")
    import spatialmultiomics.factorize._rowpass as rowpass
    import spatialmultiomics.factorize._solvers as solvers

    monkeypatch.setattr(solvers, "_inner_counts", lambda *args: (3, 3))  # the two paths' cost models differ
    blocks, scales, W0, Hs0 = _problem(planted)
    blocks = [sp.csr_matrix(np.where(np.median(blocks[0]) < blocks[0], blocks[0], 0)), blocks[1]]
    numpy_run = SOLVERS[solver](blocks, scales, W0, Hs0, max_iter=60, tol=-np.inf)
    monkeypatch.setattr(rowpass, "NUMBA_MIN_WORK", 0.0)
    numba_run = SOLVERS[solver](blocks, scales, W0, Hs0, max_iter=60, tol=-np.inf)
    np.testing.assert_allclose(numba_run[0], numpy_run[0], rtol=1e-3, atol=1e-4 * numpy_run[0].max())
    np.testing.assert_allclose(numba_run[3], numpy_run[3], rtol=1e-4)
    dense = [blocks[0].toarray(), blocks[1]]
    assert numba_run[3][-1] == pytest.approx(_error(dense, scales, numba_run[0], numba_run[1]), rel=1e-5)


def test_threads_chosen_at_run_time_leave_the_result_unchanged(planted, monkeypatch) -> None:
    pytest.importorskip("numba")
    import spatialmultiomics.factorize._rowpass as rowpass

    monkeypatch.setattr(rowpass, "NUMBA_MIN_WORK", 0.0)  # the numba kernels on a small input
    blocks, scales, W0, Hs0 = _problem(planted)
    runs = []
    for threads in (1, 2):
        data = RowData.build(blocks, scales, n_threads=threads)
        W, Hs, _, errors, _ = _fit_hals(blocks, scales, W0, Hs0, max_iter=8, tol=0.0, data=data)
        assert data.n_threads == threads  # the caller's setting is restored after the timed passes
        runs.append((W, Hs[0], errors))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
