"""Small sparse-matrix helpers shared by the stages."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["one_hot"]


def one_hot(codes: np.ndarray, n_categories: int, dtype: type = np.float64) -> sp.csr_matrix:
    """Sparse (n, n_categories) indicator of each row's category code (codes in ``0 .. n_categories - 1``).

    ``one_hot(labels, k).T @ X`` sums the rows of ``X`` per category; ``C.T @ G @ C`` sums a graph's edge weights
    between categories.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = codes.size
    return sp.csr_matrix((np.ones(n, dtype=dtype), (np.arange(n), codes)), shape=(n, n_categories))
