from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from spatialmultiomics import InputError
from spatialmultiomics.align import match_cells
from spatialmultiomics.align._match import RADIUS_RECALL, estimate_match_radius, nearest_cells


def _planted(jittered_grid, disk_jitter, n: int = 4000, jitter: float = 3.0, missing: float = 0.1, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = jittered_grid(n, rng)
    keep = np.sort(rng.choice(n, int((1 - missing) * n), replace=False))
    b = (a + disk_jitter(n, jitter, rng))[keep]
    perm = rng.permutation(keep.size)
    return a, b[perm], keep[perm]  # truth: b[i] is a[truth[i]]


@pytest.mark.parametrize("method", ["mutual", "optimal"])
def test_precision_recall_with_jitter_and_missing(jittered_grid, disk_jitter, method: str) -> None:
    a, b, truth = _planted(jittered_grid, disk_jitter)
    m = match_cells(a, b, match_radius=5.0, method=method)
    correct = int((truth[m.b_index] == m.a_index).sum())
    precision, recall = correct / m.n_matched, correct / b.shape[0]
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # one to one, within the radius, sorted, distances right
    assert np.unique(m.a_index).size == m.n_matched and np.unique(m.b_index).size == m.n_matched
    assert (np.diff(m.a_index) > 0).all()
    np.testing.assert_allclose(m.distance, np.linalg.norm(a[m.a_index] - b[m.b_index], axis=1))
    assert m.distance.max() <= 5.0
    assert (m.n_a, m.n_b) == (a.shape[0], b.shape[0])


def test_mutual_rounds_recover_second_choices() -> None:
    # b0 is nearest to both a0 and a1; a1's only other candidate b1 is matched in round 2
    a = np.array([[0.0, 0.0], [2.0, 0.0]])
    b = np.array([[0.5, 0.0], [5.5, 0.0]])
    one = match_cells(a, b, match_radius=4.0, n_rounds=1)
    assert list(zip(one.a_index, one.b_index, strict=True)) == [(0, 0)]
    more = match_cells(a, b, match_radius=4.0, n_rounds=3)
    assert list(zip(more.a_index, more.b_index, strict=True)) == [(0, 0), (1, 1)]


def _brute_force_cost(a: np.ndarray, b: np.ndarray, r: float) -> tuple[float, int]:
    """Dense augmented assignment: pair cost = distance (if <= r), unmatched cell cost = r."""
    na, nb = a.shape[0], b.shape[0]
    big = 1e6
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    cost = np.full((na + nb, nb + na), big)
    cost[:na, :nb] = np.where(d <= r, d, big)
    cost[:na, nb:] = np.where(np.eye(na, dtype=bool), r, big)
    cost[na:, :nb] = np.where(np.eye(nb, dtype=bool), r, big)
    cost[na:, nb:] = np.where((d <= r).T, 0.0, big)
    ri, ci = linear_sum_assignment(cost)
    pairs = (ri < na) & (ci < nb)
    return float(cost[ri, ci][(ri < na) | (ci < nb)].sum() - 0.0), int(pairs.sum())


@pytest.mark.parametrize("batch", [None, 6])  # 6: many solver calls of a few connected components each
def test_optimal_equals_brute_force_assignment(batch: int | None, monkeypatch) -> None:
    from spatialmultiomics.align import _match

    if batch is not None:
        monkeypatch.setattr(_match, "_ASSIGN_BATCH", batch)
    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.uniform(0, 40, size=(30, 2))
        b = rng.uniform(0, 40, size=(25, 2))
        m = match_cells(a, b, match_radius=6.0, method="optimal")
        cost = m.distance.sum() + 6.0 * (a.shape[0] - m.n_matched) + 6.0 * (b.shape[0] - m.n_matched)
        ref_cost, _ = _brute_force_cost(a, b, 6.0)
        assert cost == pytest.approx(ref_cost, abs=1e-6)
        assert np.unique(m.b_index).size == m.n_matched


def test_nothing_within_radius_and_empty_inputs() -> None:
    a = np.array([[0.0, 0.0]])
    b = np.array([[100.0, 0.0]])
    for method in ("mutual", "optimal"):
        assert match_cells(a, b, method=method).n_matched == 0
        assert match_cells(np.empty((0, 2)), b, method=method).n_matched == 0


def test_nearest_cells() -> None:
    idx, d = nearest_cells(np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[9.0, 0.0], [-1.0, 0.0]]))
    assert idx.tolist() == [1, 0]
    np.testing.assert_allclose(d, [1.0, 1.0])


