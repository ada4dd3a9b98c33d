"""Exact neighbour searches of the annotation (annotate._neighbors): grouped == brute force == the definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mode

from spatialmultiomics.annotate._neighbors import (
    BruteNeighbors,
    GroupedNeighbors,
    brute_neighbors,
    exact_neighbors,
    vote,
)


def _definition(R: np.ndarray, Q: np.ndarray, k: int) -> np.ndarray:
    """The k nearest rows of R in the order (distance, index), from the full distance matrix in float64."""
    out = []
    for a in range(0, Q.shape[0], 100):
        D = np.square(Q[a : a + 100].astype(np.float64)[:, None, :] - R.astype(np.float64)[None, :, :]).sum(axis=2)
        out.append(np.lexsort((np.broadcast_to(np.arange(R.shape[0]), D.shape), D), axis=1)[:, :k])
    return np.concatenate(out)


def _clustered(n: int, d: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (12, d))
    return (centres[rng.integers(0, 12, n)] + rng.normal(0.0, spread, (n, d))).astype(np.float32)


@pytest.mark.parametrize(("n_ref", "spread"), [(3000, 0.3), (3000, 3.0), (40, 1.0)])
def test_grouped_search_finds_the_brute_force_neighbours(n_ref, spread) -> None:
    R = _clustered(n_ref, 16, spread, 0)
    Q = _clustered(800, 16, spread, 1)
    Q[:50] = np.random.default_rng(2).normal(0.0, 5.0, (50, 16))  # far from every group
    grouped = GroupedNeighbors.fit(R, 15)
    assert len(grouped.models) == (20 if n_ref == 3000 else 1)
    got = grouped.kneighbors(Q)
    np.testing.assert_array_equal(got, brute_neighbors(R, Q, 15))
    np.testing.assert_array_equal(got, _definition(R, Q, 15))


def test_ties_go_to_the_smaller_reference_index_in_both_searches() -> None:
    # points on an integer grid, every one repeated 3 times: distances are exact in float64 and tie in blocks
    rng = np.random.default_rng(0)
    base = rng.integers(0, 6, (400, 4)).astype(np.float32)
    R = np.repeat(base, 3, axis=0)[rng.permutation(1200)]
    Q = rng.integers(0, 6, (300, 4)).astype(np.float32) + np.float32(0.5) * rng.integers(0, 2, (300, 4))
    want = _definition(R, Q, 10)
    D = np.square(Q[:, None, :] - R[None, :, :]).sum(axis=2)
    d_k, d_next = np.sort(D, axis=1)[:, 9], np.sort(D, axis=1)[:, 10]
    assert (d_k == d_next).mean() > 0.5  # most queries have a tie across the k-th place
    np.testing.assert_array_equal(brute_neighbors(R, Q, 10), want)
    grouped = GroupedNeighbors.fit(R, 10, n_groups=8)
    assert len(grouped.models) == 8
    np.testing.assert_array_equal(grouped.kneighbors(Q), want)
    # and the labels voted from them: the majority, ties of the vote to the smaller label (scipy's mode)
    lab = rng.integers(0, 5, R.shape[0])
    np.testing.assert_array_equal(vote(lab, want), mode(lab[want], axis=1, keepdims=False).mode)


def test_exact_neighbors_picks_groups_only_where_they_pay() -> None:
    tight = _clustered(6000, 16, 0.05, 3)  # well separated: a query visits one group or two
    chosen = exact_neighbors(tight, 15, seed=0)
    assert isinstance(chosen, GroupedNeighbors)
    d_k = BruteNeighbors.fit(tight, 15).kneighbors(tight[:300], return_distance=True)[0][:, -1]
    assert chosen.visited_share(tight[:300], d_k) < 0.2
    noise = np.random.default_rng(4).normal(size=(6000, 40)).astype(np.float32)  # no structure: every group
    assert isinstance(exact_neighbors(noise, 15, seed=0), BruteNeighbors)
    assert isinstance(exact_neighbors(tight[:100], 15, seed=0), BruteNeighbors)  # small reference
    Q = _clustered(500, 16, 0.05, 5)
    np.testing.assert_array_equal(chosen.kneighbors(Q), _definition(tight, Q, 15))


def test_vote_equals_scipy_mode() -> None:
    rng = np.random.default_rng(6)
    lab = rng.integers(0, 7, 300)
    nb = rng.integers(0, 300, (1000, 15))
    np.testing.assert_array_equal(vote(lab, nb), mode(lab[nb], axis=1, keepdims=False).mode)
