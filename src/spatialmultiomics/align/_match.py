"""One-to-one matching of cells of two modalities imaged in the same frame, within a distance cap.

Two methods, both on KD-trees and never building an n x n object:

* ``'mutual'``: mutual nearest neighbours within ``match_radius``, repeated on the cells still unmatched (a cell
  whose nearest partner was taken by a closer cell gets a second chance with its next candidate);
* ``'optimal'``: a minimum-cost assignment over the sparse graph of candidate pairs within ``match_radius``
  (cost = distance, leaving a cell unmatched costs ``match_radius``), solved with
  :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching` on the usual augmented cost matrix (each cell has a
  private "no partner" option), after pairs that are each other's only candidate are taken directly.

Nothing is dropped silently: the result lists matched pairs; which cells are left is the caller's choice (impute or
drop, :func:`spatialmultiomics.align.align`).

The match radius from the data (:func:`estimate_match_radius`)
---------------------------------------------------------------
Once the frames agree, the distance ``d`` from each cell of one modality to the nearest cell of the other is a
mixture of two populations:

* *paired* cells (the same cell, seen twice): ``d`` is the registration error plus the segmentation jitter. For
  isotropic Gaussian jitter of ``sigma`` per axis the distance is Rayleigh distributed,
  ``f(d) = d / sigma^2 exp(-d^2 / (2 sigma^2))``: a tight peak near 0;
* *chance* cells (their partner is missing, or the sections hold different cells): ``d`` is the distance to
  whichever cell happens to be near, which depends only on the other modality's density and layout. Its density
  ``g`` is measured, not assumed: the same cells are displaced by 2.5-3.5 cell spacings (a
  deliberately wrong frame, as in the registration's null; 24 directions, so that a regular layout is sampled at
  every relative position) and their nearest-cell distances are histogrammed.

Both are restricted to ``d < 2 s`` (``s``: the larger median nearest-neighbour spacing of the two clouds; cells
farther away are outside the overlap). The mixture ``pi f + (1 - pi) g`` is fitted by EM (``pi``, ``sigma``;
``g`` fixed). A paired peak is accepted when it is tight (``sigma <= s / 2``), holds at least 10 % of the cells
and improves the log-likelihood over chance alone by at least 10. The radius is then

``r = sigma sqrt(-2 ln(1 - 0.999)) = 3.72 sigma``, or ``max(r_chance, 2.45 sigma)`` when ``r_chance`` is
smaller; at least ``0.05 s``;

where the first term keeps 99.9 % of the paired distances (at sigma = 3 µm, 11.2 µm, where the fixed 5 µm keeps
75 %), ``r_chance`` is the distance beyond the peak where a cell at that distance becomes more likely a chance
neighbour than a partner (posterior below 1/2), so that a radius does not reach into the chance pairs, and
2.45 sigma keeps 95 % of the pairs whatever the crowding. Without a paired peak the given fallback radius is kept
and the reason is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._validate import check_option, check_positive, check_positive_int

__all__ = ["MatchResult", "RadiusChoice", "estimate_match_radius", "match_cells", "nearest_cells"]

_METHODS = ("mutual", "optimal")
#: share of the paired (Rayleigh) distances a data-driven radius keeps
RADIUS_RECALL = 0.999
#: the least share it keeps when chance neighbours crowd the paired peak
MIN_RADIUS_RECALL = 0.95
_N_NULL_OFFSETS = 24
_MAX_RADIUS_POINTS = 50_000
_MIN_PAIRED_FRACTION = 0.1
_MIN_LOGLIK_GAIN = 10.0


class MatchResult(NamedTuple):
    """Matched pairs of cells, sorted by ``a_index``.

    Attributes
    ----------
    a_index, b_index
        Row indices (int64) of the matched cells in ``a_coords`` and ``b_coords``, shape (n_pairs,).
    distance
        Distance between the two cells of each pair in µm, shape (n_pairs,).
    n_a, n_b
        Number of cells on each side.
    confidence
        Posterior of each pair against the other candidates of either cell and against no partner, shape
        (n_pairs,) (:func:`pair_confidence`); None for empty inputs.
    """

    a_index: np.ndarray
    b_index: np.ndarray
    distance: np.ndarray
    n_a: int
    n_b: int
    confidence: np.ndarray | None = None

    @property
    def n_matched(self) -> int:
        """Number of pairs."""
        return int(self.a_index.size)


def check_coords(coords: Any, *, name: str) -> np.ndarray:
    """Return ``coords`` as a float64 array of shape (n, 2) with finite values, or raise :class:`InputError`."""
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        msg = f"{name} must be an array of shape (n, 2) (x, y in µm), got shape {xy.shape}."
        raise InputError(msg)
    xy = np.ascontiguousarray(xy[:, :2])
    if not np.isfinite(xy).all():
        msg = f"{name} contains NaN or infinite coordinates; give finite (x, y) in µm."
        raise InputError(msg)
    return xy


def _workers(n_jobs: int) -> int:
    return -1 if n_jobs == -1 else check_positive_int(n_jobs, name="n_jobs")


def nearest_cells(coords: Any, query: Any, *, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``coords`` of the nearest cell to each point of ``query``, and its distance (µm)."""
    from scipy.spatial import cKDTree

    xy = check_coords(coords, name="coords")
    q = check_coords(query, name="query")
    if xy.shape[0] == 0:
        msg = "coords has no cells; cannot find nearest cells."
        raise InputError(msg)
    dist, idx = cKDTree(xy).query(q, k=1, workers=_workers(n_jobs))
    return idx.astype(np.int64), dist


