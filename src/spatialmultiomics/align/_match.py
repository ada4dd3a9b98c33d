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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._validate import check_option, check_positive, check_positive_int

__all__ = ["MatchResult", "match_cells", "nearest_cells"]

_METHODS = ("mutual", "optimal")


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
    """

    a_index: np.ndarray
    b_index: np.ndarray
    distance: np.ndarray
    n_a: int
    n_b: int

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
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
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
    dist = np.linalg.norm(a[rows] - b[cols], axis=1)
    deg_a = np.bincount(rows, minlength=na)
    deg_b = np.bincount(cols, minlength=nb)
    lone = (deg_a[rows] == 1) & (deg_b[cols] == 1)  # each other's only candidate: matched for sure
    out_a, out_b, out_d = [rows[lone]], [cols[lone]], [dist[lone]]
    rows, cols, dist = rows[~lone], cols[~lone], dist[~lone]
    if rows.size:
        ua, ra = np.unique(rows, return_inverse=True)
        ub, rb = np.unique(cols, return_inverse=True)
        ma, mb, m = ua.size, ub.size, rows.size
        eps = 1e-9
        # augmented square matrix: [[D, diag(r)], [diag(r), D.T-pattern * eps]] always has a full matching
        r_idx = np.concatenate([ra, np.arange(ma), ma + np.arange(mb), ma + rb])
        c_idx = np.concatenate([rb, mb + np.arange(ma), np.arange(mb), mb + ra])
        vals = np.concatenate([dist + eps, np.full(ma, radius), np.full(mb, radius), np.full(m, eps)])
        n = ma + mb
        graph = sp.csr_matrix((vals, (r_idx, c_idx)), shape=(n, n))
        row_ind, col_ind = min_weight_full_bipartite_matching(graph)
        sel = (row_ind < ma) & (col_ind < mb)
        pa, pb = ua[row_ind[sel]], ub[col_ind[sel]]
        out_a.append(pa)
        out_b.append(pb)
        out_d.append(np.linalg.norm(a[pa] - b[pb], axis=1))
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_d)


def match_cells(
    a_coords: Any,
    b_coords: Any,
    *,
    match_radius: float = 5.0,
    method: str = "mutual",
    n_rounds: int = 3,
    n_jobs: int = 1,
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
    if a.shape[0] == 0 or b.shape[0] == 0:
        ai, bi, d = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    elif method == "mutual":
        ai, bi, d = _mutual(a, b, radius, n_rounds, workers)
    else:
        ai, bi, d = _optimal(a, b, radius, workers)
    order = np.argsort(ai, kind="stable")
    return MatchResult(ai[order].astype(np.int64), bi[order].astype(np.int64), d[order], a.shape[0], b.shape[0])