def test_bad_inputs() -> None:
    xy = np.zeros((3, 2))
    with pytest.raises(
        InputError, match=r"a_coords must be an array of shape \(n, 2\) \(x, y in µm\), got shape \(3,\)"
    ):
        match_cells(np.zeros(3), xy)
    with pytest.raises(InputError, match="b_coords contains NaN or infinite coordinates"):
        match_cells(xy, np.full((2, 2), np.nan))
    with pytest.raises(InputError, match="match_radius must be a finite number > 0, got 0"):
        match_cells(xy, xy, match_radius=0)
    with pytest.raises(InputError, match=r"method must be one of \['mutual', 'optimal'\], got 'greedy'"):
        match_cells(xy, xy, method="greedy")


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])
def test_radius_rule_on_planted_distributions(jittered_grid, sigma: float) -> None:
    """80 % of the cells paired with Gaussian jitter sigma per axis (a Rayleigh peak), 20 % of them replaced by
    cells at random places (chance neighbours): the fit finds sigma, and the radius keeps 95-99.9 % of the pairs."""
    rng = np.random.default_rng(int(sigma * 10))
    a = jittered_grid(3000, rng, spacing=16.0)
    paired = rng.random(a.shape[0]) < 0.8
    b = a + rng.normal(0.0, sigma, size=a.shape)
    b[~paired] = rng.uniform(a.min(axis=0), a.max(axis=0), size=(int((~paired).sum()), 2))
    choice = estimate_match_radius(a, b)
    assert choice.found, choice.message
    assert choice.sigma == pytest.approx(sigma, rel=0.1)
    assert choice.paired_fraction == pytest.approx(0.8, abs=0.06)
    # 3.72 sigma (99.9 % of the pairs), or less where the chance cells start to outnumber the pairs, never below 2.45
    full = choice.sigma * np.sqrt(-2.0 * np.log(1.0 - RADIUS_RECALL))
    if choice.bound == "recall":
        assert choice.radius == pytest.approx(full, rel=1e-9) and full == pytest.approx(3.717 * choice.sigma, rel=1e-3)
    else:
        assert choice.bound == "chance" and 2.447 * choice.sigma <= choice.radius < full
    d_true = np.linalg.norm(b[paired] - a[paired], axis=1)
    assert np.mean(d_true <= choice.radius) >= 0.95
    assert choice.expected_recall == pytest.approx(np.mean(d_true <= choice.radius), abs=0.02)
    assert f"match radius {choice.radius:.3g} µm from the data" in choice.message
    stored = choice.to_dict()
    assert stored["radius_um"] == choice.radius and stored["bound"] == choice.bound


def test_radius_rule_without_a_paired_peak(jittered_grid) -> None:
    rng = np.random.default_rng(3)
    a = jittered_grid(2000, rng)
    b = rng.uniform(a.min(axis=0), a.max(axis=0), size=(2000, 2))  # the same area, other cells
    choice = estimate_match_radius(a, b, fallback=5.0)
    assert not choice.found and choice.bound == "fallback" and choice.radius == 5.0
    assert "no tight paired peak" in choice.message
    assert not estimate_match_radius(a, b + 5000.0).found  # no overlap at all
    few = estimate_match_radius(a[:10], b[:10], fallback=4.0)
    assert few.radius == 4.0 and "too few cells" in few.message


def test_radius_rule_identical_positions_and_crowded_chance(jittered_grid) -> None:
    rng = np.random.default_rng(4)
    a = jittered_grid(2000, rng)
    same = estimate_match_radius(a, a[rng.permutation(2000)[:1800]])
    assert same.found and same.bound == "floor" and same.radius == pytest.approx(0.05 * same.spacing)
    # a few pairs among many unrelated cells: chance neighbours cap the radius, never below 2.45 sigma
    b = np.vstack([a[:500] + rng.normal(0.0, 3.0, size=(500, 2)), rng.uniform(a.min(), a.max(), size=(6000, 2))])
    crowded = estimate_match_radius(a, b)
    assert crowded.found and crowded.bound == "chance", crowded.message
    assert 2.44 * crowded.sigma <= crowded.radius < 3.72 * crowded.sigma
    with pytest.raises(InputError, match="fallback must be a finite number > 0"):
        estimate_match_radius(a, a, fallback=0.0)