def _mutual(a: np.ndarray, b: np.ndarray, radius: float, n_rounds: int, workers: int) -> tuple[np.ndarray, ...]:
    """Mutual nearest neighbours within ``radius``, repeated ``n_rounds`` times on the unmatched cells."""
    from scipy.spatial import cKDTree

    ai_all = np.arange(a.shape[0])
    bi_all = np.arange(b.shape[0])
    out_a, out_b, out_d = [], [], []
    for _ in range(n_rounds):
        if ai_all.size == 0 or bi_all.size == 0:
            break
        pa, pb = a[ai_all], b[bi_all]
        d_ab, j = cKDTree(pb).query(pa, k=1, distance_upper_bound=radius, workers=workers)
        d_ba, i = cKDTree(pa).query(pb, k=1, distance_upper_bound=radius, workers=workers)
        has = np.flatnonzero(j < pb.shape[0])
        mutual = has[i[j[has]] == has]
        if mutual.size == 0:
            break
        out_a.append(ai_all[mutual])
        out_b.append(bi_all[j[mutual]])
        out_d.append(d_ab[mutual])
        # keep only cells that still had a candidate within the radius and were not matched
        keep_a = np.isfinite(d_ab)
        keep_a[mutual] = False
        keep_b = np.isfinite(d_ba)
        keep_b[j[mutual]] = False
        ai_all, bi_all = ai_all[keep_a], bi_all[keep_b]
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_d)


def _optimal(a: np.ndarray, b: np.ndarray, radius: float, workers: int) -> tuple[np.ndarray, ...]:
    """Minimum-cost assignment on the sparse candidate graph (cost = distance, no partner = ``radius``)."""
    from scipy.spatial import cKDTree

    na, nb = a.shape[0], b.shape[0]
    tree_b = cKDTree(b)
    nbrs = cKDTree(a).query_ball_tree(tree_b, r=radius) if na <= 50_000 else None
    if nbrs is not None:
        lens = np.fromiter((len(x) for x in nbrs), dtype=np.int64, count=na)
        rows = np.repeat(np.arange(na), lens)
        cols = np.fromiter((c for x in nbrs for c in x), dtype=np.int64, count=int(lens.sum()))
    else:
        # large inputs: the k nearest candidates per cell (k grows until every candidate list is complete)
        k = 4
        while True:
            d, j = tree_b.query(a, k=k, distance_upper_bound=radius, workers=workers)
            if k >= nb or not np.isfinite(d[:, -1]).any():
                break
            k *= 2
        ok = j < nb
        rows = np.nonzero(ok)[0].astype(np.int64)
        cols = j[ok].astype(np.int64)
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    eps = 1e-9
    pa, pb = _assign(rows, cols, np.linalg.norm(a[rows] - b[cols], axis=1) + eps, radius, na, nb, eps=eps)
    return pa, pb, np.linalg.norm(a[pa] - b[pb], axis=1)


