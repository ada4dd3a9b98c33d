"""Integration of two modalities measured on different cells: match cells by expression (DESIGN §3.2).

Serial sections (RNA on one section, proteins on the next) share no cell: the nearest cell of the other section
is another cell, often of another type, and copying its profile ruins the joint typing (measured: macro-F1 0.32
where RNA alone gives 0.91). :func:`integrate_unpaired` matches cells across modalities by what they express, in
the way of MaxFuse (Chen et al., Nat Biotechnol 2024) and MARIO (Zhu et al., Nat Methods 2023):

1. **Linked features.** Proteins and the genes that code them (CD8 <-> CD8A/CD8B, PanCK <-> keratins, CD45 <->
   PTPRC, :mod:`._links`) give each modality a small matrix of comparable columns (the linked genes' normalised
   counts are summed, then log1p; each column is standardised within its modality).
2. **Smoothing.** Each modality gets a kNN graph on the PCA of all its features (standardised log profiles, top
   2000 variable features); the linked features and, later, the joint coordinates are smoothed over it:
   ``s = w x + (1 - w) mean(x of the k neighbours)`` (MaxFuse's fuzzy smoothing; ``w = smoothing``). Single-cell
   noise averages out, cell identity stays.
3. **Initial pivots.** On a seeded sample of cells of each modality (``n_pivots``), cells are paired by mutual
   nearest neighbours (or a one-to-one assignment, ``pivot_method``) in correlation distance on the smoothed
   linked features.
4. **Joint space.** A regularised CCA between the two modalities' smoothed PCA coordinates (all features, not
   only the linked ones), fitted on the best-scoring pivot pairs (the bottom ``pivot_filter`` share is left out);
   optionally (``n_iter``) the pivots are re-matched in the joint space and the CCA refitted. Canonical
   dimensions are weighted by their canonical correlation, so dimensions the modalities do not share count little.
5. **Matching.** Every reference cell gets its ``n_matches`` nearest cells of the other modality in the smoothed
   joint space (Pearson correlation of the canonical coordinates), optionally only among the cells within
   ``spatial_prior_um`` of it when the sections are registered. Each match carries its correlation as score.
6. **Trust.** A match is trusted when its score beats ``min_score``: by default the 99th percentile of the scores
   of random pairs (the null), so a trusted match is one chance rarely reaches.

Scale: every step is linear in the cells apart from fixed-size pieces (the CCA is fitted on at most ``n_pivots``
pairs; PCA on at most 20,000 cells, then projected). Nearest neighbours are exact by blocked matrix products for
small data and an inverted-file index (k-means cells, ``n_probe`` nearest lists searched) for large data; the
spatial prior queries a 2-D KD-tree. Nothing n x n is built; sparse counts stay sparse.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._random import check_random_state
from spatialmultiomics._sparse import one_hot
from spatialmultiomics._validate import check_in_range, check_option, check_positive, check_positive_int
from spatialmultiomics._warnings import warn
from spatialmultiomics.align._links import LinkTable, linked_matrix, resolve_links
from spatialmultiomics.align._transform import Transform

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["IntegrationResult", "integrate_unpaired", "transfer_labels", "transfer_profiles"]

#: most features kept per modality for the PCA (the most variable ones)
_MAX_FEATURES = 2000
#: most cells the PCA is fitted on (the rest are projected)
_PCA_FIT_CELLS = 20_000
#: exact nearest neighbours while n_query * n_data stays below this
_EXACT_LIMIT = 1e8
#: mean number of cells per list of the approximate nearest-neighbour index
_IVF_LIST_SIZE = 256
#: block size (elements) of the distance blocks
_BLOCK = 2**23
#: random pairs used for the null distribution of scores
_NULL_PAIRS = 20_000
#: quantile of the null scores a trusted match must beat
NULL_QUANTILE = 0.99
#: how pivot pairs are found
PIVOT_METHODS = ("mnn", "assignment")
#: what transfer does for reference cells without a trusted match
UNTRUSTED = ("keep", "impute", "drop")
#: trusted reference cells averaged for an untrusted one (``untrusted='impute'``)
_IMPUTE_NEIGHBORS = 10


# ---------------------------------------------------------------------------------------------- result


@dataclass
class IntegrationResult:
    """Cross-modality matches of :func:`integrate_unpaired`.

    Attributes
    ----------
    ref_index, other_index
        Row of the reference cell and of its matched cell of the other modality, one entry per match (int64),
        sorted by reference row, then by rank.
    score
        Pearson correlation of the two cells' coordinates in the smoothed joint space (float32, in [-1, 1]).
    rank
        0 for a reference cell's best match, 1 for the next, ... (int16).
    embedding_ref, embedding_other
        Joint (canonical) coordinates of every cell of each modality, (n_obs, n_cca) float32, unsmoothed.
    ref_names, other_names
        ``obs_names`` of the two modalities.
    min_score
        Default score a match must beat to be trusted (the null's 99th percentile unless given).
    links
        Linked features used: one row per link with the features on each side.
    diagnostics
        Counts, canonical correlations, pivot numbers, score quantiles, null scores and timings.
    """

    ref_index: np.ndarray
    other_index: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    embedding_ref: np.ndarray
    embedding_other: np.ndarray
    ref_names: pd.Index
    other_names: pd.Index
    min_score: float
    links: pd.DataFrame
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def n_ref(self) -> int:
        """Number of reference cells."""
        return len(self.ref_names)

    @property
    def n_other(self) -> int:
        """Number of cells of the other modality."""
        return len(self.other_names)

    @property
    def matches(self) -> pd.DataFrame:
        """Every match: ``ref_id``, ``other_id``, ``ref_index``, ``other_index``, ``score``, ``rank``."""
        return pd.DataFrame(
            {
                "ref_id": self.ref_names.to_numpy()[self.ref_index],
                "other_id": self.other_names.to_numpy()[self.other_index],
                "ref_index": self.ref_index,
                "other_index": self.other_index,
                "score": self.score,
                "rank": self.rank,
            }
        )

    def _threshold(self, min_score: float | None) -> float:
        return self.min_score if min_score is None else float(min_score)

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """Best match of each reference cell: (other row, score); -1 and NaN for a cell without candidates."""
        other = np.full(self.n_ref, -1, dtype=np.int64)
        score = np.full(self.n_ref, np.nan, dtype=np.float32)
        top = self.rank == 0
        other[self.ref_index[top]] = self.other_index[top]
        score[self.ref_index[top]] = self.score[top]
        return other, score

    def trusted(self, min_score: float | None = None) -> np.ndarray:
        """Boolean (n_ref,): the reference cell has at least one match scoring above ``min_score``."""
        thr = self._threshold(min_score)
        out = np.zeros(self.n_ref, dtype=bool)
        out[self.ref_index[self.score > thr]] = True
        return out

    def weights(self, min_score: float | None = None, *, untrusted: str = "keep") -> sp.csr_matrix:
        """(n_ref, n_other) CSR of transfer weights; each row with weights sums to 1.

        Parameters
        ----------
        min_score
            Matches scoring at most this are left out (default: :attr:`min_score`).
        untrusted
            Rows of reference cells without a trusted match: ``'keep'`` (their own matches, weighted alike),
            ``'impute'`` (the mean row of the 10 trusted reference cells nearest in the joint space) or ``'drop'``
            (empty rows).
        """
        untrusted = check_option(untrusted, UNTRUSTED, name="untrusted")
        thr = self._threshold(min_score)
        trusted = self.trusted(thr)
        ok = self.score > thr
        if untrusted == "keep":
            ok |= ~trusted[self.ref_index]
        r, c = self.ref_index[ok], self.other_index[ok]
        # weight grows with the score above the null; a row of untrusted matches is weighted evenly
        w = np.maximum(self.score[ok].astype(np.float64) - min(thr, 0.0), 1e-6)
        w = np.where(self.score[ok] > thr, w, 1e-6)
        out = sp.csr_matrix((w, (r, c)), shape=(self.n_ref, self.n_other))
        out.sum_duplicates()
        out = _row_normalise(out)
        if untrusted == "impute" and trusted.any() and not trusted.all():
            good, bad = np.flatnonzero(trusted), np.flatnonzero(~trusted)
            k = min(_IMPUTE_NEIGHBORS, good.size)
            E = _unit_rows(self.embedding_ref.astype(np.float64))
            _, nb, _ = _knn(E[bad], E[good], k, check_random_state(0))
            M = sp.csr_matrix(
                (np.full(nb.size, 1.0 / k), (np.repeat(np.arange(bad.size), k), good[nb.ravel()])),
                shape=(bad.size, self.n_ref),
            )
            filled = sp.csr_matrix(M @ out)
            P = sp.csr_matrix((np.ones(bad.size), (bad, np.arange(bad.size))), shape=(self.n_ref, bad.size))
            keep = sp.diags(trusted.astype(np.float64))
            out = sp.csr_matrix(keep @ out + P @ filled)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts and score quantiles (a copy of the main diagnostics)."""
        keys = ("n_links", "n_pivots", "canonical_correlations", "score_median", "null_score_q99", "min_score")
        out = {k: self.diagnostics[k] for k in keys if k in self.diagnostics}
        out["fraction_trusted"] = float(self.trusted().mean()) if self.n_ref else 0.0
        return out


# ---------------------------------------------------------------------------------------------- kernels


def _is_counts(X: Any) -> bool:
    """Whether ``X`` looks like raw counts: non-negative integers (checked on a sample of the stored values)."""
    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if vals.size == 0:
        return False
    sample = vals[:: max(1, vals.size // 200_000)]
    return bool(np.all(sample >= 0) and np.all(np.abs(sample - np.round(sample)) < 1e-6))


def _normalise(X: Any, counts: bool) -> Any:
    """Counts: scaled to the median library size; intensities: unchanged. Sparse stays sparse (float32), dense is
    float64."""
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    if not counts:
        return X
    tot = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    target = float(np.median(tot[tot > 0])) if (tot > 0).any() else 1.0
    scale = np.divide(target, tot, out=np.zeros_like(tot), where=tot > 0)
    if sp.issparse(X):
        X = X.copy()
        X.data *= np.repeat(scale, np.diff(X.indptr)).astype(np.float32)
        return X
    return X * scale[:, None]


def _log(X: Any) -> Any:
    if sp.issparse(X):
        out = X.copy()
        out.data = np.log1p(np.maximum(out.data, 0.0))
        return out
    return np.log1p(np.maximum(X, 0.0)) if np.nanmin(X, initial=0.0) >= 0 else X


def _col_stats(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of a dense or CSR matrix (no copy of a sparse matrix)."""
    n = max(X.shape[0], 1)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        mean = np.bincount(X.indices, weights=X.data, minlength=X.shape[1]) / n
        sq = np.bincount(X.indices, weights=np.square(X.data, dtype=np.float64), minlength=X.shape[1]) / n
    else:
        mean = X.mean(axis=0, dtype=np.float64)
        sq = np.square(X, dtype=np.float64).mean(axis=0)
    return mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))


def _pca(X: Any, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """PCA coordinates of the standardised columns of ``X`` (log profiles): fit on at most 20,000 cells, project
    all (sparse input is never densified as a whole)."""
    from sklearn.utils.extmath import randomized_svd

    mean, sd = _col_stats(X)
    keep = sd > 1e-8
    if keep.sum() > _MAX_FEATURES:
        keep = np.zeros_like(keep)
        keep[np.argsort(-sd, kind="stable")[:_MAX_FEATURES]] = True  # log scale: the spread is the variability
    cols = np.flatnonzero(keep)
    X, mean, sd = X[:, cols], mean[cols], sd[cols]
    n = X.shape[0]
    fit = np.sort(rng.choice(n, _PCA_FIT_CELLS, replace=False)) if n > _PCA_FIT_CELLS else np.arange(n)
    sub = X[fit]
    sub = (np.asarray(sub.toarray()) if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)) - mean
    sub /= sd
    k = max(1, min(n_components, sub.shape[1] - 1 if sub.shape[1] > 1 else 1, sub.shape[0] - 1))
    _, _, vt = randomized_svd(sub, k, n_iter=4, random_state=int(rng.integers(2**31 - 1)))
    proj = (vt.T / sd[:, None]).astype(np.float32 if sp.issparse(X) else np.float64)  # (features, k)
    Z = np.asarray(X @ proj, dtype=np.float64) - mean @ proj
    return Z


def _standardise_columns(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, sd = L.mean(axis=0), L.std(axis=0)
    ok = sd > 1e-8
    out = np.zeros_like(L)
    out[:, ok] = (L[:, ok] - mean[ok]) / sd[ok]
    return out, ok


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (float32): dot products are Pearson correlations."""
    Xc = X - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Xc, axis=1, keepdims=True)
    return np.divide(Xc, norm, out=np.zeros_like(Xc), where=norm > 0).astype(np.float32)


def _topk_rows(D: np.ndarray, k: int, skip_from: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of ``D``, ascending: (values, columns) (numba kernel)."""
    from spatialmultiomics.align._knn_kernels import topk_rows

    return topk_rows(np.ascontiguousarray(D, dtype=np.float32), int(min(k, D.shape[1])), int(skip_from))


def _sq_dist(q: np.ndarray, data: np.ndarray, dn: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (float32) between rows of ``q`` and ``data`` (``dn``: squared norms of data)."""
    D = q @ data.T
    D *= -2.0
    D += dn[None, :]
    D += np.einsum("ij,ij->i", q, q)[:, None]
    return D


def _knn_exact(
    query: np.ndarray, data: np.ndarray, k: int, *, self_query: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``data`` for each row of ``query`` (squared Euclidean), by blocks of queries."""
    nq, nd = query.shape[0], data.shape[0]
    k = min(k, nd - (1 if self_query else 0))
    dist = np.empty((nq, k), dtype=np.float32)
    idx = np.empty((nq, k), dtype=np.int64)
    data32 = np.ascontiguousarray(data, dtype=np.float32)
    q32 = np.ascontiguousarray(query, dtype=np.float32)
    dn = np.einsum("ij,ij->i", data32, data32)
    step = max(1, _BLOCK // max(1, nd))
    for s in range(0, nq, step):
        D = _sq_dist(q32[s : s + step], data32, dn)
        v, j = _topk_rows(D, k, s if self_query else -1)
        dist[s : s + step], idx[s : s + step] = np.maximum(v, 0.0), j
    return dist, idx


def _nearest_centroid(X: np.ndarray, cent: np.ndarray) -> np.ndarray:
    cn = np.einsum("ij,ij->i", cent, cent)
    out = np.empty(X.shape[0], dtype=np.int64)
    step = max(1, _BLOCK // max(1, cent.shape[0]))
    for s in range(0, X.shape[0], step):
        out[s : s + step] = (cn[None, :] - 2.0 * (X[s : s + step] @ cent.T)).argmin(axis=1)
    return out


def _kmeans(X: np.ndarray, n_clusters: int, rng: np.random.Generator, n_iter: int = 6) -> np.ndarray:
    """Centroids of a few Lloyd iterations on a seeded sample of rows (at most 20,000, and 8 per centroid)."""
    n_sub = min(X.shape[0], max(20_000, 8 * n_clusters))
    sub = X[np.sort(rng.choice(X.shape[0], n_sub, replace=False))]
    cent = sub[rng.choice(sub.shape[0], n_clusters, replace=False)].copy()
    for _ in range(n_iter):
        lab = _nearest_centroid(sub, cent)
        cnt = np.bincount(lab, minlength=n_clusters)
        sums = np.zeros_like(cent)
        for j in range(cent.shape[1]):
            sums[:, j] = np.bincount(lab, weights=sub[:, j], minlength=n_clusters)
        full = cnt > 0
        cent[full] = sums[full] / cnt[full, None]
    return cent


def _knn_ivf(
    query: np.ndarray, data: np.ndarray, k: int, rng: np.random.Generator, *, self_query: bool, n_probe: int
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN: data in k-means lists, each query searches its ``n_probe`` nearest lists."""
    from spatialmultiomics.align._knn_kernels import merge_block

    nq, nd = query.shape[0], data.shape[0]
    k = min(k, nd - (1 if self_query else 0))
    data32 = np.ascontiguousarray(data, dtype=np.float32)
    q32 = np.ascontiguousarray(query, dtype=np.float32)
    n_lists = int(np.clip(nd // _IVF_LIST_SIZE, 16, 16_384))
    cent = _kmeans(data32, n_lists, rng)
    lab = _nearest_centroid(data32, cent)
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(n_lists + 1))
    _, probe = _knn_exact(q32, cent, min(n_probe, n_lists))
    best_d = np.full((nq, k), np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    dn = np.einsum("ij,ij->i", data32, data32)
    # (list, query) pairs grouped by list
    pl = probe.ravel()
    pq = np.repeat(np.arange(nq), probe.shape[1])
    porder = np.argsort(pl, kind="stable")
    pl, pq = pl[porder], pq[porder]
    qb = np.searchsorted(pl, np.arange(n_lists + 1))
    for c in range(n_lists):
        members = order[bounds[c] : bounds[c + 1]]
        qs = pq[qb[c] : qb[c + 1]]
        if members.size == 0 or qs.size == 0:
            continue
        dm, dmn = data32[members], dn[members]
        step = max(1, _BLOCK // members.size)
        for s in range(0, qs.size, step):
            qi = qs[s : s + step]
            merge_block(best_d, best_i, qi, _sq_dist(q32[qi], dm, dmn), members, self_query)
    return np.maximum(best_d, 0.0), best_i


def _knn(
    query: np.ndarray,
    data: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    self_query: bool = False,
    n_probe: int = 3,
) -> tuple[np.ndarray, np.ndarray, str]:
    """k nearest rows of ``data`` per row of ``query``: exact when small, inverted-file index when large."""
    if float(query.shape[0]) * data.shape[0] <= _EXACT_LIMIT or data.shape[0] < 4096:
        d, i = _knn_exact(query, data, k, self_query=self_query)
        return d, i, "exact"
    d, i = _knn_ivf(query, data, k, rng, self_query=self_query, n_probe=n_probe)
    return d, i, "ivf"


def _row_normalise(W: sp.csr_matrix) -> sp.csr_matrix:
    tot = np.asarray(W.sum(axis=1)).ravel()
    scale = np.divide(1.0, tot, out=np.zeros_like(tot), where=tot > 0)
    return sp.csr_matrix(sp.diags(scale) @ W)


def _smoother(nbrs: np.ndarray, w: float) -> sp.csr_matrix:
    """Row-stochastic (n, n) CSR: ``w`` on the cell itself, ``(1 - w) / k`` on each of its ``k`` neighbours."""
    n, k = nbrs.shape
    valid = nbrs >= 0
    cnt = np.maximum(valid.sum(axis=1), 1)
    rows = np.concatenate([np.arange(n), np.repeat(np.arange(n), k)[valid.ravel()]])
    cols = np.concatenate([np.arange(n), nbrs[valid]])
    vals = np.concatenate([np.full(n, w), np.repeat((1.0 - w) / cnt, k)[valid.ravel()]])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def _mnn_pairs(A: np.ndarray, B: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mutual k-nearest-neighbour pairs between unit rows ``A`` and ``B``, with their correlations."""
    _, ab, _ = _knn(A, B, k, rng)
    _, ba, _ = _knn(B, A, k, rng)
    a = np.repeat(np.arange(A.shape[0]), ab.shape[1])
    b = ab.ravel()
    back = sp.csr_matrix(
        (np.ones(ba.size), (np.repeat(np.arange(B.shape[0]), ba.shape[1]), ba.ravel())), shape=(B.shape[0], A.shape[0])
    )
    mutual = np.asarray(back[b, a]).ravel() > 0
    return a[mutual], b[mutual]


def _pairs(
    A: np.ndarray, B: np.ndarray, k: int, rng: np.random.Generator, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Pivot pairs between unit rows ``A`` and ``B`` by ``method`` (``'mnn'`` or ``'assignment'``)."""
    return _mnn_pairs(A, B, k, rng) if method == "mnn" else _assignment_pairs(A, B, rng)


def _assignment_pairs(
    A: np.ndarray, B: np.ndarray, rng: np.random.Generator, batch: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs maximising the total correlation, on random batches of at most ``batch`` rows a side."""
    from scipy.optimize import linear_sum_assignment

    na, nb = A.shape[0], B.shape[0]
    n_batches = max(1, int(np.ceil(max(na, nb) / batch)))
    ia, ib = rng.permutation(na), rng.permutation(nb)
    out_a, out_b = [], []
    for sa, sb in zip(np.array_split(ia, n_batches), np.array_split(ib, n_batches), strict=True):
        r, c = linear_sum_assignment(-(A[sa] @ B[sb].T))
        out_a.append(sa[r])
        out_b.append(sb[c])
    return np.concatenate(out_a), np.concatenate(out_b)


def _cca(
    X: np.ndarray, Y: np.ndarray, n_components: int, ridge: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regularised CCA of paired rows: (mean_x, mean_y, A, B, correlations) with ``(X - mean_x) @ A`` the canonical
    variates (unit variance on the pairs)."""
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    n = X.shape[0]

    def inv_sqrt(C: np.ndarray) -> np.ndarray:
        vals, vecs = np.linalg.eigh(C)
        vals = np.maximum(vals, 0.0) + ridge * max(float(np.trace(C)) / C.shape[0], 1e-12)
        return (vecs / np.sqrt(vals)) @ vecs.T

    Wx = inv_sqrt(Xc.T @ Xc / n)
    Wy = inv_sqrt(Yc.T @ Yc / n)
    M = Wx @ (Xc.T @ Yc / n) @ Wy
    u, s, vt = np.linalg.svd(M, full_matrices=False)
    d = min(n_components, s.size)
    return mx, my, Wx @ u[:, :d], Wy @ vt[:d].T, s[:d]


# ---------------------------------------------------------------------------------------------- API


def _matrix(adata: AnnData, layer: str | None, name: str) -> Any:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        msg = f"{name} has no layer {layer!r}; layers: {sorted(adata.layers)}."
        raise InputError(msg)
    return adata.layers[layer]


def _panel(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(str(x) for x in list(names)[:n])
    return f"{len(names)} features: {shown}{', ...' if len(names) > n else ''}"


def integrate_unpaired(
    ref: AnnData,
    other: AnnData,
    *,
    links: LinkTable | Mapping[str, Any] | str | Path | None = None,
    n_neighbors: int = 15,
    n_matches: int = 5,
    n_components: int = 30,
    n_cca: int = 15,
    n_iter: int = 0,
    smoothing: float = 0.3,
    n_pivots: int = 10_000,
    pivot_neighbors: int = 5,
    pivot_filter: float = 0.2,
    pivot_method: str = "mnn",
    spatial_prior_um: float | None = None,
    transform: Transform | None = None,
    min_score: float | None = None,
    layers: tuple[str | None, str | None] = (None, None),
    counts: tuple[bool | None, bool | None] = (None, None),
    names: tuple[str, str] = ("reference", "other"),
    n_probe: int = 3,
    seed: int | None = 0,
) -> IntegrationResult:
    """Match the cells of two modalities measured on different cells, by expression (MaxFuse-like).

    Parameters
    ----------
    ref
        Reference modality (e.g. RNA): its cells get partners. Raw counts or intensities in ``X``.
    other
        Other modality (e.g. proteins on an adjacent section), its own cells and ids.
    links
        Protein <-> gene linking table: None (built-in), a dict ``{protein: [genes]}``, a file, or a
        :class:`~spatialmultiomics.align.LinkTable` (see :func:`~spatialmultiomics.align.load_links`); user entries
        extend the built-in table.
    n_neighbors
        Neighbours of each cell in its own modality for the smoothing.
    n_matches
        Partners per reference cell.
    n_components
        PCA components per modality (fewer when a modality has fewer features).
    n_cca
        Dimensions of the joint (canonical) space.
    n_iter
        Extra refinements: re-match the pivots in the joint space and refit it (default 0: the joint space fitted
        once on the pivots found on the linked features; measured, refinements did not help on the benchmarks).
    smoothing
        Weight ``w`` of a cell's own values in the smoothing (0 < w <= 1; 1: no smoothing).
    n_pivots
        Cells per modality (a seeded sample) used to fit the joint space.
    pivot_neighbors
        ``k`` of the mutual-nearest-neighbour pivot matching.
    pivot_method
        ``'mnn'`` (mutual nearest neighbours, default) or ``'assignment'`` (one-to-one pairs of maximal total
        correlation, on random batches of 2,000 cells, as MaxFuse does).
    pivot_filter
        Share of the pivot pairs with the lowest scores left out of each CCA fit (0 <= f < 1).
    spatial_prior_um
        When set, partners are sought only among the other modality's cells within this distance (µm) of the
        reference cell, in the reference frame (``obsm['spatial']``, ``transform`` applied to ``other``); a cell
        without any candidate gets no match. None: no spatial restriction.
    transform
        Transform from ``other``'s frame to ``ref``'s (for ``spatial_prior_um``); default identity.
    min_score
        Score a match must beat to be trusted; default: the 99th percentile of the scores of random pairs.
    layers
        Layer of each modality to read (None: ``X``).
    counts
        Whether each modality holds raw counts (library-size normalised) or intensities; None: detected
        (non-negative integers are counts).
    names
        Names of the two modalities, used in messages.
    n_probe
        Lists searched per query by the approximate nearest-neighbour index (large data only).
    seed
        Seed of the sampling, PCA and index; the same seed gives the same result.

    Returns
    -------
    :class:`IntegrationResult` with every match (reference row, other row, score, rank), the joint embedding
    and diagnostics.

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> m = smo.datasets.synthetic_tissue(600, seed=0)
    >>> res = integrate_unpaired(m["rna"][:300], m["protein"][300:], seed=0)
    >>> res.diagnostics["n_links"] > 10
    True
    """
    import anndata as ad

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    for label, a in ((names[0], ref), (names[1], other)):
        if not isinstance(a, ad.AnnData):
            msg = f"{label} must be an AnnData, got {type(a).__name__}."
            raise InputError(msg)
        if a.n_obs < 3:
            msg = f"{label} has {a.n_obs} cells; integration needs at least 3 per modality."
            raise InputError(msg)
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
    n_matches = check_positive_int(n_matches, name="n_matches")
    n_components = check_positive_int(n_components, name="n_components", minimum=2)
    n_cca = check_positive_int(n_cca, name="n_cca")
    n_iter = check_positive_int(n_iter, name="n_iter", minimum=0)
    n_pivots = check_positive_int(n_pivots, name="n_pivots", minimum=10)
    pivot_neighbors = check_positive_int(pivot_neighbors, name="pivot_neighbors")
    n_probe = check_positive_int(n_probe, name="n_probe")
    w = check_in_range(smoothing, name="smoothing", low=0.0, high=1.0)
    if w == 0.0:
        msg = "smoothing must be > 0 (the weight of a cell's own values); 1 turns smoothing off."
        raise InputError(msg)
    pivot_filter = check_in_range(pivot_filter, name="pivot_filter", low=0.0, high=0.95)
    pivot_method = check_option(pivot_method, PIVOT_METHODS, name="pivot_method")
    if spatial_prior_um is not None:
        spatial_prior_um = check_positive(spatial_prior_um, name="spatial_prior_um")
        for label, a in ((names[0], ref), (names[1], other)):
            if Keys.SPATIAL not in a.obsm:
                msg = f"spatial_prior_um needs obsm['spatial'] in both modalities; {label} has none."
                raise InputError(msg)
    rng = check_random_state(seed)

    # 1. linked features
    ref_vars, other_vars = [str(v) for v in ref.var_names], [str(v) for v in other.var_names]
    lf = resolve_links(ref_vars, other_vars, links)
    if len(lf) == 0:
        msg = (
            f"no linked features between {names[0]!r} ({_panel(ref_vars)}) and {names[1]!r} ({_panel(other_vars)}); "
            "pass links={'<protein>': ['<gene>', ...]} or a links file naming which genes code which channels."
        )
        raise InputError(msg)
    Xr, Xo = _matrix(ref, layers[0], names[0]), _matrix(other, layers[1], names[1])
    cr = _is_counts(Xr) if counts[0] is None else bool(counts[0])
    co = _is_counts(Xo) if counts[1] is None else bool(counts[1])
    Nr, No = _normalise(Xr, cr), _normalise(Xo, co)
    Lr = (
        np.log1p(np.maximum(linked_matrix(Nr, lf.ref_features), 0.0))
        if cr
        else linked_matrix(_log(Nr), lf.ref_features)
    )
    Lo = (
        np.log1p(np.maximum(linked_matrix(No, lf.other_features), 0.0))
        if co
        else linked_matrix(_log(No), lf.other_features)
    )
    Lr, okr = _standardise_columns(Lr)
    Lo, oko = _standardise_columns(Lo)
    used = okr & oko
    if used.sum() == 0:
        msg = (
            f"the {len(lf)} linked features between {names[0]!r} and {names[1]!r} ({', '.join(lf.names[:6])}) are "
            "constant in one modality; pass links= naming other channels."
        )
        raise InputError(msg)
    Lr, Lo = Lr[:, used], Lo[:, used]
    link_frame = lf.to_frame(ref_vars, other_vars)[used].reset_index(drop=True)
    if used.sum() < 3:
        warn(
            f"only {int(used.sum())} linked features between {names[0]!r} and {names[1]!r} "
            f"({', '.join(link_frame['link'])}); the initial matching may be poor."
        )
    timings["links"] = time.perf_counter() - t0

    # 2. own-modality coordinates and smoothing graphs
    t = time.perf_counter()
    Zr = _pca(_log(Nr), n_components, rng)
    Zo = _pca(_log(No), n_components, rng)
    timings["pca"] = time.perf_counter() - t
    t = time.perf_counter()
    _, nr, knn_kind = _knn(Zr, Zr, n_neighbors, rng, self_query=True, n_probe=n_probe)
    _, no, _ = _knn(Zo, Zo, n_neighbors, rng, self_query=True, n_probe=n_probe)
    Sr, So = _smoother(nr, w), _smoother(no, w)
    timings["graphs"] = time.perf_counter() - t

    # 3. initial pivots on the smoothed linked features (a seeded sample of each modality)
    t = time.perf_counter()
    pr = np.sort(rng.choice(ref.n_obs, n_pivots, replace=False)) if ref.n_obs > n_pivots else np.arange(ref.n_obs)
    po = np.sort(rng.choice(other.n_obs, n_pivots, replace=False)) if other.n_obs > n_pivots else np.arange(other.n_obs)
    Ur = _unit_rows(Sr[pr] @ Lr)
    Uo = _unit_rows(So[po] @ Lo)
    a, b = _pairs(Ur, Uo, pivot_neighbors, rng, pivot_method)
    pair_score = (Ur[a] * Uo[b]).sum(axis=1)
    n_pivots_used = [int(a.size)]
    if a.size < 10:
        msg = (
            f"{names[0]!r} and {names[1]!r} share too little on their {int(used.sum())} linked features "
            f"({', '.join(link_frame['link'][:6])}): only {a.size} mutual pairs; check the links and the panels."
        )
        raise InputError(msg)

    # 4. joint space: CCA on the pivots, refined
    Yr, Yo = np.asarray(Sr @ Zr), np.asarray(So @ Zo)  # smoothed PCA coordinates
    d_max = max(1, min(n_cca, Zr.shape[1], Zo.shape[1]))
    corr = np.zeros(0)
    for it in range(n_iter + 1):
        keep = pair_score >= np.quantile(pair_score, pivot_filter) if pivot_filter > 0 else np.ones(a.size, bool)
        mx, my, A, B, corr = _cca(Yr[pr[a[keep]]], Yo[po[b[keep]]], d_max)
        if it == n_iter:
            break
        Er = _unit_rows((Yr[pr] - mx) @ (A * corr))
        Eo = _unit_rows((Yo[po] - my) @ (B * corr))
        a, b = _pairs(Er, Eo, pivot_neighbors, rng, pivot_method)
        pair_score = (Er[a] * Eo[b]).sum(axis=1)
        n_pivots_used.append(int(a.size))
    timings["joint_space"] = time.perf_counter() - t

    # 5. matching every reference cell in the smoothed joint space
    t = time.perf_counter()
    # canonical coordinates weighted by their correlation: dimensions the modalities do not share count little
    A, B = A * corr, B * corr
    Er = _unit_rows((Yr - mx) @ A)
    Eo = _unit_rows((Yo - my) @ B)
    n_without = 0
    if spatial_prior_um is None:
        d2, nb, _ = _knn(Er, Eo, n_matches, rng, n_probe=n_probe)
        ri = np.repeat(np.arange(ref.n_obs), nb.shape[1])
        oi = nb.ravel()
        sc = 1.0 - 0.5 * d2.ravel()  # unit rows: |x - y|^2 = 2 - 2 corr
        rk = np.tile(np.arange(nb.shape[1]), ref.n_obs)
    else:
        ri, oi, sc, rk, n_without = _spatial_matches(
            Er, Eo, ref, other, transform or Transform.identity(), spatial_prior_um, n_matches
        )
    # null: random pairs
    qr = rng.integers(0, ref.n_obs, _NULL_PAIRS)
    qo = rng.integers(0, other.n_obs, _NULL_PAIRS)
    null = (Er[qr] * Eo[qo]).sum(axis=1)
    null_q = float(np.quantile(null, NULL_QUANTILE))
    thr = null_q if min_score is None else float(min_score)
    timings["matching"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    order = np.lexsort((rk, ri))
    result = IntegrationResult(
        ref_index=ri[order].astype(np.int64),
        other_index=oi[order].astype(np.int64),
        score=np.clip(sc[order], -1.0, 1.0).astype(np.float32),
        rank=rk[order].astype(np.int16),
        embedding_ref=((Zr - mx) @ A).astype(np.float32),
        embedding_other=((Zo - my) @ B).astype(np.float32),
        ref_names=ref.obs_names.copy(),
        other_names=other.obs_names.copy(),
        min_score=thr,
        links=link_frame,
        diagnostics={},
    )
    best_other, best_score = result.best()
    result.diagnostics.update(
        {
            "n_links": int(used.sum()),
            "links": list(link_frame["link"]),
            "orientation": lf.orientation,
            "counts": {names[0]: cr, names[1]: co},
            "n_components": [int(Zr.shape[1]), int(Zo.shape[1])],
            "n_cca": int(A.shape[1]),
            "canonical_correlations": [round(float(c), 4) for c in corr],
            "n_pivot_cells": [int(pr.size), int(po.size)],
            "n_pivots": n_pivots_used,
            "score_median": float(np.nanmedian(best_score)) if np.isfinite(best_score).any() else float("nan"),
            "null_score_q99": null_q,
            "min_score": thr,
            "fraction_trusted": float(result.trusted().mean()),
            "n_reference_without_candidates": int(n_without),
            "n_other_matched": int(np.unique(best_other[best_other >= 0]).size),
            "spatial_prior_um": spatial_prior_um,
            "knn": knn_kind,
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    logger.info(
        "integrate_unpaired %s <- %s: %d links, %s pivots, canonical correlations %s, median score %.3f, "
        "%.0f%% trusted (null q99 %.3f), %.1f s",
        names[0],
        names[1],
        int(used.sum()),
        n_pivots_used,
        result.diagnostics["canonical_correlations"][:3],
        result.diagnostics["score_median"],
        100 * result.diagnostics["fraction_trusted"],
        null_q,
        timings["total"],
    )
    return result


def _spatial_matches(
    Er: np.ndarray,
    Eo: np.ndarray,
    ref: AnnData,
    other: AnnData,
    transform: Transform,
    radius: float,
    n_matches: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Best ``n_matches`` partners by expression among the other cells within ``radius`` µm of each reference cell."""
    from scipy.spatial import cKDTree

    from spatialmultiomics.align._match import check_coords

    rxy = check_coords(ref.obsm[Keys.SPATIAL], name="reference obsm['spatial']")
    oxy = transform.apply(check_coords(other.obsm[Keys.SPATIAL], name="other obsm['spatial']"))
    tree = cKDTree(oxy)
    # candidates: the cells within the radius, at most as many as a disc of that radius holds at 3x the density
    density = other.n_obs / max(float(np.prod(np.ptp(oxy, axis=0))), 1e-9)
    k_space = int(np.clip(3.0 * density * np.pi * radius**2, n_matches, 512))
    k_space = min(k_space, other.n_obs)
    n = Er.shape[0]
    ri, oi, sc, rk = [], [], [], []
    step = max(1, _BLOCK // (k_space * Er.shape[1]))
    for s in range(0, n, step):
        d, j = tree.query(rxy[s : s + step], k=k_space, distance_upper_bound=radius)
        d, j = d.reshape(-1, k_space), j.reshape(-1, k_space)
        ok = j < other.n_obs
        jj = np.where(ok, j, 0)
        corr = np.einsum("id,ikd->ik", Er[s : s + step], Eo[jj])
        corr = np.where(ok, corr, -np.inf)
        m = min(n_matches, k_space)
        v, c = _topk_rows(-corr, m)
        v = -v
        valid = np.isfinite(v)
        rows = np.repeat(np.arange(s, s + v.shape[0]), m).reshape(v.shape)
        ri.append(rows[valid])
        oi.append(np.take_along_axis(jj, c, axis=1)[valid])
        sc.append(v[valid])
        rk.append(np.broadcast_to(np.arange(m), v.shape)[valid])
    ri_, oi_, sc_, rk_ = (np.concatenate(x) for x in (ri, oi, sc, rk))
    n_without = int(n - np.unique(ri_).size)
    return ri_, oi_, sc_, rk_, n_without


def transfer_profiles(
    result: IntegrationResult, other_X: Any, *, min_score: float | None = None, untrusted: str = "keep"
) -> Any:
    """Profile of the other modality for each reference cell: the score-weighted mean of its matched cells.

    Parameters
    ----------
    result
        The :class:`IntegrationResult`.
    other_X
        (n_other, n_features) matrix of the other modality (dense or sparse), rows in ``result.other_names`` order.
    min_score
        Matches scoring at most this are left out (default: ``result.min_score``).
    untrusted
        Reference cells without a trusted match: ``'keep'`` (the mean of their own matches anyway), ``'impute'``
        (the mean transfer of the 10 trusted reference cells nearest in the joint space) or ``'drop'`` (a row of
        zeros); :meth:`IntegrationResult.trusted` says which cells these are.

    Returns
    -------
    (n_ref, n_features) float32 matrix, sparse when ``other_X`` is sparse.
    """
    if other_X.shape[0] != result.n_other:
        msg = f"other_X has {other_X.shape[0]} rows; the integration's other modality has {result.n_other} cells."
        raise InputError(msg)
    W = result.weights(min_score, untrusted=untrusted)
    out = W @ other_X
    if sp.issparse(out):
        return sp.csr_matrix(out, dtype=np.float32)
    return np.asarray(out, dtype=np.float32)


def transfer_labels(
    result: IntegrationResult,
    labels: Sequence[Any] | pd.Series | np.ndarray,
    *,
    min_score: float | None = None,
    untrusted: str = "drop",
    unassigned: str = "Unassigned",
) -> pd.DataFrame:
    """Label of the other modality for each reference cell: the score-weighted vote of its trusted matches.

    Parameters
    ----------
    result
        The :class:`IntegrationResult`.
    labels
        One label per cell of the other modality (a Series is aligned on ``result.other_names``).
    min_score
        Matches scoring at most this do not vote (default: ``result.min_score``).
    untrusted
        Reference cells without a trusted match: ``'drop'`` (labelled ``unassigned``, default), ``'impute'``
        (the vote of the 10 trusted reference cells nearest in the joint space) or ``'keep'`` (the vote of their
        own matches).
    unassigned
        Label of reference cells without a trusted match.

    Returns
    -------
    DataFrame indexed by the reference ids with ``label``, ``confidence`` (the winning label's share of the
    vote, 0 when unassigned) and ``score`` (the best match's score).
    """
    if isinstance(labels, pd.Series):
        if labels.index.isin(result.other_names).all() and len(labels) == result.n_other:
            labels = labels.reindex(result.other_names)
        lab = labels.astype(str).to_numpy()
    else:
        lab = np.asarray(labels).astype(str)
    if lab.shape[0] != result.n_other:
        msg = f"labels has {lab.shape[0]} entries; the integration's other modality has {result.n_other} cells."
        raise InputError(msg)
    cats, codes = np.unique(lab, return_inverse=True)
    W = result.weights(min_score, untrusted=untrusted)
    votes = (W @ one_hot(codes, cats.size)).toarray()
    win = votes.argmax(axis=1)
    conf = votes[np.arange(votes.shape[0]), win]
    has = conf > 0
    _, best = result.best()
    return pd.DataFrame(
        {
            "label": np.where(has, cats[win], unassigned),
            "confidence": np.where(has, conf, 0.0),
            "score": best,
        },
        index=result.ref_names.copy(),
    )