def test_expression_resolves_neighbours_that_positions_cannot(jittered_grid) -> None:
    from spatialmultiomics.align import match_cells

    rng = np.random.default_rng(5)
    a = jittered_grid(3000, rng, spacing=10.0)
    b = a + rng.normal(0.0, 3.0, a.shape)  # jitter near the distance between the closest cells: swaps
    kind = rng.integers(0, 6, a.shape[0])  # each cell's type, seen by both modalities through noisy profiles
    centres = rng.normal(size=(6, 12))
    pa = centres[kind] + rng.normal(0.0, 0.8, (a.shape[0], 12))
    pb = centres[kind] + rng.normal(0.0, 0.8, (a.shape[0], 12))

    def unit(p: np.ndarray) -> np.ndarray:
        p = p - p.mean(axis=1, keepdims=True)
        return p / np.linalg.norm(p, axis=1, keepdims=True)

    ua, ub = unit(pa), unit(pb)
    radius = 3.72 * 3.0

    def precision(m) -> float:
        return float(np.mean(m.a_index == m.b_index))

    def same_type(m) -> float:
        return float(np.mean(kind[m.a_index] == kind[m.b_index]))

    alone = match_cells(a, b, match_radius=radius, method="optimal")
    both = match_cells(
        a, b, match_radius=radius, method="optimal", similarity=lambda i, j: np.einsum("ij,ij->i", ua[i], ub[j])
    )
    assert precision(both) > precision(alone) + 0.02 and same_type(both) > same_type(alone) + 0.02
    assert both.n_matched >= 0.98 * alone.n_matched
    # expression that says nothing about partners leaves the positional matching as it was
    na, nb = unit(rng.normal(size=(a.shape[0], 12))), unit(rng.normal(size=(a.shape[0], 12)))
    blind = match_cells(
        a, b, match_radius=radius, method="optimal", similarity=lambda i, j: np.einsum("ij,ij->i", na[i], nb[j])
    )
    assert abs(precision(blind) - precision(alone)) < 0.01


def test_pair_confidence_matches_the_brute_force_posterior() -> None:
    from spatialmultiomics.align._match import pair_confidence

    rng = np.random.default_rng(3)
    na, nb = 7, 6
    rows = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 6], dtype=np.int64)
    cols = np.array([0, 1, 1, 2, 3, 4, 3, 5, 5, 0], dtype=np.int64)
    cost = rng.uniform(0.0, 6.0, rows.size)
    alone = 3.0
    ai, bi = np.array([0, 2, 3, 5]), np.array([1, 4, 3, 5])
    got = pair_confidence(rows, cols, cost, alone, ai, bi, na, nb)
    for n, (i, j) in enumerate(zip(ai, bi, strict=True)):
        c = cost[(rows == i) & (cols == j)][0]
        from_a = np.exp(-c) / (np.exp(-alone) + np.exp(-cost[rows == i]).sum())
        from_b = np.exp(-c) / (np.exp(-alone) + np.exp(-cost[cols == j]).sum())
        assert got[n] == pytest.approx(min(from_a, from_b), rel=1e-9)


def test_match_confidence_is_low_for_neighbours_positions_cannot_tell_apart() -> None:
    a = np.array([[0.0, 0.0], [100.0, 0.0], [101.0, 0.0]])
    b = np.array([[0.2, 0.0], [100.5, 0.0], [100.5, 0.1]])
    m = match_cells(a, b, match_radius=5.0, method="optimal")
    conf = dict(zip(m.a_index.tolist(), m.confidence.tolist(), strict=True))
    assert conf[0] > 0.99  # alone with its partner
    assert conf[1] < 0.5 and conf[2] < 0.5  # two cells, two partners, all about equally close