def _assign(
    rows: np.ndarray,
    cols: np.ndarray,
    cost: np.ndarray,
    alone: float,
    na: int,
    nb: int,
    *,
    eps: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost one-to-one pairs of a sparse candidate graph (edge ``rows[i] - cols[i]`` costs
    ``cost[i] > 0``; a cell left without a partner costs ``alone``).

    Pairs that are each other's only candidate are taken directly when pairing is cheaper than leaving both alone;
    the rest is solved exactly by :func:`scipy.sparse.csgraph.min_weight_full_bipartite_matching` on the augmented
    square matrix ``[[C, diag(alone)], [diag(alone), C.T-pattern * eps]]``, which always has a full matching —
    one connected component of the candidate graph (or a batch of small ones) at a time: the components are
    independent problems, and the solver's time grew faster than linearly with the size of one matrix (100,000
    cells 5 µm apart: 4.4 s as one matrix).
    """
    from scipy.sparse.csgraph import connected_components

    deg_a = np.bincount(rows, minlength=na)
    deg_b = np.bincount(cols, minlength=nb)
    lone = (deg_a[rows] == 1) & (deg_b[cols] == 1)  # each other's only candidate
    sure = lone & (cost < 2.0 * alone)
    out_a, out_b = [rows[sure]], [cols[sure]]
    rows, cols, cost = rows[~lone], cols[~lone], cost[~lone]
    if rows.size:
        ua, ra = np.unique(rows, return_inverse=True)
        ub, rb = np.unique(cols, return_inverse=True)
        ma, mb = ua.size, ub.size
        adjacency = sp.csr_matrix((np.ones(ra.size), (ra, ma + rb)), shape=(ma + mb, ma + mb))
        _, label = connected_components(adjacency, directed=False)
        sizes = np.bincount(label)
        batch_of = (np.cumsum(sizes) - 1) // _ASSIGN_BATCH  # consecutive components, ~_ASSIGN_BATCH cells a batch
        edge_batch = batch_of[label[ra]]
        order = np.argsort(edge_batch, kind="stable")
        bounds = np.flatnonzero(np.diff(edge_batch[order])) + 1
        for part in np.split(order, bounds):
            pa, pb = _assign_dense_part(ra[part], rb[part], cost[part], alone, eps)
            out_a.append(ua[pa])
            out_b.append(ub[pb])
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)


#: cells (of both sides) per call of the exact solver in :func:`_assign`
_ASSIGN_BATCH = 4096


def _assign_dense_part(
    rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, alone: float, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact minimum-cost pairs of one candidate graph (no cell outside it has an edge into it), on the augmented
    matrix; returns the paired ``rows`` and ``cols`` values."""
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    ua, ra = np.unique(rows, return_inverse=True)
    ub, rb = np.unique(cols, return_inverse=True)
    ma, mb, m = ua.size, ub.size, rows.size
    r_idx = np.concatenate([ra, np.arange(ma), ma + np.arange(mb), ma + rb])
    c_idx = np.concatenate([rb, mb + np.arange(ma), np.arange(mb), mb + ra])
    vals = np.concatenate([cost, np.full(ma, alone), np.full(mb, alone), np.full(m, eps)])
    graph = sp.csr_matrix((vals, (r_idx, c_idx)), shape=(ma + mb, ma + mb))
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    sel = (row_ind < ma) & (col_ind < mb)
    return ua[row_ind[sel]], ub[col_ind[sel]]


#: the auto radius is this many jitter sigmas (per axis): :func:`estimate_match_radius`'s Rayleigh rule
_RADIUS_SIGMAS = 3.72
_MIN_CONFIDENT = 30


