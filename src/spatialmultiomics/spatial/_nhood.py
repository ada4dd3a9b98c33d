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

The seed's "Jones-Scornecchi" score is ``(C - E) / E``; with the default ``expected="exact"``, E is the exact null
mean above, so 0 means random mixing. ``expected="paper"`` uses the seed's literal ``E = n_a n_b / n``.

References
----------
Cliff AD, Ord JK (1981). Spatial Processes: Models & Applications. Pion, London (join counts, non-free sampling).
Moran PAP (1948). The interpretation of statistical maps. J R Stat Soc B 10:243-251.
Palla G et al. (2022). Squidpy: a scalable framework for spatial omics analysis. Nat Methods 19:171-178.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option, check_positive_int
from spatialmultiomics.spatial._graph import _binary_graph, _get_fov, _get_graph, _get_labels, _package_version

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData
    from mudata import MuData

__all__ = ["ColocalizationResult", "colocalization", "colocalization_table"]

_EXPECTED = ("exact", "paper")
_MIN_CELLS = 2  # types with fewer cells get NaN statistics and the ``degenerate`` flag


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


def _graph_stats(graph: sp.csr_matrix, fov: np.ndarray | None, n_fov: int) -> dict[str, np.ndarray]:
    """Per-FOV graph sums S0, Ssq, Srec, Sout2, Sin2, Sio (each (n_fov,) float64) of a CSR graph without self-loops."""
    n = graph.shape[0]
    w = graph.data.astype(np.float64, copy=False)
    out_deg = np.asarray(graph.sum(axis=1)).ravel().astype(np.float64)
    in_deg = np.bincount(graph.indices, weights=w, minlength=n)
    sq_row = out_deg if np.all(w == 1.0) else np.asarray(graph.multiply(graph).sum(axis=1)).ravel()
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


def _pair_counts(codes: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_types: int) -> np.ndarray:
    """Join counts (K, K) of the 0/1 edge list ``rows -> cols`` for integer labels ``codes`` (0..K-1)."""
    key = codes[rows] * n_types
    key += codes[cols]
    return np.bincount(key, minlength=n_types * n_types).reshape(n_types, n_types).astype(np.float64)


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


def _permutation_counts(
    codes: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    n_types: int,
    fov: np.ndarray | None,
    n_perms: int,
    seed: int | None,
    n_jobs: int,
) -> np.ndarray:
    """Join counts (n_perms, K, K) of ``n_perms`` within-FOV relabellings; one child generator per permutation."""
    children = np.random.SeedSequence(seed).spawn(n_perms)
    order_fov = None if fov is None else np.argsort(fov, kind="stable")

    def one(child: np.random.SeedSequence) -> np.ndarray:
        rng = np.random.default_rng(child)
        return _pair_counts(_permute_within(codes, fov, order_fov, rng), rows, cols, n_types)

    if n_jobs == 1 or n_perms < 2:
        return np.stack([one(c) for c in children]) if n_perms else np.zeros((0, n_types, n_types))
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        return np.stack(list(pool.map(one, children)))


def _colocalization_arrays(
    graph: sp.csr_matrix,
    codes: np.ndarray,
    categories: list[str],
    *,
    fov: np.ndarray | None = None,
    expected: str = "exact",
    n_perms: int = 0,
    seed: int | None = 0,
    n_jobs: int = 1,
) -> ColocalizationResult:
    """Co-localization statistics on arrays: a 0/1 CSR graph without self-loops and label codes 0..K-1."""
    from scipy.special import ndtr

    n_types = len(categories)
    n = codes.size
    if fov is not None:
        fov = np.unique(fov, return_inverse=True)[1].astype(np.int64)
    n_fov = 1 if fov is None or fov.size == 0 else int(fov.max()) + 1
    rows = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 - 1 else np.int64), np.diff(graph.indptr))
    cols = graph.indices
    codes64 = codes.astype(np.int64)
    count = _pair_counts(codes64, rows, cols, n_types)

    stats = _graph_stats(graph, fov, n_fov)
    directed = bool(stats["Srec"].sum() != stats["S0"].sum())
    fov_index = np.zeros(n, dtype=np.int64) if fov is None else fov
    per_fov = np.zeros((n_fov, n_types))
    np.add.at(per_fov, (fov_index, codes64), 1.0)
    mean, var = _join_count_moments(per_fov, stats)

    n_cells = per_fov.sum(axis=0)
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
    if n_perms > 0:
        perms = _permutation_counts(codes64, rows, cols, n_types, fov, n_perms, seed, n_jobs)
        with np.errstate(divide="ignore", invalid="ignore"):
            sd = perms.std(axis=0)
            perm_z = np.where(sd > 0, (count - perms.mean(axis=0)) / np.where(sd > 0, sd, 1.0), np.nan)
        extreme = (np.abs(perms - mean) >= np.abs(count - mean) - 1e-9 * np.maximum(1.0, np.abs(mean))).sum(axis=0)
        perm_p = (1.0 + extreme) / (1.0 + n_perms)
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


