"""Kernels of the joint NMF against slow NumPy references on small random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from spatialmultiomics.factorize._kernels import (
    cross_g,
    cross_w,
    frobenius_loss,
    hals_sweep,
    mu_step,
    squared_norm,
    sum_and_squared_norm,
    total_sum,
)


def _blocks(rng: np.random.Generator, kind: str) -> tuple[list, list[np.ndarray], np.ndarray, np.ndarray]:
    """Three blocks (dense float32 copies for the reference), scales and offsets."""
    dense = [(rng.random((23, m)) * (rng.random((23, m)) < 0.4)).astype(np.float32) for m in (17, 5, 9)]
    convert = {"dense": np.asarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix}[kind]
    blocks = [convert(X) for X in dense]
    scales = np.array([0.5, 2.0, 1.3])
    offsets = np.array([0, 17, 22, 31])
    return blocks, dense, scales, offsets


def _joint(dense: list[np.ndarray], scales: np.ndarray) -> np.ndarray:
    return np.hstack([s * X.astype(np.float64) for X, s in zip(dense, scales, strict=True)])


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
def test_cross_products_match_dense_reference(kind: str) -> None:
    rng = np.random.default_rng(0)
    blocks, dense, scales, offsets = _blocks(rng, kind)
    X = _joint(dense, scales)
    G = rng.random((4, 31)).astype(np.float32)
    Wt = rng.random((4, 23)).astype(np.float32)
    got_w = cross_w(blocks, scales, offsets, G)
    got_g = cross_g(blocks, scales, offsets, Wt)
    assert got_w.dtype == np.float32
    assert got_g.dtype == np.float32
    assert got_w.flags.c_contiguous
    assert got_g.flags.c_contiguous
    np.testing.assert_allclose(got_w, G @ X.T, rtol=1e-5)
    np.testing.assert_allclose(got_g, Wt @ X, rtol=1e-5)


def test_hals_sweep_matches_elementwise_coordinate_descent() -> None:
    rng = np.random.default_rng(1)
    k, p = 4, 30
    B = rng.random((k, 12))
    X = rng.random((p, 12))
    A = rng.random((k, p)).astype(np.float32)
    gram = (B @ B.T).astype(np.float32)
    XA = (B @ X.T).astype(np.float32)
    expected = A.astype(np.float64)
    for j in range(k):  # slow reference: each entry is the clipped minimiser of its own quadratic
        for q in range(p):
            grad = sum(gram[j, i] * expected[i, q] for i in range(k)) - XA[j, q]
            expected[j, q] = max(expected[j, q] - grad / gram[j, j], 0.0)
    hals_sweep(A, gram, XA)
    np.testing.assert_allclose(A, expected, rtol=1e-4, atol=1e-6)


def test_hals_sweep_never_increases_the_objective_and_skips_empty_components() -> None:
    rng = np.random.default_rng(2)
    B = rng.random((3, 20))
    B[2] = 0.0  # an empty component: its Gram diagonal is 0
    X = rng.random((15, 20))
    A = rng.random((3, 15)).astype(np.float32)
    before_row = A[2].copy()

    def objective(a: np.ndarray) -> float:
        return float(np.sum((X - a.T.astype(np.float64) @ B) ** 2))

    before = objective(A)
    hals_sweep(A, (B @ B.T).astype(np.float32), (B @ X.T).astype(np.float32))
    assert objective(A) < before
    np.testing.assert_array_equal(A[2], before_row)
    assert A.min() >= 0


def test_mu_step_matches_formula_and_never_divides_by_zero() -> None:
    rng = np.random.default_rng(3)
    A = rng.random((3, 8)).astype(np.float32)
    gram = rng.random((3, 3)).astype(np.float32)
    gram = gram @ gram.T
    XA = rng.random((3, 8)).astype(np.float32)
    expected = A * XA / (gram @ A)
    mu_step(A, gram, XA)
    np.testing.assert_allclose(A, expected, rtol=1e-5)
    zero = np.zeros((2, 4), dtype=np.float32)
    mu_step(zero, np.zeros((2, 2), dtype=np.float32), np.ones((2, 4), dtype=np.float32))
    assert np.all(zero == 0)


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
def test_frobenius_loss_is_accurate_for_a_near_exact_fit(kind: str) -> None:
    rng = np.random.default_rng(4)
    k, n, sizes = 3, 40, (25, 6)
    Wt = rng.random((k, n)).astype(np.float32)
    G = rng.random((k, sum(sizes))).astype(np.float32)
    Wt[:, rng.random(n) < 0.3] = 0.0  # empty cells: zero rows, so the sparse blocks have structural zeros
    clean = Wt.T.astype(np.float64) @ G
    X = (clean + 1e-4 * rng.random(clean.shape) * (clean > 0)).astype(np.float32)
    dense = [X[:, :25], X[:, 25:]]
    convert = {"dense": np.ascontiguousarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix}[kind]
    blocks = [convert(b) for b in dense]
    scales = np.array([0.7, 1.9])
    offsets = np.array([0, 25, 31])
    Xj = _joint(dense, scales)
    # G in weighted units: fits the weighted joint matrix almost exactly
    Gw = np.hstack([G[:, :25] * 0.7, G[:, 25:] * 1.9]).astype(np.float32)
    expected = float(np.sum((Xj - Wt.T.astype(np.float64) @ Gw.astype(np.float64)) ** 2))
    norm_x2 = float(np.sum(Xj**2))
    got = frobenius_loss(norm_x2, blocks, scales, offsets, Wt, Gw)
    assert expected < 1e-7 * norm_x2  # the three terms nearly cancel
    assert got == pytest.approx(expected, rel=1e-6)


def test_frobenius_loss_tiny_residual_beats_float32_products() -> None:
    rng = np.random.default_rng(5)
    Wt = rng.random((4, 200)).astype(np.float32)
    G = rng.random((4, 50)).astype(np.float32)
    X = (Wt.T.astype(np.float64) @ G + 1e-4 * rng.random((200, 50))).astype(np.float32)
    X64 = X.astype(np.float64)
    expected = float(np.sum((X64 - Wt.T.astype(np.float64) @ G.astype(np.float64)) ** 2))
    norm_x2 = float(np.sum(X64**2))
    assert expected / norm_x2 < 1e-8
    got = frobenius_loss(norm_x2, [X], np.ones(1), np.array([0, 50]), Wt, G)
    assert got == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_squared_norm_and_total_sum(kind: str) -> None:
    rng = np.random.default_rng(6)
    X = (rng.random((30, 7)) * (rng.random((30, 7)) < 0.5)).astype(np.float32)
    B = sp.csr_matrix(X) if kind == "csr" else X
    assert squared_norm(B) == pytest.approx(float(np.sum(X.astype(np.float64) ** 2)), rel=1e-12)
    assert total_sum(B) == pytest.approx(float(np.sum(X.astype(np.float64))), rel=1e-12)
    both = sum_and_squared_norm(B)
    assert both[0] == pytest.approx(float(np.sum(X.astype(np.float64))), rel=1e-12)
    assert both[1] == pytest.approx(float(np.sum(X.astype(np.float64) ** 2)), rel=1e-12)