def _scored_optimal(
    a: np.ndarray,
    b: np.ndarray,
    radius: float,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
    positional: tuple[np.ndarray, np.ndarray, np.ndarray],
    workers: int,
) -> tuple[np.ndarray, ...]:
    """The optimal assignment on position and expression together, as log-likelihoods.

    The cost of a candidate pair is ``d^2 / (2 sigma^2) - LLR(s)``: the Gaussian jitter of a true pair's positions
    (sigma = radius / 3.72, the rule of the auto radius) minus the log-likelihood ratio of its expression
    similarity ``s`` being a partner's rather than a neighbour's; leaving a cell without a partner costs the same as
    a pair at the radius. The two similarity distributions are fitted as Gaussians on the data itself: partners =
    the pairs the positions alone match within one sigma, neighbours = every other candidate pair. When expression
    does not separate them (partners not more alike than neighbours, or too few confident pairs) the positional
    result is returned unchanged.
    """
    from scipy.spatial import cKDTree

    na, nb = a.shape[0], b.shape[0]
    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), radius, output_type="coo_matrix")
    rows, cols, dist = pairs.row.astype(np.int64), pairs.col.astype(np.int64), pairs.data
    sim = np.asarray(similarity(rows, cols), dtype=np.float64)
    sigma = radius / _RADIUS_SIGMAS
    pa, pb, _ = positional
    key = rows * nb + cols
    matched = np.isin(key, pa.astype(np.int64) * nb + pb)
    confident = matched & (dist < sigma) & np.isfinite(sim)
    other = ~matched & np.isfinite(sim)
    if confident.sum() < _MIN_CONFIDENT or other.sum() < _MIN_CONFIDENT:
        return (*positional, None)
    mu1, s1 = float(sim[confident].mean()), float(sim[confident].std()) + 1e-6
    mu0, s0 = float(sim[other].mean()), float(sim[other].std()) + 1e-6
    if mu1 <= mu0:
        return (*positional, None)
    sim = np.where(np.isfinite(sim), sim, mu0)
    llr = (-0.5 * ((sim - mu1) / s1) ** 2 - np.log(s1)) + 0.5 * ((sim - mu0) / s0) ** 2 + np.log(s0)
    cost = dist**2 / (2.0 * sigma**2) - llr
    alone = radius**2 / (2.0 * sigma**2)
    shift = max(0.0, -float(cost.min())) + 1e-6  # all costs > 0; a pair vs two lone cells keeps its balance
    ai, bi = _assign(rows, cols, cost + shift, alone + shift / 2, na, nb)
    conf = pair_confidence(rows, cols, cost, alone, ai, bi, na, nb)
    return ai, bi, np.linalg.norm(a[ai] - b[bi], axis=1), conf


def pair_confidence(
    rows: np.ndarray,
    cols: np.ndarray,
    cost: np.ndarray,
    alone: float,
    ai: np.ndarray,
    bi: np.ndarray,
    na: int,
    nb: int,
) -> np.ndarray:
    """Posterior of each chosen pair ``(ai, bi)`` among the candidate pairs ``rows - cols`` with negative
    log-likelihoods ``cost`` (a cell alone: ``alone``).

    For cell ``i`` of ``a``: ``exp(-c_ij) / (exp(-alone) + sum_c exp(-c_ic))`` over its candidates ``c``; the same
    from ``j``'s side; the smaller of the two. A local measure (it ignores the other cells' assignments): a pair
    whose cells each have one likely candidate scores ~1, a pair of two equally likely neighbours ~0.5 or less.
    """
    if ai.size == 0:
        return np.empty(0)
    w = np.exp(np.clip(alone - cost, -50.0, 50.0))  # relative to a cell alone (weight 1)
    zr = 1.0 + np.bincount(rows, weights=w, minlength=na)
    zc = 1.0 + np.bincount(cols, weights=w, minlength=nb)
    key = rows.astype(np.int64) * nb + cols
    order = np.argsort(key, kind="stable")
    pos = np.searchsorted(key[order], ai.astype(np.int64) * nb + bi)
    pos = np.minimum(pos, key.size - 1)
    found = key[order][pos] == ai.astype(np.int64) * nb + bi
    wp = np.where(found, w[order][pos], 0.0)
    return np.minimum(wp / zr[ai], wp / zc[bi])


def _positional_confidence(a: np.ndarray, b: np.ndarray, ai: np.ndarray, bi: np.ndarray, radius: float) -> np.ndarray:
    """:func:`pair_confidence` of position alone: Gaussian jitter with the auto radius's sigma."""
    from scipy.spatial import cKDTree

    pairs = cKDTree(a).sparse_distance_matrix(cKDTree(b), radius, output_type="coo_matrix")
    sigma = radius / _RADIUS_SIGMAS
    cost = pairs.data**2 / (2.0 * sigma**2)
    rows, cols = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
    return pair_confidence(rows, cols, cost, radius**2 / (2.0 * sigma**2), ai, bi, a.shape[0], b.shape[0])


