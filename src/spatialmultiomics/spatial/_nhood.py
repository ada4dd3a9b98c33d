"""Co-localization of cell types: join counts with their exact mean and variance under random relabelling.

For a spatial graph with 0/1 adjacency ``A`` (row i -> column j; stored weights are ignored, every stored non-zero
off-diagonal entry is one edge, as in squidpy) and cell-type labels ``l``, the join count of the ordered pair of
types (a, b) is

    C[a, b] = sum_{i != j} A_ij [l_i = a] [l_j = b]  =  (O.T @ A @ O)[a, b],    O = one-hot labels (n, K).

This is squidpy's ``nhood_enrichment`` ``'count'``: for an undirected graph ``C[a, b]`` (a != b) is the number of
edges joining an a-cell and a b-cell and ``C[a, a]`` is twice the number of a-a edges.

Null model: the labels are permuted at random with the number of cells of each type fixed (sampling without
replacement, Cliff & Ord's "non-free sampling"), independently within each field of view. For one FOV with n
cells, n_a of type a, write x^(r) = x (x - 1) ... (x - r + 1) and, for the graph,

    S0 = sum_ij A_ij,  Ssq = sum_ij A_ij^2,  Srec = sum_ij A_ij A_ji  (reciprocated edges),
    Sout2 = sum_i out_i^2,  Sin2 = sum_i in_i^2,  Sio = sum_i out_i in_i,

with out_i / in_i the out- / in-degrees. With d = [a = b], splitting E[C^2] = sum_{i!=j, k!=l} A_ij A_kl
E[x_i^a x_j^b x_k^a x_l^b] by how (k, l) meets (i, j):

    P2   = n_a (n_b - d) / n^(2)                                (k,l) = (i,j), or (j,i) when a = b
    P3o  = n_a (n_b - d)(n_b - d - 1) / n^(3)                   k = i, l != j  (two out-edges of i)
    P3i  = n_a (n_a - 1)(n_b - 2d) / n^(3)                      l = j, k != i  (two in-edges of j)
    P3s  = d n_a^(3) / n^(3)                                    k = j or l = i (paths i->j->l), only a = b
    P4   = n_a (n_a - 1)(n_b - 2d)(n_b - 2d - 1) / n^(4)        four distinct cells

    E[C]   = S0 P2
    E[C^2] = Ssq P2 + d Srec P2 + (Sout2 - Ssq) P3o + (Sin2 - Ssq) P3i + 2 (Sio - Srec) P3s + (S0^2 - R) P4,
    R      = Sout2 + Sin2 + 2 Sio - Ssq - Srec,
    Var[C] = E[C^2] - E[C]^2.

These are exact for any non-negative weights (here 0/1, so Ssq = S0). For a symmetric 0/1 graph they reduce to the
classical BB / BW join-count variances (Cliff & Ord 1981, eqs. 1.44-1.48). FOVs are independent, so means and
variances add over FOVs. z = (C - E[C]) / sd, p = two-sided normal, q = Benjamini-Hochberg over the distinct pairs
(K(K+1)/2 unordered pairs for an undirected graph, K^2 ordered pairs for a directed one).

Per sample (``sample_key``): each sample's table uses only its cells and edges, with the same formulas; the pooled
table adds counts, means and variances over samples, so it is the stratified test. Counting is one ``bincount`` per
block of edges (bounded memory); a graph known to be symmetric (written by ``spatial_neighbors`` and unchanged since,
checked by a CRC-32 fingerprint) needs no transpose, otherwise reciprocated edges are counted from one transpose.

Labels that are not cell types (``exclude``, e.g. ``Unknown``) are kept as one more category for the counts and
the moments, so every cell's label takes part in the relabelling and the moments stay exact; only their rows and
columns are dropped from the reported tables (and from the q-values).

The seed's "Jones-Scornecchi" score is ``(C - E) / E``; with the default ``expected="exact"``, E is the exact null
mean above, so 0 means random mixing. ``expected="paper"`` uses the seed's literal ``E = n_a n_b / n``.

References
----------
Cliff AD, Ord JK (1981). Spatial Processes: Models & Applications. Pion, London (join counts, non-free sampling).
Moran PAP (1948). The interpretation of statistical maps. J R Stat Soc B 10:243-251.
Palla G et al. (2022). Squidpy: a scalable framework for spatial omics analysis. Nat Methods 19:171-178.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option, check_positive_int
from spatialmultiomics.spatial._graph import (
    _binary_graph,
    _edge_blocks,
    _get_fov,
    _get_graph,
    _get_labels,
    _known_symmetric,
    _package_version,
    _small_int,
)

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData
    from mudata import MuData

__all__ = ["ColocalizationResult", "colocalization", "colocalization_table"]

_EXPECTED = ("exact", "paper")
_MIN_CELLS = 2  # types with fewer cells get NaN statistics and the ``degenerate`` flag
POOLED = "pooled"  # the ``sample`` value of the pooled rows of the per-sample table
# per-sample arrays stored in uns[...]['by_sample'], stacked to (n_samples, K, K) or (n_samples, K)
_BY_SAMPLE_ARRAYS = (
    "count",
    "zscore",
    "expected",
    "expected_exact",
    "expected_paper",
    "variance",
    "score",
    "pvalue",
    "qvalue",
    "degenerate",
    "n_cells",
    "perm_zscore",
    "perm_pvalue",
)


@dataclass(frozen=True)
class ColocalizationResult:
    """Co-localization statistics for every ordered pair of cell types (all arrays (K, K), rows = type a).

    Attributes
    ----------
    categories
        The K type names, in category order.
    count
        Observed join counts ``C[a, b]`` (edges from an a-cell to a b-cell).
    expected
        The expectation used for ``score`` (``expected_exact`` or ``expected_paper``).
    expected_exact
        Exact mean of ``C[a, b]`` under random relabelling (within FOVs).
    expected_paper
        The seed's literal ``n_a n_b / n``.
    variance
        Exact variance of ``C[a, b]`` under random relabelling.
    score
        ``(count - expected) / expected`` (the seed's "jones_scornecchi_score"); NaN where expected is 0.
    zscore, pvalue, qvalue
        ``(count - expected_exact) / sqrt(variance)``, two-sided normal p-value, Benjamini-Hochberg q-value.
    degenerate
        Bool (K,), True for types with fewer than 2 cells (their z / p / q are NaN).
    n_cells
        Number of cells per type, (K,).
    directed
        Whether the graph is directed (not symmetric).
    perm_zscore, perm_pvalue
        With ``n_perms > 0``: z-scores from the permutation mean and sd, and empirical two-sided p-values
        ``(1 + #{|C_perm - E| >= |C - E|}) / (1 + n_perms)``; None otherwise.
    params
        Arguments used.
    by_sample
        With ``sample_key``: one result per sample (same K types, q-values within each sample), in sample
        order; the attributes above are then the pooled (stratified) table. None otherwise.
    """

    categories: list[str]
    count: np.ndarray
    expected: np.ndarray
    expected_exact: np.ndarray
    expected_paper: np.ndarray
    variance: np.ndarray
    score: np.ndarray
    zscore: np.ndarray
    pvalue: np.ndarray
    qvalue: np.ndarray
    degenerate: np.ndarray
    n_cells: np.ndarray
    directed: bool
    perm_zscore: np.ndarray | None = None
    perm_pvalue: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    by_sample: dict[str, ColocalizationResult] | None = None

    def to_uns(self) -> dict[str, Any]:
        """Return the ``uns`` layout (squidpy's ``'zscore'`` and ``'count'`` plus our keys)."""
        out: dict[str, Any] = {
            "zscore": self.zscore,
            "count": self.count,
            "expected": self.expected,
            "expected_exact": self.expected_exact,
            "expected_paper": self.expected_paper,
            "variance": self.variance,
            "score": self.score,
            "pvalue": self.pvalue,
            "qvalue": self.qvalue,
            "categories": list(self.categories),
            "degenerate": self.degenerate,
            "n_cells": self.n_cells,
            "directed": bool(self.directed),
            "params": dict(self.params),
        }
        if self.perm_zscore is not None:
            out["perm_zscore"] = self.perm_zscore
            out["perm_pvalue"] = self.perm_pvalue
        if self.by_sample is not None:
            tables = list(self.by_sample.values())
            by: dict[str, Any] = {
                "sample_key": str(self.params.get("sample_key", "")),
                "samples": list(self.by_sample),
            }
            for name in _BY_SAMPLE_ARRAYS:
                if getattr(self, name) is not None:
                    by[name] = np.stack([getattr(t, name) for t in tables])
            out["by_sample"] = by
        return out


# ----------------------------------------------------------------------------------------------------------------
# array level
# ----------------------------------------------------------------------------------------------------------------
def _falling(x: np.ndarray | float, r: int) -> np.ndarray:
    """Falling factorial x (x - 1) ... (x - r + 1) in float64 (0 for integers 0 <= x < r)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.ones_like(x)
    for t in range(r):
        out = out * (x - t)
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (then the numerators are 0 too: too few cells for r distinct)."""
    den = np.broadcast_to(den, num.shape)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _reciprocal_per_row(graph: sp.csr_matrix) -> np.ndarray:
    """Number of reciprocated out-edges of each row of a 0/1 CSR graph with sorted indices, float64 (n,).

    The transpose is one linear counting sort; a structurally symmetric graph is recognised by comparing the
    two structures and needs nothing more.
    """
    import scipy.sparse as sp

    pattern = sp.csr_matrix((np.ones(graph.nnz, dtype=np.int8), graph.indices, graph.indptr), shape=graph.shape)
    transposed = pattern.T.tocsr()  # rows of the transpose come out with sorted indices
    if np.array_equal(transposed.indptr, pattern.indptr) and np.array_equal(transposed.indices, pattern.indices):
        return np.diff(graph.indptr).astype(np.float64)
    both = pattern.multiply(transposed).tocsr()
    both.eliminate_zeros()
    return np.diff(both.indptr).astype(np.float64)


def _graph_stats(
    graph: sp.csr_matrix, fov: np.ndarray | None, n_fov: int, *, symmetric: bool = False
) -> dict[str, np.ndarray]:
    """Per-FOV graph sums S0, Ssq, Srec, Sout2, Sin2, Sio (each (n_fov,) float64) of a CSR graph without self-loops.

    ``symmetric=True`` asserts that the 0/1 graph is known to be symmetric (then every edge is reciprocated and no
    transpose is needed); False checks.
    """
    n = graph.shape[0]
    if np.all(graph.data == 1):  # 0/1 graph (the container path): sums from the structure alone
        if not graph.has_sorted_indices:
            graph = graph.sorted_indices()
        out_deg = np.diff(graph.indptr).astype(np.float64)
        in_deg = np.bincount(graph.indices, minlength=n).astype(np.float64)
        sq_row = out_deg
        rec_row = out_deg if symmetric else _reciprocal_per_row(graph)
    else:  # non-negative weights (the formulas hold for any weights)
        w = graph.data.astype(np.float64, copy=False)
        out_deg = np.asarray(graph.sum(axis=1)).ravel().astype(np.float64)
        in_deg = np.bincount(graph.indices, weights=w, minlength=n)
        sq_row = np.asarray(graph.multiply(graph).sum(axis=1)).ravel()
        rec_row = np.asarray(graph.multiply(graph.T.tocsr()).sum(axis=1)).ravel()
    f = np.zeros(n, dtype=np.int64) if fov is None else fov

    def per_fov(values: np.ndarray) -> np.ndarray:
        return np.bincount(f, weights=values, minlength=n_fov)

    return {
        "S0": per_fov(out_deg),
        "Ssq": per_fov(sq_row),
        "Srec": per_fov(rec_row),
        "Sout2": per_fov(out_deg * out_deg),
        "Sin2": per_fov(in_deg * in_deg),
        "Sio": per_fov(out_deg * in_deg),
    }


def _join_count_moments(counts: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of all join counts under within-FOV random relabelling.

    Parameters
    ----------
    counts
        Array (n_fov, K): number of cells of each type in each FOV.
    stats
        Per-FOV graph sums from :func:`_graph_stats` (keys S0, Ssq, Srec, Sout2, Sin2, Sio; each (n_fov,)).

    Returns
    -------
    mean, variance
        Arrays (K, K), summed over FOVs.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    n_types = counts.shape[1]
    mean = np.zeros((n_types, n_types))
    var = np.zeros((n_types, n_types))
    eye = np.eye(n_types)
    active = np.flatnonzero(np.asarray(stats["S0"]) > 0)  # FOVs without edges add nothing
    chunk = max(1, 1_000_000 // (n_types * n_types))  # FOVs per vectorised block, bounded memory
    for start in range(0, active.size, chunk):
        sel = active[start : start + chunk]
        s0, ssq, srec, sout2, sin2, sio = (
            np.asarray(stats[k], dtype=np.float64)[sel, None, None]
            for k in ("S0", "Ssq", "Srec", "Sout2", "Sin2", "Sio")
        )
        m = counts[sel]
        n = m.sum(axis=1)[:, None, None]
        ma, mb = m[:, :, None], m[:, None, :]
        p2 = _safe_div(ma * (mb - eye), _falling(n, 2))
        p3o = _safe_div(ma * (mb - eye) * (mb - eye - 1), _falling(n, 3))
        p3i = _safe_div(ma * (ma - 1) * (mb - 2 * eye), _falling(n, 3))
        p3s = _safe_div(_falling(ma, 3) * eye, _falling(n, 3))
        p4 = _safe_div(ma * (ma - 1) * (mb - 2 * eye) * (mb - 2 * eye - 1), _falling(n, 4))
        rest = sout2 + sin2 + 2 * sio - ssq - srec
        mean += (s0 * p2).sum(axis=0)
        var += (
            s0 * s0 * (p4 - p2 * p2)
            + ssq * p2
            + srec * eye * p2
            + (sout2 - ssq) * p3o
            + (sin2 - ssq) * p3i
            + 2 * (sio - srec) * p3s
            - rest * p4
        ).sum(axis=0)
    return mean, var


def _pair_counts(
    indptr: np.ndarray, indices: np.ndarray, row_code: np.ndarray, col_code: np.ndarray, n_bins: int
) -> np.ndarray:
    """Edge counts per bin ``row_code[i] + col_code[j]`` over the edges i -> j of a 0/1 CSR structure.

    With ``row_code = codes * K`` and ``col_code = codes`` the (n_bins = K^2,) result reshapes to the (K, K)
    join counts; adding ``group * K^2`` to ``row_code`` splits them by group. Edges are visited in blocks, so
    temporary memory is bounded whatever the number of edges. Returns float64 (n_bins,).
    """
    dtype = _small_int(n_bins)
    row_code = row_code.astype(dtype, copy=False)
    col_code = col_code.astype(dtype, copy=False)
    out = np.zeros(n_bins, dtype=np.int64)
    for a, b, start, stop in _edge_blocks(indptr):
        key = np.repeat(row_code[a:b], np.diff(indptr[a : b + 1]))
        key += col_code[indices[start:stop]]
        out += np.bincount(key, minlength=n_bins)
    return out.astype(np.float64)


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values of a 1-d array of p-values; NaN entries stay NaN and are not counted."""
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    ps = p[ok]
    m = ps.size
    if m == 0:
        return q
    order = np.argsort(ps, kind="stable")
    ranked = ps[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def _pair_qvalues(p: np.ndarray, directed: bool) -> np.ndarray:
    """BH q-values over the distinct pairs: all K^2 ordered pairs, or the K(K+1)/2 unordered ones, mirrored."""
    if directed:
        return _bh(p.ravel()).reshape(p.shape)
    iu = np.triu_indices(p.shape[0])
    q = np.full(p.shape, np.nan)
    q[iu] = _bh(p[iu])
    q.T[iu] = q[iu]
    return q


def _permute_within(
    codes: np.ndarray, fov: np.ndarray | None, order_fov: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """Return ``codes`` randomly permuted within each FOV (``order_fov`` = stable argsort of ``fov``)."""
    if fov is None:
        return rng.permutation(codes)
    out = np.empty_like(codes)
    shuffled = np.lexsort((rng.random(codes.size), fov))  # cells grouped by FOV, random order inside each
    out[order_fov] = codes[shuffled]
    return out


_PERM_CHUNK = 16  # permutations per task: the unit of work of the thread pool, fixed so results ignore n_jobs


def _permuted_counts(
    children: list[np.random.SeedSequence],
    codes: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_types: int,
    fov: np.ndarray | None,
    order_fov: np.ndarray | None,
    row_offset: np.ndarray | None,
    n_groups: int,
) -> np.ndarray:
    """Join counts of one relabelling per child seed: (len(children), K, K).

    With ``row_offset`` (per cell: its group times K^2; groups never mix under the permutation since they refine
    ``fov``) the counts are split by group: (len(children), n_groups, K, K).
    """
    shape = (n_types, n_types) if row_offset is None else (n_groups, n_types, n_types)
    out = np.empty((len(children), *shape))
    for t, child in enumerate(children):
        perm = _permute_within(codes, fov, order_fov, np.random.default_rng(child))
        row_code = perm * n_types if row_offset is None else perm * n_types + row_offset
        out[t] = _pair_counts(indptr, indices, row_code, perm, int(np.prod(shape))).reshape(shape)
    return out


def _permutation_stats(
    codes: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    n_types: int,
    strata: np.ndarray | None,
    row_offset: np.ndarray | None,
    n_groups: int,
    count: np.ndarray,
    mean: np.ndarray,
    n_perms: int,
    seed: int | None,
    n_jobs: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permutation mean, sd and number of permutations at least as extreme as observed, per group.

    Memory is O(G K^2) whatever ``n_perms``: each task of ``_PERM_CHUNK`` permutations reduces its counts to
    sums of deviations from the exact mean, and the tasks are added in a fixed order (so the result does not
    depend on ``n_jobs``).

    Parameters
    ----------
    count, mean
        Observed counts and exact null means, (G', K, K) with G' = ``n_groups`` (one group) or ``n_groups + 1``
        (the last entry is the pooled table, the sum over groups).

    Returns
    -------
    perm_mean, perm_sd, n_extreme
        Arrays shaped like ``count``; ``n_extreme`` counts ``|C_perm - E| >= |C - E|`` (E the exact mean).
    """
    children = np.random.SeedSequence(seed).spawn(n_perms)
    order = None if strata is None else np.argsort(strata, kind="stable")
    threshold = np.abs(count - mean) - 1e-9 * np.maximum(1.0, np.abs(mean))
    chunks = [children[i : i + _PERM_CHUNK] for i in range(0, n_perms, _PERM_CHUNK)]

    def one(chunk: list[np.random.SeedSequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = _permuted_counts(chunk, codes, indptr, indices, n_types, strata, order, row_offset, n_groups)
        if row_offset is None:
            c = c[:, None]
        if count.shape[0] > c.shape[1]:
            c = np.concatenate([c, c.sum(axis=1, keepdims=True)], axis=1)
        d = c - mean
        return d.sum(axis=0), (d * d).sum(axis=0), (np.abs(d) >= threshold).sum(axis=0)

    if n_jobs == 1 or len(chunks) < 2:
        parts = [one(c) for c in chunks]
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            parts = list(pool.map(one, chunks))
    s1 = np.zeros_like(mean)
    s2 = np.zeros_like(mean)
    n_extreme = np.zeros(mean.shape, dtype=np.int64)
    for p1, p2, p3 in parts:  # fixed order
        s1 += p1
        s2 += p2
        n_extreme += p3
    m1 = s1 / n_perms
    return mean + m1, np.sqrt(np.maximum(s2 / n_perms - m1 * m1, 0.0)), n_extreme


def _result(
    categories: list[str],
    count: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    n_cells: np.ndarray,
    *,
    directed: bool,
    expected: str,
    perm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    n_perms: int = 0,
    n_total: float | None = None,
) -> ColocalizationResult:
    """Turn counts and exact moments of one table (K, K) into scores, z, p, q (and permutation statistics).

    ``n_total`` is the number of cells in the graph (default ``n_cells.sum()``; more when excluded categories were
    sliced off), the ``n`` of the seed's ``n_a n_b / n``.
    """
    from scipy.special import ndtr

    n_types = len(categories)
    n = float(n_cells.sum()) if n_total is None else float(n_total)
    degenerate = n_cells < _MIN_CELLS
    paper = np.outer(n_cells, n_cells) / n if n else np.zeros((n_types, n_types))
    exp_used = mean if expected == "exact" else paper
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(exp_used > 0, (count - exp_used) / exp_used, np.nan)
        zero_var = var <= 1e-10 * np.maximum(mean * mean, 1.0)
        z = np.where(zero_var, np.nan, (count - mean) / np.sqrt(np.where(zero_var, 1.0, var)))
    bad = degenerate[:, None] | degenerate[None, :]
    z[bad] = np.nan
    pval = 2.0 * ndtr(-np.abs(z))
    qval = _pair_qvalues(pval, directed)

    perm_z = perm_p = None
    if perm is not None:
        perm_mean, perm_sd, n_extreme = perm
        with np.errstate(divide="ignore", invalid="ignore"):
            perm_z = np.where(perm_sd > 0, (count - perm_mean) / np.where(perm_sd > 0, perm_sd, 1.0), np.nan)
        perm_p = (1.0 + n_extreme) / (1.0 + n_perms)
        perm_z[bad] = np.nan
        perm_p[bad] = np.nan

    return ColocalizationResult(
        categories=list(categories),
        count=count,
        expected=exp_used,
        expected_exact=mean,
        expected_paper=paper,
        variance=var,
        score=score,
        zscore=z,
        pvalue=pval,
        qvalue=qval,
        degenerate=degenerate,
        n_cells=n_cells.astype(np.int64),
        directed=directed,
        perm_zscore=perm_z,
        perm_pvalue=perm_p,
    )


def _colocalization_arrays(
    graph: sp.csr_matrix,
    codes: np.ndarray,
    categories: list[str],
    *,
    fov: np.ndarray | None = None,
    sample: np.ndarray | None = None,
    sample_names: list[str] | None = None,
    expected: str = "exact",
    n_perms: int = 0,
    seed: int | None = 0,
    n_jobs: int = 1,
    symmetric: bool = False,
    report: np.ndarray | None = None,
) -> ColocalizationResult:
    """Co-localization statistics on arrays: a 0/1 CSR graph without self-loops and label codes 0..K-1.

    With ``sample`` (codes 0..S-1 per cell, ``sample_names`` their S names; the graph has no edge between
    samples) the result also holds one table per sample in ``by_sample``; the null is then stratified by every
    (FOV, sample) combination, for the per-sample tables and the pooled one alike.

    ``report`` (indices into ``categories``, default all) restricts the returned tables to those types. Counts,
    exact moments and permutations are computed with all K types, so every cell's label, reported or not, takes
    part in the relabelling and the moments of the reported pairs stay exact; q-values are over the reported
    pairs only.
    """
    n_types = len(categories)
    n = codes.size
    if sample is not None:
        sample = np.asarray(sample, dtype=np.int64)
        n_samples = len(sample_names) if sample_names is not None else int(sample.max()) + 1 if n else 1
        strata = sample if fov is None else np.asarray(fov, dtype=np.int64) * n_samples + sample
    else:
        n_samples = 1
        strata = fov
    if strata is not None:
        uniq, strata = np.unique(strata, return_inverse=True)
        strata = strata.astype(np.int64)
        n_strata = uniq.size
        stratum_sample = (uniq % n_samples) if sample is not None else np.zeros(n_strata, dtype=np.int64)
    else:
        n_strata = 1
        stratum_sample = np.zeros(1, dtype=np.int64)
    if n_strata == 0:  # no cell at all
        n_strata, strata = 1, None
        stratum_sample = np.zeros(1, dtype=np.int64)

    indptr, indices = graph.indptr, graph.indices
    codes64 = codes.astype(np.int64)
    row_offset = None if sample is None else sample * (n_types * n_types)
    row_code = codes64 * n_types if row_offset is None else codes64 * n_types + row_offset
    count = _pair_counts(indptr, indices, row_code, codes64, n_samples * n_types * n_types)
    count = count.reshape(n_samples, n_types, n_types)

    stats = _graph_stats(graph, strata, n_strata, symmetric=symmetric)
    directed = bool(stats["Srec"].sum() != stats["S0"].sum())
    per_stratum = np.zeros((n_strata, n_types))
    np.add.at(per_stratum, (np.zeros(n, dtype=np.int64) if strata is None else strata, codes64), 1.0)
    mean = np.zeros((n_samples, n_types, n_types))
    var = np.zeros((n_samples, n_types, n_types))
    n_cells = np.zeros((n_samples, n_types))
    for s in range(n_samples):
        sel = np.flatnonzero(stratum_sample == s)
        mean[s], var[s] = _join_count_moments(per_stratum[sel], {k: v[sel] for k, v in stats.items()})
        n_cells[s] = per_stratum[sel].sum(axis=0)
    if sample is not None:  # append the pooled table: moments add over independent strata
        count = np.concatenate([count, count.sum(axis=0, keepdims=True)])
        mean = np.concatenate([mean, mean.sum(axis=0, keepdims=True)])
        var = np.concatenate([var, var.sum(axis=0, keepdims=True)])
        n_cells = np.concatenate([n_cells, n_cells.sum(axis=0, keepdims=True)])

    perm = None
    if n_perms > 0:
        perm = _permutation_stats(
            codes64, indptr, indices, n_types, strata, row_offset, n_samples, count, mean, n_perms, seed, n_jobs
        )

    keep = np.arange(n_types) if report is None else np.asarray(report, dtype=np.int64)
    pairs = np.ix_(keep, keep)

    def table(g: int) -> ColocalizationResult:
        return _result(
            [categories[i] for i in keep],
            count[g][pairs],
            mean[g][pairs],
            var[g][pairs],
            n_cells[g][keep],
            directed=directed,
            expected=expected,
            perm=None if perm is None else (perm[0][g][pairs], perm[1][g][pairs], perm[2][g][pairs]),
            n_perms=n_perms,
            n_total=float(n_cells[g].sum()),
        )

    pooled = table(count.shape[0] - 1)
    if sample is None:
        return pooled
    names = sample_names if sample_names is not None else [str(s) for s in range(n_samples)]
    return replace(pooled, by_sample={str(name): table(s) for s, name in enumerate(names)})


# ----------------------------------------------------------------------------------------------------------------
# container level
# ----------------------------------------------------------------------------------------------------------------
def _get_samples(data: AnnData | MuData, sample_key: str) -> tuple[np.ndarray, list[str]]:
    """Return sample codes (int64, 0..S-1) and names of ``obs[sample_key]`` (category order, unused dropped)."""

    if sample_key not in data.obs.columns:
        msg = f"sample_key={sample_key!r} is not a column of obs; available: {list(data.obs.columns)[:20]}."
        raise InputError(msg)
    col = data.obs[sample_key]
    if col.isna().any():
        msg = f"obs[{sample_key!r}] has {int(col.isna().sum())} missing values; every cell needs a sample."
        raise InputError(msg)
    cat = col.astype("category").cat.remove_unused_categories()
    names = [str(c) for c in cat.cat.categories]
    if POOLED in names:
        msg = f"obs[{sample_key!r}] has a sample named {POOLED!r}, which marks the pooled rows; rename that sample."
        raise InputError(msg)
    if len(set(names)) != len(names):
        msg = f"obs[{sample_key!r}] has sample names that are equal as text (e.g. 1 and '1'); make them distinct."
        raise InputError(msg)
    return cat.cat.codes.to_numpy().astype(np.int64), names


def _check_no_cross_edges(graph: sp.csr_matrix, groups: np.ndarray, key: str, graph_key: str, what: str) -> None:
    """Raise when the graph joins cells of different groups (FOVs or samples)."""
    n_cross = 0
    for a, b, start, stop in _edge_blocks(graph.indptr):
        source = np.repeat(groups[a:b], np.diff(graph.indptr[a : b + 1]))
        n_cross += int(np.count_nonzero(source != groups[graph.indices[start:stop]]))
    if n_cross:
        msg = (
            f"obsp[{graph_key!r}] has {n_cross} edges between cells of different {what} (obs[{key!r}]); "
            f"rebuild it with smo.spatial.spatial_neighbors(data, fov_key={key!r}) "
            f"{'or pass fov_key=None for one global null' if what == 'FOVs' else 'so that samples are never joined'}."
        )
        raise InputError(msg)


def _check_exclude(exclude: Sequence[str] | str | None) -> tuple[str, ...]:
    """``exclude`` as a tuple of names (a single string is one name)."""
    if exclude is None:
        return ()
    names = (exclude,) if isinstance(exclude, str) else exclude
    try:
        names = tuple(names)
    except TypeError:
        names = None
    if names is None or not all(isinstance(x, str) for x in names):
        msg = f"exclude must be None, a label or a list of labels (strings), got {exclude!r}."
        raise InputError(msg)
    return names


def _reported(categories: list[str], excluded: tuple[str, ...], label_key: str) -> np.ndarray | None:
    """Indices of the categories to report (None: all), after leaving out ``excluded``."""
    if not excluded:
        return None
    absent = [x for x in excluded if x not in categories]
    if absent:
        logger.info(
            "colocalization: exclude=%s not among the labels of obs[%r]; nothing to leave out.", absent, label_key
        )
    keep = np.flatnonzero([c not in excluded for c in categories])
    if keep.size == 0:
        msg = (
            f"exclude={list(excluded)} leaves no category of obs[{label_key!r}] to report (categories: "
            f"{categories[:20]}); exclude fewer labels."
        )
        raise InputError(msg)
    if keep.size < len(categories):
        logger.info(
            "colocalization: %s kept in the graph and the null model, not reported.",
            [c for c in categories if c in excluded],
        )
    return keep


def colocalization(
    data: AnnData | MuData,
    *,
    label_key: str = Keys.CELL_TYPE,
    graph_key: str = Keys.GRAPH,
    expected: str = "exact",
    n_perms: int = 0,
    seed: int | None = 0,
    n_jobs: int = 1,
    fov_key: str | None = Keys.FOV,
    sample_key: str | None = None,
    exclude: Sequence[str] | str | None = None,
    inplace: bool = True,
) -> ColocalizationResult | None:
    """Cell-type co-localization: observed join counts vs their exact expectation under random relabelling.

    For every ordered pair of types (a, b) counts the graph edges from an a-cell to a b-cell and compares them
    with the exact mean and variance of that count when the labels are permuted at random (type sizes fixed,
    within each FOV); see the module documentation for the formulas. No permutations are needed for z, p and q;
    ``n_perms > 0`` adds seeded Monte-Carlo permutations as a check.

    Parameters
    ----------
    data
        AnnData or MuData with categorical labels in ``obs[label_key]`` and a graph in ``obsp[graph_key]``
        (stored weights are ignored: each stored off-diagonal entry counts as one edge; self-loops are dropped).
        Cells with a missing label are left out (with their edges).
    label_key
        Column of ``obs`` with the cell types.
    graph_key
        Key of the adjacency matrix in ``obsp`` (from :func:`spatial_neighbors`).
    expected
        ``"exact"`` (default): the score uses the exact null mean, so 0 means random mixing. ``"paper"``: the
        seed's literal ``n_a n_b / n`` (for the score only; z, p and q always use the exact null).
    n_perms
        Number of seeded label permutations for permutation z-scores and empirical p-values (0: none).
    seed
        Seed of the permutations (one child generator per permutation, so results do not depend on ``n_jobs``).
    n_jobs
        Threads for the permutations.
    fov_key
        Column of ``obs`` with the FOV of each cell; when it exists, labels are permuted within each FOV and the
        graph must not join cells of different FOVs.
    sample_key
        Column of ``obs`` with the sample (patient, section, condition replicate; may equal ``fov_key``). When
        given, one table per sample is computed besides the pooled one, labels are permuted within each
        (FOV, sample) combination and the graph must not join cells of different samples. Each sample's table
        uses only its own cells and edges, so the tables of different samples can be compared; the pooled table
        adds counts, means and variances over samples (a stratified test across samples).
    exclude
        Labels that are not cell types, e.g. ``("Unknown",)`` for cells without a call (``run_pipeline`` passes
        it): no pair with them is reported, but their cells stay in the graph and in the null model. They occupy
        space and are neighbours of typed cells, and the labels of all cells, excluded ones included, are
        permuted, so the expectations and variances of the reported pairs stay exact (leaving those cells out
        would change the graph and every expectation); q-values are over the reported pairs. Names that are not
        categories of ``obs[label_key]`` are ignored. Cells with a missing label, in contrast, are removed with
        their edges. Default: every category is reported.
    inplace
        True: store in ``uns`` and return None. False: return a :class:`ColocalizationResult`.

    Returns
    -------
    None or :class:`ColocalizationResult`. With ``inplace=True`` writes ``uns['{label_key}_nhood_enrichment']``
    with (K, K) float64 arrays ``'zscore'``, ``'count'`` (squidpy's schema), ``'expected'``, ``'expected_exact'``,
    ``'expected_paper'``, ``'variance'``, ``'score'``, ``'pvalue'``, ``'qvalue'`` (and ``'perm_zscore'``,
    ``'perm_pvalue'`` when ``n_perms > 0``), ``'categories'`` (the K reported names), ``'degenerate'`` (bool (K,): fewer than
    2 cells; NaN statistics), ``'n_cells'``, ``'directed'`` and ``'params'``. With ``sample_key`` these are the
    pooled statistics and ``'by_sample'`` holds ``'sample_key'``, ``'samples'`` (S names) and the same arrays
    stacked per sample, (S, K, K) (``'degenerate'`` and ``'n_cells'``: (S, K)); read them as one long table
    with :func:`colocalization_table` ``(data, by_sample=True)``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, anndata as ad
    >>> from spatialmultiomics import spatial
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(obsm={"spatial": rng.random((300, 2)) * 500})
    >>> adata.obs["cell_type"] = pd.Categorical(rng.choice(["T", "B", "tumour"], 300))
    >>> spatial.spatial_neighbors(adata, radius=50.0)
    >>> spatial.colocalization(adata)
    >>> spatial.colocalization_table(adata).columns[:2].tolist()
    ['cell_type_pair', 'jones_scornecchi_score']
    """
    expected = check_option(expected, _EXPECTED, name="expected")
    n_perms = check_positive_int(n_perms, name="n_perms", minimum=0)
    n_jobs = check_positive_int(n_jobs, name="n_jobs")
    excluded = _check_exclude(exclude)
    codes, categories = _get_labels(data, label_key)
    report = _reported(categories, excluded, label_key)
    samples, sample_names = (None, None) if sample_key is None else _get_samples(data, sample_key)
    raw_graph = _get_graph(data, graph_key)
    symmetric = _known_symmetric(data, graph_key, raw_graph)
    graph = _binary_graph(raw_graph)
    del raw_graph
    fov = _get_fov(data, fov_key)

    labelled = codes >= 0
    if not labelled.all():
        logger.info("colocalization: leaving out %d cells without a %r label.", int((~labelled).sum()), label_key)
        graph = graph[labelled][:, labelled].tocsr()
        codes = codes[labelled]
        fov = None if fov is None else fov[labelled]
        samples = None if samples is None else samples[labelled]
    if fov is not None:
        _check_no_cross_edges(graph, fov, str(fov_key), graph_key, "FOVs")
    if samples is not None and sample_key != fov_key:
        _check_no_cross_edges(graph, samples, str(sample_key), graph_key, "samples")

    result = _colocalization_arrays(
        graph,
        codes,
        categories,
        fov=fov,
        sample=samples,
        sample_names=sample_names,
        expected=expected,
        n_perms=n_perms,
        seed=seed,
        n_jobs=n_jobs,
        symmetric=symmetric,
        report=report,
    )
    params = {
        "label_key": label_key,
        "graph_key": graph_key,
        "expected": expected,
        "n_perms": n_perms,
        "seed": seed,
        "fov_key": fov_key if fov is not None else None,
        "sample_key": sample_key,
        "exclude": list(excluded),
        "version": _package_version(),
    }
    by_sample = result.by_sample
    if by_sample is not None:
        by_sample = {name: replace(r, params=params) for name, r in by_sample.items()}
    result = replace(result, params=params, by_sample=by_sample)
    n_degenerate = int(result.degenerate.sum())
    if n_degenerate:
        names = [c for c, d in zip(result.categories, result.degenerate, strict=True) if d]
        logger.warning("colocalization: types with fewer than 2 cells get NaN statistics: %s", names)
    if not inplace:
        return result
    data.uns[Keys.nhood(label_key)] = result.to_uns()
    return None


def _long_table(res: dict[str, Any], cats: list[str], index: int | None = None) -> pd.DataFrame:
    """One row per ordered pair from stored (K, K) arrays, or from entry ``index`` of stacked (S, K, K) ones."""
    import pandas as pd

    n_types = len(cats)
    a = np.repeat(np.arange(n_types), n_types)
    b = np.tile(np.arange(n_types), n_types)

    def flat(name: str) -> np.ndarray:
        arr = np.asarray(res[name], dtype=np.float64)
        return (arr if index is None else arr[index]).ravel()

    names = np.asarray(cats, dtype=object)
    table = pd.DataFrame(
        {
            "cell_type_pair": [f"{x}|{y}" for x, y in zip(names[a], names[b], strict=True)],
            "jones_scornecchi_score": flat("score"),
            "cell_type_a": names[a],
            "cell_type_b": names[b],
            "observed": flat("count"),
            "expected": flat("expected"),
            "z_score": flat("zscore"),
            "p_value": flat("pvalue"),
            "q_value": flat("qvalue"),
            "expected_paper": flat("expected_paper"),
        }
    )
    if "perm_zscore" in res:
        table["perm_z_score"] = flat("perm_zscore")
        table["perm_p_value"] = flat("perm_pvalue")
    return table


def colocalization_table(
    data: AnnData | MuData, *, label_key: str = Keys.CELL_TYPE, by_sample: bool = False
) -> pd.DataFrame:
    """Return the stored co-localization result as one row per ordered pair of types.

    Parameters
    ----------
    data
        Container on which :func:`colocalization` was run.
    label_key
        The ``label_key`` it was run with.
    by_sample
        Return the per-sample tables and the pooled one, stacked (needs :func:`colocalization` run with a
        ``sample_key``).

    Returns
    -------
    DataFrame with K^2 rows in category order (a outer, b inner) and columns ``cell_type_pair`` (``"A|B"``),
    ``jones_scornecchi_score``, ``cell_type_a``, ``cell_type_b``, ``observed``, ``expected``, ``z_score``,
    ``p_value``, ``q_value``, ``expected_paper`` (and ``perm_z_score``, ``perm_p_value`` when permutations ran).
    With ``by_sample=True``: a first column ``sample`` and K^2 rows per sample in sample order, then K^2 rows
    with ``sample == "pooled"``, and two more columns ``n_cells_a``, ``n_cells_b`` (cells of each type in that
    sample). q-values are computed within each sample's table.
    """
    import pandas as pd

    key = Keys.nhood(label_key)
    res = data.uns.get(key)
    if not isinstance(res, dict) or "count" not in res or "score" not in res:
        msg = (
            f"No co-localization result in uns[{key!r}]; "
            f"run smo.spatial.colocalization(data, label_key={label_key!r}) first."
        )
        raise InputError(msg)
    cats = [str(c) for c in res["categories"]]
    if not by_sample:
        return _long_table(res, cats)
    by = res.get("by_sample")
    if not isinstance(by, dict) or "samples" not in by:
        msg = (
            f"uns[{key!r}] has no per-sample tables; "
            f"run smo.spatial.colocalization(data, label_key={label_key!r}, sample_key=...) first."
        )
        raise InputError(msg)
    samples = [str(s) for s in by["samples"]]
    n_types = len(cats)
    a = np.repeat(np.arange(n_types), n_types)
    b = np.tile(np.arange(n_types), n_types)
    parts = []
    for s, name in enumerate([*samples, POOLED]):
        src, idx = (by, s) if s < len(samples) else (res, None)  # the last part is the pooled table
        part = _long_table(src, cats, idx)
        n_cells = np.asarray(src["n_cells"] if idx is None else src["n_cells"][idx])
        part.insert(0, "sample", name)
        part["n_cells_a"] = n_cells[a].astype(np.int64)
        part["n_cells_b"] = n_cells[b].astype(np.int64)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)
