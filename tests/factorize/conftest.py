"""Seeded synthetic data with planted non-negative factors, shared by the factorize tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment


def make_planted(
    n_cells: int = 300,
    sizes: tuple[int, ...] = (200, 30, 12),
    k: int = 5,
    noise: float = 0.01,
    seed: int = 0,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Return (W (n, k), [H_b (k, m_b)], [X_b = W H_b + noise]) with distinct supports per factor.

    Every cell has one dominant factor plus sparse gamma-distributed loadings on the others; every feature
    belongs to one factor (round robin) with a small sparse background on the others. The noise is absolute
    Gaussian, ``noise`` times the standard deviation of each clean block.
    """
    rng = np.random.default_rng(seed)
    W = rng.gamma(2.0, 1.0, (n_cells, k)) * (rng.random((n_cells, k)) < 0.4)
    W[np.arange(n_cells), rng.integers(0, k, n_cells)] += 1.0
    Hs, Xs = [], []
    for m in sizes:
        H = 0.05 * rng.random((k, m)) * (rng.random((k, m)) < 0.2)
        H[np.arange(m) % k, np.arange(m)] += rng.uniform(0.5, 2.0, m)
        X = W @ H
        X += noise * X.std() * np.abs(rng.standard_normal(X.shape))
        Hs.append(H)
        Xs.append(X)
    return W, Hs, Xs


def matched_correlations(truth: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Return the Pearson correlation of each true column with its Hungarian-matched found column."""
    k = truth.shape[1]
    C = np.corrcoef(truth.T, found.T)[:k, k:]
    rows, cols = linear_sum_assignment(-C)
    return C[rows, cols]


@pytest.fixture
def planted() -> Callable[..., tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]]:
    """Factory of planted data (fresh arrays per call)."""
    return make_planted


@pytest.fixture
def match() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Hungarian-matched correlations of true and recovered factors."""
    return matched_correlations