def match_cells(
    a_coords: Any,
    b_coords: Any,
    *,
    match_radius: float = 5.0,
    method: str = "mutual",
    n_rounds: int = 3,
    n_jobs: int = 1,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> MatchResult:
    """Match cells of two modalities one to one: each pair closer than ``match_radius`` µm, no cell used twice.

    Parameters
    ----------
    a_coords, b_coords
        Cell centres (x, y) in µm, shapes (n_a, 2) and (n_b, 2), in the same frame (register first otherwise).
    match_radius
        Largest distance in µm between two cells of a pair (default 5 µm, about half a cell diameter).
    method
        ``'mutual'``: mutual nearest neighbours, repeated ``n_rounds`` times on the cells left unmatched (fast).
        ``'optimal'``: the assignment that matches the most cells at the least total distance (leaving a cell
        unmatched costs ``match_radius``), solved exactly on the sparse graph of candidate pairs.
    n_rounds
        Rounds of mutual-nearest-neighbour matching (``'mutual'`` only); 1 is the classical single pass.
    n_jobs
        Threads for the KD-tree queries (-1: all cores). The result does not depend on it.
    similarity
        ``'optimal'`` only: a function of candidate pairs (index arrays into ``a`` and ``b``) returning how alike
        the two cells' expression is (e.g. the correlation of linked protein / gene features). Neighbours that the
        positions alone cannot tell apart are then resolved by expression (:func:`_scored_optimal`); the weight
        of the expression is learnt from the data and is zero when it does not separate partners from neighbours.

    Returns
    -------
    :class:`MatchResult` with the pairs (``a_index``, ``b_index``, ``distance`` in µm) sorted by ``a_index``.

    Examples
    --------
    >>> import numpy as np
    >>> m = match_cells(np.array([[0.0, 0.0], [20.0, 0.0]]), np.array([[21.0, 0.0], [50.0, 0.0], [1.0, 1.0]]))
    >>> m.a_index.tolist(), m.b_index.tolist()
    ([0, 1], [2, 0])
    """
    a = check_coords(a_coords, name="a_coords")
    b = check_coords(b_coords, name="b_coords")
    radius = check_positive(match_radius, name="match_radius")
    method = check_option(method, _METHODS, name="method")
    n_rounds = check_positive_int(n_rounds, name="n_rounds")
    workers = _workers(n_jobs)
    conf = None
    if a.shape[0] == 0 or b.shape[0] == 0:
        ai, bi, d = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    elif method == "mutual":
        ai, bi, d = _mutual(a, b, radius, n_rounds, workers)
    else:
        ai, bi, d = _optimal(a, b, radius, workers)
        if similarity is not None and ai.size:
            ai, bi, d, conf = _scored_optimal(a, b, radius, similarity, (ai, bi, d), workers)
    if conf is None and ai.size:
        conf = _positional_confidence(a, b, ai, bi, radius)
    order = np.argsort(ai, kind="stable")
    return MatchResult(
        ai[order].astype(np.int64),
        bi[order].astype(np.int64),
        d[order],
        a.shape[0],
        b.shape[0],
        None if conf is None else conf[order],
    )


class RadiusChoice(NamedTuple):
    """How :func:`estimate_match_radius` chose the match radius.

    Attributes
    ----------
    radius
        The chosen radius (µm).
    found
        True when the nearest-partner distances show a paired peak; False when the fallback radius was kept.
    bound
        Which rule set the radius: ``'recall'`` (keeps 99.9 % of the paired distances), ``'chance'`` (where chance
        neighbours start to outnumber partners), ``'floor'`` (``0.05`` cell spacing) or ``'fallback'``.
    sigma
        Fitted jitter per axis (µm, the Rayleigh scale of the paired peak); NaN without a peak.
    paired_fraction
        Fitted share of the cells (within two spacings of the other modality) that belong to the paired peak.
    expected_recall
        Share of the fitted paired distances within ``radius``.
    spacing
        Cell spacing ``s`` (µm) used for the window and the null.
    n_cells
        Number of distances the fit used.
    message
        One line: the radius and why.
    """

    radius: float
    found: bool
    bound: str
    sigma: float
    paired_fraction: float
    expected_recall: float
    spacing: float
    n_cells: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain, ``.h5mu``-storable summary."""
        return {
            "radius_um": float(self.radius),
            "found": bool(self.found),
            "bound": self.bound,
            "sigma_um": float(self.sigma),
            "paired_fraction": float(self.paired_fraction),
            "expected_recall": float(self.expected_recall),
            "spacing_um": float(self.spacing),
            "n_cells": int(self.n_cells),
            "message": self.message,
        }


def _median_spacing(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance (µm), from at most ~20,000 points (scaled for the subsampling)."""
    from scipy.spatial import cKDTree

    if xy.shape[0] < 2:
        return float("nan")
    sub = xy[:: max(1, xy.shape[0] // 20000)]
    d, _ = cKDTree(sub).query(sub, k=2)
    return float(np.median(d[:, 1])) * float(np.sqrt(sub.shape[0] / xy.shape[0]))


def _rayleigh(d: np.ndarray, sigma: float, window: float) -> np.ndarray:
    """Rayleigh density of scale ``sigma``, truncated to ``[0, window)``."""
    mass = -np.expm1(-(window**2) / (2.0 * sigma**2))
    return d / sigma**2 * np.exp(-(d**2) / (2.0 * sigma**2)) / max(mass, 1e-300)


def _fit_mixture(d: np.ndarray, null: np.ndarray, window: float, spacing: float) -> tuple[float, float, float, Any]:
    """EM fit of ``pi * Rayleigh(sigma) + (1 - pi) * g`` on ``[0, window)``; ``g`` is the histogram density of
    ``null``. Returns ``pi``, ``sigma``, the log-likelihood gain over ``g`` alone, and ``g`` as a function."""
    n_bins = 40
    edges = np.linspace(0.0, window, n_bins + 1)
    counts = np.histogram(null, bins=edges)[0].astype(np.float64)
    counts = np.convolve(np.r_[counts[0], counts, counts[-1]], [0.25, 0.5, 0.25], mode="valid")
    width = window / n_bins
    dens = counts / max(counts.sum(), 1.0) / width
    dens = np.maximum(dens, 1e-3 / window)  # a chance neighbour is never impossible
    dens /= dens.sum() * width

    def g(x: np.ndarray) -> np.ndarray:
        return dens[np.clip((x / width).astype(np.int64), 0, n_bins - 1)]

    gd = g(d)
    pi = 0.5
    sigma = max(float(np.quantile(d, 0.25)) / 0.7585, 1e-3 * spacing)  # Rayleigh 25 % quantile = 0.7585 sigma
    for _ in range(500):
        num = pi * _rayleigh(d, sigma, window)
        w = num / (num + (1.0 - pi) * gd)
        pi_new = float(w.mean())
        sw = float(w.sum())
        sigma_new = max(float(np.sqrt((w * d**2).sum() / (2.0 * sw))) if sw > 0 else sigma, 1e-3 * spacing)
        done = abs(pi_new - pi) < 1e-6 and abs(sigma_new - sigma) < 1e-6 * spacing
        pi, sigma = pi_new, sigma_new
        if done or pi < 1e-6:
            break
    mix = pi * _rayleigh(d, sigma, window) + (1.0 - pi) * gd
    gain = float(np.log(mix).sum() - np.log(gd).sum())
    return pi, sigma, gain, g


def estimate_match_radius(
    a_coords: Any,
    b_coords: Any,
    *,
    fallback: float = 5.0,
    n_jobs: int = 1,
) -> RadiusChoice:
    """Choose the match radius from the distribution of nearest-partner distances (module documentation).

    Parameters
    ----------
    a_coords, b_coords
        Cell centres (x, y) in µm of the two modalities, already in one frame (register first), shapes (n_a, 2)
        and (n_b, 2). The distances are measured from each ``b`` cell to its nearest ``a`` cell.
    fallback
        Radius (µm) kept when the distances show no paired peak (different cells, frames that do not agree).
    n_jobs
        Threads for the KD-tree queries (-1: all cores). The result does not depend on it.

    Returns
    -------
    :class:`RadiusChoice`: the radius, the fitted jitter and paired share, the rule that set the radius and a
    one-line message.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = np.stack(np.meshgrid(np.arange(60.0), np.arange(60.0)), axis=-1).reshape(-1, 2) * 15.0
    >>> b = a + rng.normal(0.0, 3.0, size=a.shape)
    >>> choice = estimate_match_radius(a, b)
    >>> bool(choice.found), round(choice.sigma), round(choice.radius / choice.sigma, 2), choice.bound
    (True, 3, 3.72, 'recall')
    """
    from scipy.spatial import cKDTree

    a = check_coords(a_coords, name="a_coords")
    b = check_coords(b_coords, name="b_coords")
    fallback = check_positive(fallback, name="fallback")
    workers = _workers(n_jobs)

    def keep(reason: str, spacing: float = float("nan"), n: int = 0) -> RadiusChoice:
        msg = f"match radius {fallback:g} µm (the fallback): {reason}"
        return RadiusChoice(fallback, False, "fallback", np.nan, 0.0, np.nan, spacing, n, msg)

    if a.shape[0] < 20 or b.shape[0] < 20:
        return keep(f"too few cells to fit the distances ({a.shape[0]} and {b.shape[0]}; need 20 each)")
    spacing = max(_median_spacing(a), _median_spacing(b))
    if not np.isfinite(spacing) or spacing <= 0:
        return keep("the cells of one modality share their coordinates (no cell spacing)")
    window = 2.0 * spacing
    sample = b[:: max(1, b.shape[0] // _MAX_RADIUS_POINTS)]
    tree = cKDTree(a)
    d = tree.query(sample, k=1, distance_upper_bound=window, workers=workers)[0]
    # positions are known to about 1 % of a spacing (this also keeps identical positions inside the Rayleigh model)
    d = np.hypot(d[np.isfinite(d)], 0.01 * spacing)
    # wrong frames: 24 offsets of 2.5-3.5 spacings (golden-angle directions), each applied to its own share of the
    # cells, so that on a regular layout the offsets do not all land on (or between) lattice sites
    k = np.arange(_N_NULL_OFFSETS)
    theta = k * np.pi * (3.0 - np.sqrt(5.0))
    offsets = spacing * (2.5 + k / _N_NULL_OFFSETS)[:, None] * np.c_[np.cos(theta), np.sin(theta)]
    shifted = sample + offsets[np.arange(sample.shape[0]) % _N_NULL_OFFSETS]
    null = tree.query(shifted, k=1, distance_upper_bound=window, workers=workers)[0]
    null = np.hypot(null[np.isfinite(null)], 0.01 * spacing)
    if d.size < 20 or null.size < 20:
        return keep(
            f"only {d.size} cells lie within {window:.3g} µm (two cell spacings) of the other modality", spacing, d.size
        )
    pi, sigma, gain, g = _fit_mixture(d, null, window, spacing)
    if pi < _MIN_PAIRED_FRACTION or sigma > spacing / 2.0 or gain < _MIN_LOGLIK_GAIN:
        why = (
            f"the nearest-partner distances show no tight paired peak (fitted {pi:.0%} of cells at sigma "
            f"{sigma:.3g} µm, log-likelihood gain {gain:.3g} over chance; cell spacing {spacing:.3g} µm): the cells "
            "do not pair one to one in this frame"
        )
        return keep(why, spacing, d.size)
    r_recall = sigma * float(np.sqrt(-2.0 * np.log1p(-RADIUS_RECALL)))
    r_least = sigma * float(np.sqrt(-2.0 * np.log1p(-MIN_RADIUS_RECALL)))
    grid = np.linspace(sigma, window, 400)
    beyond = np.flatnonzero(pi * _rayleigh(grid, sigma, window) < (1.0 - pi) * g(grid))
    r_chance = float(grid[beyond[0]]) if beyond.size else window
    radius, bound = (r_recall, "recall") if r_recall <= r_chance else (max(r_chance, r_least), "chance")
    if radius < 0.05 * spacing:
        radius, bound = 0.05 * spacing, "floor"
    recall = float(-np.expm1(-(radius**2) / (2.0 * sigma**2)))
    why = {
        "recall": f"3.72 sigma keeps {RADIUS_RECALL:.1%} of the pairs",
        "chance": (
            f"chance neighbours outnumber partners beyond {r_chance:.3g} µm (3.72 sigma = {r_recall:.3g} µm, "
            f"never below 2.45 sigma = {r_least:.3g} µm)"
        ),
        "floor": f"raised to 0.05 cell spacing (3.72 sigma = {r_recall:.3g} µm)",
    }[bound]
    msg = (
        f"match radius {radius:.3g} µm from the data: {pi:.0%} of the cells form a paired peak of nearest-partner "
        f"distances (jitter sigma {sigma:.3g} µm per axis) over chance neighbours (cell spacing {spacing:.3g} µm); "
        f"{why}; expected recall {recall:.1%}"
    )
    return RadiusChoice(radius, True, bound, sigma, pi, recall, spacing, int(d.size), msg)