# ----------------------------------------------------------------------------------------------------------------
# container level
# ----------------------------------------------------------------------------------------------------------------
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
    inplace
        True: store in ``uns`` and return None. False: return a :class:`ColocalizationResult`.

    Returns
    -------
    None or :class:`ColocalizationResult`. With ``inplace=True`` writes ``uns['{label_key}_nhood_enrichment']``
    with (K, K) float64 arrays ``'zscore'``, ``'count'`` (squidpy's schema), ``'expected'``, ``'expected_exact'``,
    ``'expected_paper'``, ``'variance'``, ``'score'``, ``'pvalue'``, ``'qvalue'`` (and ``'perm_zscore'``,
    ``'perm_pvalue'`` when ``n_perms > 0``), ``'categories'`` (K names), ``'degenerate'`` (bool (K,): fewer than
    2 cells; NaN statistics), ``'n_cells'``, ``'directed'`` and ``'params'``.

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
    codes, categories = _get_labels(data, label_key)
    graph = _binary_graph(_get_graph(data, graph_key))
    fov = _get_fov(data, fov_key)

    labelled = codes >= 0
    if not labelled.all():
        logger.info("colocalization: leaving out %d cells without a %r label.", int((~labelled).sum()), label_key)
        graph = graph[labelled][:, labelled].tocsr()
        codes = codes[labelled]
        fov = None if fov is None else fov[labelled]
    if fov is not None:
        rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
        n_cross = int(np.count_nonzero(fov[rows] != fov[graph.indices]))
        if n_cross:
            msg = (
                f"obsp[{graph_key!r}] has {n_cross} edges between cells of different FOVs (obs[{fov_key!r}]); "
                "rebuild it with smo.spatial.spatial_neighbors(data) or pass fov_key=None for one global null."
            )
            raise InputError(msg)

    result = _colocalization_arrays(
        graph, codes, categories, fov=fov, expected=expected, n_perms=n_perms, seed=seed, n_jobs=n_jobs
    )
    params = {
        "label_key": label_key,
        "graph_key": graph_key,
        "expected": expected,
        "n_perms": n_perms,
        "seed": seed,
        "fov_key": fov_key if fov is not None else None,
        "version": _package_version(),
    }
    result = replace(result, params=params)
    n_degenerate = int(result.degenerate.sum())
    if n_degenerate:
        names = [c for c, d in zip(result.categories, result.degenerate, strict=True) if d]
        logger.warning("colocalization: types with fewer than 2 cells get NaN statistics: %s", names)
    if not inplace:
        return result
    data.uns[Keys.nhood(label_key)] = result.to_uns()
    return None


def colocalization_table(data: AnnData | MuData, *, label_key: str = Keys.CELL_TYPE) -> pd.DataFrame:
    """Return the stored co-localization result as one row per ordered pair of types.

    Parameters
    ----------
    data
        Container on which :func:`colocalization` was run.
    label_key
        The ``label_key`` it was run with.

    Returns
    -------
    DataFrame with K^2 rows in category order (a outer, b inner) and columns ``cell_type_pair`` (``"A|B"``),
    ``jones_scornecchi_score``, ``cell_type_a``, ``cell_type_b``, ``observed``, ``expected``, ``z_score``,
    ``p_value``, ``q_value``, ``expected_paper`` (and ``perm_z_score``, ``perm_p_value`` when permutations ran).
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
    n_types = len(cats)
    a = np.repeat(np.arange(n_types), n_types)
    b = np.tile(np.arange(n_types), n_types)

    def flat(name: str) -> np.ndarray:
        return np.asarray(res[name], dtype=np.float64).ravel()

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
