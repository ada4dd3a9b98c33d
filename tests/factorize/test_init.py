"""Initialisation: randomized SVD of the weighted joint matrix, NNDSVD(a) and random starts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics.factorize._init import _nndsvd, initialize, randomized_svd, sample_rows
from spatialmultiomics.factorize._rowpass import RowData


def _data(sparse: bool) -> tuple[RowData, np.ndarray]:
    rng = np.random.default_rng(0)
    W = rng.random((60, 4))
    X1 = (W @ rng.random((4, 40)) + 0.01 * rng.random((60, 40))).astype(np.float32)
    X2 = (W @ rng.random((4, 8)) + 0.01 * rng.random((60, 8))).astype(np.float32)
    X1 = np.where(np.quantile(X1, 0.2, keepdims=True) > X1, 0, X1).astype(np.float32)
    scales = np.array([0.3, 2.0])
    blocks = [sp.csr_matrix(X1), X2] if sparse else [X1, X2]
    joint = np.hstack([0.3 * X1.astype(np.float64), 2.0 * X2.astype(np.float64)])
    return RowData.build(blocks, scales), joint


@pytest.mark.parametrize("sparse", [False, True])
def test_randomized_svd_matches_exact_svd(sparse: bool) -> None:
    data, joint = _data(sparse)
    U, S, Vt = randomized_svd(data, 4, np.random.default_rng(0))
    s_exact = np.linalg.svd(joint, compute_uv=False)[:4]
    np.testing.assert_allclose(S, s_exact, rtol=1e-4)
    approx = (U * S) @ Vt
    _, _, vt = np.linalg.svd(joint, full_matrices=False)
    best = joint @ vt[:4].T @ vt[:4]  # best rank-4 approximation
    assert np.linalg.norm(joint - approx) == pytest.approx(np.linalg.norm(joint - best), rel=1e-3)
    assert U.dtype == np.float32
    assert Vt.dtype == np.float32


def test_nndsvd_first_component_and_non_negativity() -> None:
    data, joint = _data(False)
    U, S, Vt = randomized_svd(data, 4, np.random.default_rng(0))
    W, H = _nndsvd(U, S, Vt)
    np.testing.assert_allclose(W[:, 0], np.sqrt(S[0]) * np.abs(U[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(H[0], np.sqrt(S[0]) * np.abs(Vt[0]), rtol=1e-6)
    assert W.min() >= 0
    assert H.min() >= 0
    # the leading term alone already explains most of a positive matrix
    assert np.linalg.norm(joint - W @ H) < 0.5 * np.linalg.norm(joint)


def test_initialize_variants() -> None:
    data, joint = _data(True)
    mean = joint.mean()
    W, G = initialize(data, 4, init="nndsvd", rng=np.random.default_rng(0))
    assert (W == 0).any() or (G == 0).any()
    Wa, Ga = initialize(data, 4, init="nndsvda", rng=np.random.default_rng(0))
    assert Wa.min() > 0
    assert Ga.min() > 0
    np.testing.assert_allclose(Wa[W == 0], mean, rtol=1e-5)
    np.testing.assert_array_equal(Wa[W > 0], W[W > 0])
    Wr, Gr = initialize(data, 4, init="random", rng=np.random.default_rng(1))
    Wr2, Gr2 = initialize(data, 4, init="random", rng=np.random.default_rng(1))
    np.testing.assert_array_equal(Wr, Wr2)
    np.testing.assert_array_equal(Gr, Gr2)
    assert Wr.shape == (60, 4)
    assert Gr.shape == (4, 48)
    assert Wr.dtype == np.float32
    assert Gr.dtype == np.float32
    # scikit-learn's scale: |N(0, 1)| * sqrt(mean / k), whose expectation is sqrt(2 / pi) * sqrt(mean / k)
    values = np.concatenate([Wr.ravel(), Gr.ravel()])
    assert values.mean() == pytest.approx(np.sqrt(2 / np.pi) * np.sqrt(mean / 4), rel=0.15)


def _low_rank(n: int = 2000, seed: int = 0) -> tuple[RowData, np.ndarray]:
    """A CSR block and a dense block sharing rank-6 structure plus noise (rows sorted by their main factor)."""
    rng = np.random.default_rng(seed)
    W = rng.gamma(2.0, 1.0, (n, 6)) * (rng.random((n, 6)) < 0.3)
    W[np.arange(n), np.sort(rng.integers(0, 6, n))] += 2.0  # sorted: a contiguous sample would be biased
    X1 = rng.poisson(W @ rng.gamma(1.0, 1.0, (6, 80))).astype(np.float32)
    X2 = (W @ rng.random((6, 10)) + 0.05 * rng.random((n, 10))).astype(np.float32)
    scales = np.array([1.0 / np.linalg.norm(X1), 1.0 / np.linalg.norm(X2)])
    joint = np.hstack([scales[0] * X1.astype(np.float64), scales[1] * X2.astype(np.float64)])
    return RowData.build([sp.csr_matrix(X1), X2], scales), joint


def test_sample_rows_are_evenly_spaced() -> None:
    rows = sample_rows(1000, 7)
    np.testing.assert_array_equal(rows, [0, 142, 285, 428, 571, 714, 857])
    np.testing.assert_array_equal(sample_rows(5, 10), np.arange(5))  # never more rows than there are


def test_randomized_svd_on_a_sample_matches_the_full_one() -> None:
    data, joint = _low_rank()
    sample = data.take_rows(sample_rows(data.n_rows, 200))
    k = 6
    _, s_exact, vt_exact = np.linalg.svd(joint, full_matrices=False)
    best = np.linalg.norm(joint - joint @ vt_exact[:k].T @ vt_exact[:k])
    for kwargs in ({"sample": sample, "n_iter": 0}, {"sample": sample, "n_iter": 1, "rounds": 1}, {"n_iter": 1}):
        U, S, Vt = randomized_svd(data, k, np.random.default_rng(0), width_multiple=16, **kwargs)
        assert U.shape == (2000, k)
        assert Vt.shape == (k, 90)
        np.testing.assert_allclose(S, s_exact[:k], rtol=2e-3)
        err = np.linalg.norm(joint - (U.astype(np.float64) * S) @ Vt.astype(np.float64))
        assert err == pytest.approx(best, rel=2e-3)
        np.testing.assert_allclose(U.T.astype(np.float64) @ U, np.eye(k), atol=1e-3)


def test_initialize_large_input_uses_a_sample_and_is_as_good(monkeypatch) -> None:
    import spatialmultiomics.factorize._init as init_module

    data, joint = _low_rank()
    full_W, full_G = initialize(data, 6, init="nndsvda", rng=np.random.default_rng(0))
    taken = []
    original = RowData.take_rows

    def spy(self, rows):
        taken.append(rows)
        return original(self, rows)

    monkeypatch.setattr(RowData, "take_rows", spy)
    monkeypatch.setattr(init_module, "LARGE_INPUT_WORK", 0.0)
    monkeypatch.setattr(init_module, "SAMPLE_ROWS", 300)
    W, G = initialize(data, 6, init="nndsvda", rng=np.random.default_rng(0))
    assert len(taken) == 1
    np.testing.assert_array_equal(taken[0], sample_rows(2000, 300))
    W2, G2 = initialize(data, 6, init="nndsvda", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(W, W2)  # deterministic for a seed
    np.testing.assert_array_equal(G, G2)
    assert W.dtype == np.float32
    assert G.dtype == np.float32
    assert W.min() > 0
    assert G.min() > 0

    def error(W, G):
        return np.linalg.norm(joint - W.astype(np.float64) @ G.astype(np.float64))

    assert error(W, G) == pytest.approx(error(full_W, full_G), rel=0.01)
    # few rows: no sample, the power iteration runs on all of them
    monkeypatch.setattr(init_module, "SAMPLE_ROWS", 1000)
    initialize(data, 6, init="nndsvda", rng=np.random.default_rng(0))
    assert len(taken) == 2  # the two calls above only
