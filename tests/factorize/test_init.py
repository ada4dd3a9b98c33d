"""Initialisation: randomized SVD of the weighted joint matrix, NNDSVD(a) and random starts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics.factorize._init import _nndsvd, initialize, randomized_svd
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
