"""Exact k nearest neighbours (Euclidean) for the annotation: brute force, or group by group with proven bounds.

Both searches return the same neighbours; :func:`exact_neighbors` picks the faster for the data at hand.

Brute force
    scikit-learn's ``NearestNeighbors(algorithm='brute')`` (distances from BLAS products, in float64).
Grouped (:class:`GroupedNeighbors`)
    The reference points are split into ``n_groups`` groups: the Voronoi cells of k-means centres ``c_g`` (every
    point belongs to its nearest centre), radius ``r_g`` the largest distance of a member to its centre. A query
    ``q`` is first searched in the group of its nearest centre ``c_a``, which bounds the distance ``d_k`` of its
    k-th neighbour; any other group ``b`` can hold a closer point only if its lower bound is at most ``d_k``::

        lb_b = max(|q - c_b| - r_b,                                    (triangle inequality)
                   (|q - c_b|^2 - |q - c_a|^2) / (2 |c_a - c_b|))      (distance from q to the bisector of c_a, c_b)

    (the second: a member ``x`` of ``b`` is at least as close to ``c_b`` as to ``c_a``, so the segment from ``q`` to
    ``x`` crosses the bisecting hyperplane). Groups are visited while their bound is below the current ``d_k``
    (with a relative slack of 1e-5 for rounding), each by the same brute force over its members. On the 16
    principal components that assign unsampled cells (synthetic tissue, 50,000 cells) a query visits 13 % of the
    reference (46 % with the triangle bound alone); on the ~60-dimensional joint embedding of the clustering graph
    it must visit 60-75 %, where the grouped search is slower than brute force and is not used.

Ties
    Every query's neighbours are the ``k`` smallest reference points in the order (distance, reference index),
    the distance computed exactly in float64 from the coordinates (:func:`_exact_distances`, the same value for a
    pair in every search): among points at the same distance the smaller index comes first and is kept, in both
    searches. scikit-learn's brute force only proposes candidates (its own ranking rounds, and keeps an arbitrary
    one of the points tied at the k-th place); the grouped search merges its groups in the same order. The majority vote of :func:`vote` on the neighbours'
    labels is independent of their order; ties of the vote go to the smallest label.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GroupedNeighbors", "brute_neighbors", "exact_neighbors", "vote"]

#: below this many reference points the brute force is used without trying groups
MIN_GROUPED_REFERENCE = 5_000
#: the grouped search is used when the queries are estimated to visit at most this share of the reference
MAX_VISITED_SHARE = 0.35
#: queries sampled to estimate the share of the reference the grouped search visits
_PROBE_QUERIES = 300
#: reference points the k-means centres of the groups are fitted on (a seeded sample above this)
_KMEANS_ROWS = 5_000
#: neighbours asked beyond k, to see the points tied at the k-th distance
_TIE_MARGIN = 8
#: relative slack of the lower bounds (rounding of the distances)
_SLACK = 1e-5


def _one_openmp_thread() -> Any:
    """Limit OpenMP (scikit-learn's threads) to one thread, in the main thread only.

    The limit is process-wide: set and restored from concurrent threads (Dask's threaded scheduler) it could leave
    the process at one thread, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


def _sorted_rows(dist: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` columns of every row in the order (distance, index)."""
    order = np.lexsort((idx, dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _exact_distances(Q: np.ndarray, R: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Distances (n, m) of every row of ``Q`` to the reference rows ``idx[row]``: the square root of the sum of the
    squared coordinate differences, in float64 (the same value for a pair whichever search found it)."""
    out = np.empty(idx.shape, dtype=np.float64)
    step = max(1, 2**22 // max(idx.shape[1] * Q.shape[1], 1))
    for a in range(0, Q.shape[0], step):
        diff = R[idx[a : a + step]].astype(np.float64) - Q[a : a + step, None, :].astype(np.float64)
        out[a : a + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out


@dataclass
class BruteNeighbors:
    """Brute-force exact search over a reference: scikit-learn's candidates, ranked by exact distances.

    scikit-learn ranks by distances from BLAS products (``|x|^2 - 2 x.y + |y|^2``), whose rounding error grows with
    the norms, not the distance: on the clustering embedding of 50,000 cells it kept a point 1.6e-8 (relative)
    farther than another at the 15th place. Each query therefore takes :data:`_TIE_MARGIN` more candidates
    from scikit-learn, their distances are computed exactly (:func:`_exact_distances`) and the first ``k`` in the
    order (distance, index) kept. Where the last candidate is not clearly farther than the k-th (within the
    error bound of scikit-learn's ranking, or tied), the query asks for 8 times more candidates, up to the whole
    reference.
    """

    n_neighbors: int
    model: Any
    R: np.ndarray
    max_sq_norm: float

    @classmethod
    def fit(cls, R: np.ndarray, n_neighbors: int) -> BruteNeighbors:
        """Index the reference rows ``R`` (n_ref, d) for ``n_neighbors`` neighbours."""
        from sklearn.neighbors import NearestNeighbors

        R = np.ascontiguousarray(R)
        k = min(n_neighbors, R.shape[0])
        norms = np.square(R, dtype=np.float64).sum(axis=1)
        return cls(k, NearestNeighbors(n_neighbors=k, algorithm="brute").fit(R), R, float(norms.max(initial=0.0)))

    def _chunk(self, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, n_fit = self.n_neighbors, self.R.shape[0]
        out_d = np.empty((Q.shape[0], k))
        out_i = np.empty((Q.shape[0], k), dtype=np.int64)
        # bound on scikit-learn's error in a squared distance (float32-level rounding of the norms, with room)
        err = 1e-5 * (np.square(Q, dtype=np.float64).sum(axis=1) + self.max_sq_norm) + 1e-300
        rows, margin = np.arange(Q.shape[0]), _TIE_MARGIN
        while rows.size:
            kq = min(k + margin, n_fit)
            i = np.asarray(self.model.kneighbors(Q[rows], n_neighbors=kq, return_distance=False), dtype=np.int64)
            d, i = _sorted_rows(_exact_distances(Q[rows], self.R, i), i, kq)
            # settled: every reference point seen, or no unseen point can be as near as the k-th
            done = np.full(rows.size, kq == n_fit) | (np.square(d[:, -1]) - np.square(d[:, k - 1]) > 2 * err[rows])
            out_d[rows[done]], out_i[rows[done]] = d[done, :k], i[done, :k]
            rows, margin = rows[~done], margin * 8
        return out_d, out_i

    def kneighbors(self, Q: np.ndarray, *, return_distance: bool = False) -> Any:
        """Indices (n, k) into the reference of the k nearest reference points of every row of ``Q``.

        With ``return_distance``: (distances, indices).
        """
        parts = [self._chunk(Q[a : a + 50_000]) for a in range(0, Q.shape[0], 50_000)]
        k = self.n_neighbors
        d = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k))
        i = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), dtype=np.int64)
        return (d, i) if return_distance else i


def brute_neighbors(R: np.ndarray, Q: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Indices (n_queries, k) of the ``n_neighbors`` nearest rows of ``R`` to every row of ``Q`` (brute force)."""
    return BruteNeighbors.fit(R, n_neighbors).kneighbors(Q)


def _centre_distances(Q: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, G) distances of the rows of ``Q`` to the centres, from the differences (accurate also when small)."""
    out = np.empty((Q.shape[0], centres.shape[0]), dtype=np.float64)
    step = max(1, 2**22 // max(centres.size, 1))
    for a in range(0, Q.shape[0], step):
        diff = Q[a : a + step, None, :].astype(np.float64) - centres[None, :, :]
        out[a : a + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out


@dataclass
class GroupedNeighbors:
    """Exact k nearest neighbours among reference points, searched group by group (see the module notes).

    Attributes
    ----------
    n_neighbors
        Neighbours returned per query.
    centres
        (G, d) float64 k-means centres; every reference point belongs to the group of its nearest centre.
    radius
        (G,) largest distance of a member to its centre.
    members
        Reference indices of each group (ascending).
    models
        A :class:`BruteNeighbors` over each group's members.
    """

    n_neighbors: int
    centres: np.ndarray
    radius: np.ndarray
    members: list[np.ndarray]
    models: list[BruteNeighbors]

    @classmethod
    def fit(cls, R: np.ndarray, n_neighbors: int, n_groups: int = 20, seed: int = 0) -> GroupedNeighbors:
        """Group the reference rows ``R`` (n_ref, d): k-means centres, then every point to its nearest centre."""
        centres = _kmeans_centres(R, n_neighbors, n_groups, seed)
        return cls._from_centres(R, n_neighbors, centres, _centre_distances(R, centres))

    @classmethod
    def _from_centres(cls, R: np.ndarray, n_neighbors: int, centres: np.ndarray, dc: np.ndarray) -> GroupedNeighbors:
        k = min(n_neighbors, R.shape[0])
        labels = dc.argmin(axis=1)
        keep = [j for j in range(centres.shape[0]) if (labels == j).any()]
        members = [np.flatnonzero(labels == j) for j in keep]
        radius = np.array([dc[m, j].max() for m, j in zip(members, keep, strict=True)])
        models = [BruteNeighbors.fit(R[m], k) for m in members]
        return cls(k, centres[keep], radius, members, models)

    def lower_bounds(self, dc: np.ndarray) -> np.ndarray:
        """(n, G) lower bound of the distance from each query to any member of each group; 0 for its own group.

        ``dc``: (n, G) distances of the queries to the centres.
        """
        first = dc.argmin(axis=1)
        da = dc[np.arange(dc.shape[0]), first]
        gap = _centre_distances(self.centres, self.centres)[first]  # |c_a - c_b|, (n, G)
        plane = np.divide(np.square(dc) - np.square(da)[:, None], 2.0 * gap, out=np.zeros_like(dc), where=gap > 0)
        lower = np.maximum(dc - self.radius[None, :], plane)
        lower[np.arange(dc.shape[0]), first] = 0.0
        return lower

    def kneighbors(self, Q: np.ndarray, *, return_distance: bool = False) -> Any:
        """Indices (n, k) into the reference of the k nearest reference points of every row of ``Q``."""
        n, k = Q.shape[0], self.n_neighbors
        dc = _centre_distances(Q, self.centres)
        lower = self.lower_bounds(dc)
        slack = _SLACK * (dc.min(axis=1) + self.radius.max())
        best_d = np.full((n, k), np.inf)
        best_i = np.full((n, k), np.iinfo(np.int64).max, dtype=np.int64)

        def merge(rows: np.ndarray, g: int) -> None:
            d, i = self.models[g].kneighbors(Q[rows], return_distance=True)
            d = np.concatenate([best_d[rows], d], axis=1)
            i = np.concatenate([best_i[rows], self.members[g][i]], axis=1)
            best_d[rows], best_i[rows] = _sorted_rows(d, i, k)

        first = dc.argmin(axis=1)
        # one OpenMP thread: scikit-learn's fork-join costs ~60 ms a call on a busy 2-core machine (1 ms with one
        # thread), more than a group's search
        with _one_openmp_thread():
            for g in range(len(self.models)):  # each query's own group: a first bound
                rows = np.flatnonzero(first == g)
                if rows.size:
                    merge(rows, g)
            for g in np.argsort(np.median(dc, axis=0)):  # then the others, nearest first; the bound only shrinks
                rows = np.flatnonzero((first != g) & (lower[:, g] <= best_d[:, -1] * (1 + _SLACK) + slack))
                if rows.size:
                    merge(rows, int(g))
        return (best_d, best_i) if return_distance else best_i

    def visited_share(self, Q: np.ndarray, d_k: np.ndarray) -> float:
        """Mean share of the reference the queries ``Q`` visit, given the distances ``d_k`` of their k-th neighbours."""
        sizes = np.array([m.size for m in self.members], dtype=np.float64)
        dc = _centre_distances(Q, self.centres)
        slack = _SLACK * (dc.min(axis=1) + self.radius.max())
        visit = self.lower_bounds(dc) <= (np.asarray(d_k) * (1 + _SLACK) + slack)[:, None]
        return float((visit * sizes[None, :]).sum(axis=1).mean() / sizes.sum())


def _kmeans_centres(R: np.ndarray, n_neighbors: int, n_groups: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = min(n_neighbors, R.shape[0])
    g = max(1, min(n_groups, R.shape[0] // max(4 * k, 1)))
    if g == 1:
        return np.asarray(R, dtype=np.float64).mean(axis=0, keepdims=True)
    rows = np.arange(R.shape[0])
    if rows.size > _KMEANS_ROWS:  # the centres only place the groups: a seeded sample fits them
        rows = np.sort(np.random.default_rng(seed).choice(rows.size, _KMEANS_ROWS, replace=False))
    with _one_openmp_thread():  # a few thousand points: threads cost more than they give
        return KMeans(g, n_init=1, random_state=seed).fit(np.asarray(R[rows], dtype=np.float64)).cluster_centers_


def exact_neighbors(
    R: np.ndarray, n_neighbors: int, *, n_groups: int = 20, seed: int = 0
) -> GroupedNeighbors | BruteNeighbors:
    """An exact search over the reference rows ``R``: grouped where it visits little of the reference, else brute.

    The grouped search is tried on references of at least :data:`MIN_GROUPED_REFERENCE` points: groups are fitted
    (k-means, ``seed``) and kept when :data:`_PROBE_QUERIES` reference points, used as queries, visit at most
    :data:`MAX_VISITED_SHARE` of the reference. Both return the same neighbours (see the module notes), so the
    choice changes the time only.

    Parameters
    ----------
    R
        Reference points (n_ref, d).
    n_neighbors
        Neighbours per query (at most ``n_ref``).
    n_groups
        Groups of the grouped search.
    seed
        Seed of the k-means groups and of the probe sample.

    Returns
    -------
    An object whose ``kneighbors(Q)`` returns the (n, k) reference indices of every query's neighbours.
    """
    R = np.ascontiguousarray(R)
    brute = BruteNeighbors.fit(R, n_neighbors)
    if R.shape[0] < MIN_GROUPED_REFERENCE:
        return brute
    grouped = GroupedNeighbors.fit(R, n_neighbors, n_groups=n_groups, seed=seed)
    if len(grouped.models) < 2:
        return brute
    probe = R[np.sort(np.random.default_rng(seed).choice(R.shape[0], min(_PROBE_QUERIES, R.shape[0]), replace=False))]
    # the probe's k-th distances from one scikit-learn call (their rounding does not matter for an estimate)
    d_k = brute.model.kneighbors(probe, return_distance=True)[0][:, -1]
    return grouped if grouped.visited_share(probe, d_k) <= MAX_VISITED_SHARE else brute


def vote(labels: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Majority of ``labels`` (non-negative integers) over each row of ``neighbours``; ties: the smallest label.

    The same as ``scipy.stats.mode(labels[neighbours], axis=1).mode``, without its per-row sort.
    """
    nb = np.asarray(labels, dtype=np.int64)[neighbours]
    n_lab = int(nb.max()) + 1 if nb.size else 1
    flat = (np.arange(nb.shape[0], dtype=np.int64)[:, None] * n_lab + nb).ravel()
    counts = np.bincount(flat, minlength=nb.shape[0] * n_lab).reshape(nb.shape[0], n_lab)
    return counts.argmax(axis=1).astype(np.int64)
