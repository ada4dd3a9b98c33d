"""Cluster cells for annotation: a joint embedding, a shared-nearest-neighbour graph, Leiden.

Array functions; the resolution is chosen and the clusters named in :mod:`spatialmultiomics.annotate._by_cluster`.

Embedding
    Per modality the values fed to the factorization (``layers['preprocessed']``, the highly variable genes /
    marker channels of ``var['highly_variable']``): proteins as scaled (a panel of tens of channels is its own
    low-dimensional space), genes reduced to ``n_pcs`` principal components (centred PCA; sparse input is never
    densified). Each block is divided by the square root of its total variance, so every modality weighs the
    same in the distances, as the joint NMF balances its blocks.
Graph
    ``n_neighbors`` nearest neighbours (Euclidean, exact), weighted by the Jaccard index of the two cells'
    neighbour sets (the shared-nearest-neighbour graph of PhenoGraph, Levine et al. 2015, Cell 162, 184), symmetric.
Clustering
    Leiden (Traag et al. 2019, Sci Rep 9, 5233) through ``leidenalg`` on an ``igraph`` graph, the
    RB-configuration (modularity with a resolution) quality function, seeded.
Scale
    Above ``max_cells`` cells a seeded sample of ``max_cells`` cells is clustered and every other cell takes the
    majority cluster of its ``n_neighbors`` nearest sampled cells in the embedding (an exact search among 20,000
    of them, in the embedding's top 16 principal components).
Neighbour searches
    Exact, by :mod:`~spatialmultiomics.annotate._neighbors` (a KD-tree up to 16 dimensions; above, k-means groups
    with proven bounds where they spare most of the data, else brute force); among points at the same distance
    the smaller index is the nearer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._sparse import one_hot

if TYPE_CHECKING:
    from mudata import MuData

__all__ = [
    "RESOLUTION_GRID",
    "apply_embedding",
    "fit_joint_embedding",
    "joint_embedding",
    "leiden",
    "merge_small_clusters",
    "snn_graph",
]

#: dimensions of the neighbour search that assigns unsampled cells (the embedding's top principal components)
_TREE_DIMS = 16
#: sampled cells the unsampled ones are compared with
_ASSIGN_REFERENCE = 20_000
#: resolutions scanned when ``resolution='auto'``
RESOLUTION_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.4, 2.0)


def _block(
    X: Any, n_pcs: int, seed: int, fit_rows: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One modality's embedding: the centred columns themselves when few, else the top ``n_pcs`` centred PCs.

    The centre and the components are fitted on ``fit_rows`` (all rows when None) and applied to every row, a
    chunk at a time; sparse input is never densified beyond a chunk. Returns the embedded rows, the components
    (p, n_comp) float32 (None: the columns themselves) and the shift subtracted after the projection.
    """
    n, p = X.shape
    fit = X if fit_rows is None else X[fit_rows]
    if p <= n_pcs:
        Y = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
        F = np.asarray(fit.toarray() if sp.issparse(fit) else fit, dtype=np.float32)
        centre = F.mean(axis=0, dtype=np.float64).astype(np.float32)
        return Y - centre, None, centre
    from sklearn.decomposition import PCA

    m = fit.shape[0]
    n_comp = max(1, min(n_pcs, m - 1, p - 1))
    if sp.issparse(fit):
        # centred PCA without densifying: scikit-learn's arpack solver centres sparse input implicitly
        pca = PCA(n_components=n_comp, svd_solver="arpack", random_state=seed).fit(sp.csr_matrix(fit, dtype=np.float32))
    else:
        solver = "randomized" if m > 5000 else "full"
        pca = PCA(n_components=n_comp, svd_solver=solver, random_state=seed).fit(np.asarray(fit, dtype=np.float32))
    C = pca.components_.astype(np.float32).T  # (p, n_comp)
    shift = (pca.mean_.astype(np.float32) @ C).astype(np.float32)
    out = np.empty((n, n_comp), dtype=np.float32)
    for a in range(0, n, 200_000):
        chunk = X[a : a + 200_000]
        out[a : a + chunk.shape[0]] = np.asarray(chunk @ C, dtype=np.float32) - shift
    return out, C, shift


def joint_embedding(
    blocks: Sequence[Any], *, n_pcs: int = 30, seed: int = 0, fit_rows: np.ndarray | None = None
) -> np.ndarray:
    """Concatenate per-modality embeddings, each scaled to unit total variance.

    Parameters
    ----------
    blocks
        One (n_cells, p_b) matrix per modality (dense or sparse), the values fed to the factorization.
    n_pcs
        Blocks with more columns are reduced to this many principal components.
    seed
        Seed of the PCA solvers.
    fit_rows
        Rows the centring, components and block scales are fitted on (a sample of a large data set); all rows
        when None. Every row is embedded.

    Returns
    -------
    float32 array (n_cells, d).
    """
    return fit_joint_embedding(blocks, n_pcs=n_pcs, seed=seed, fit_rows=fit_rows)[0]


def fit_joint_embedding(
    blocks: Sequence[Any], *, n_pcs: int = 30, seed: int = 0, fit_rows: np.ndarray | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """:func:`joint_embedding`, and what was fitted per block, to embed further rows the same way.

    Returns
    -------
    The embedding (n_cells, d) float32, and one dict per block: ``'components'`` (p_b, n_comp) float32 (absent
    when the block's centred columns are used as they are), ``'shift'`` (n_comp,) float32 and ``'scale'`` (float):
    a row ``x`` of the block embeds as ``(x @ components - shift) / scale`` (``(x - shift) / scale`` without
    components; a scale of 0: not divided). :func:`apply_embedding` does that.
    """
    if not blocks:
        msg = "joint_embedding needs at least one modality block."
        raise InputError(msg)
    parts = []
    fitted: list[dict[str, Any]] = []
    for X in blocks:
        Y, C, shift = _block(X, n_pcs, seed, fit_rows)
        F = Y if fit_rows is None else Y[fit_rows]
        total = float(np.square(F, dtype=np.float64).sum() / max(F.shape[0], 1))
        scale = np.float32(np.sqrt(total)) if total > 0 else np.float32(0)
        if total > 0:
            Y /= scale
        parts.append(Y)
        fitted.append({"shift": shift, "scale": float(scale)} | ({} if C is None else {"components": C}))
    return np.ascontiguousarray(np.hstack(parts), dtype=np.float32), fitted


def apply_embedding(X: Any, fitted: Mapping[str, Any]) -> np.ndarray:
    """Embed the rows of one block ``X`` (its embedding features only) with one dict of :func:`fit_joint_embedding`."""
    C = fitted.get("components")
    shift = np.asarray(fitted["shift"], dtype=np.float32)
    if C is None:
        Y = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32) - shift
    else:
        Y = np.asarray(X @ np.asarray(C, dtype=np.float32), dtype=np.float32) - shift
    scale = np.float32(fitted["scale"])
    if scale != 0:
        Y /= scale
    return Y


def _knn(E: np.ndarray, n_neighbors: int, *, seed: int = 0) -> np.ndarray:
    """Indices (n, k) of each row's ``n_neighbors`` nearest other rows (exact, Euclidean).

    Up to :data:`_TREE_DIMS` dimensions a KD-tree; above, :func:`~spatialmultiomics.annotate._neighbors.exact_neighbors`
    (grouped where that visits little of the data, else brute force; ties: the smaller index first).
    """
    from spatialmultiomics.annotate._neighbors import exact_neighbors

    k = min(n_neighbors, E.shape[0] - 1)
    if E.shape[1] <= _TREE_DIMS:  # a KD-tree degrades to brute force in more dimensions
        from scipy.spatial import cKDTree

        _, idx = cKDTree(E).query(E, k=k + 1, workers=-1)
    else:
        idx = exact_neighbors(E, k + 1, seed=seed).kneighbors(E)
    idx = np.asarray(idx, dtype=np.int64)
    # drop each row's own index (normally the first column; duplicated points may put it elsewhere)
    rows = np.arange(E.shape[0])[:, None]
    own = idx == rows
    missing = ~own.any(axis=1)
    own[missing, -1] = True  # no self among the k + 1: drop the farthest
    return idx[~own].reshape(E.shape[0], k)


def snn_graph(E: np.ndarray, *, n_neighbors: int = 15, neighbors: np.ndarray | None = None) -> sp.csr_matrix:
    """Shared-nearest-neighbour graph: kNN edges weighted by the Jaccard index of the two neighbour sets.

    Parameters
    ----------
    E
        Embedding (n_cells, d).
    n_neighbors
        Neighbours per cell.
    neighbors
        The (n_cells, k) nearest other cells of every cell when already searched (``_knn(E, n_neighbors)``);
        searched here when None.

    Returns
    -------
    Symmetric CSR (n_cells, n_cells), no self-loops, weights in (0, 1].
    """
    n = E.shape[0]
    if n < 3:
        return sp.csr_matrix((n, n), dtype=np.float64)
    idx = _knn(np.asarray(E, dtype=np.float32), n_neighbors) if neighbors is None else np.asarray(neighbors)
    k = idx.shape[1]
    rows = np.repeat(np.arange(n), k)
    A = sp.csr_matrix((np.ones(n * k, dtype=np.float32), (rows, idx.ravel())), shape=(n, n))
    A = (A + sp.identity(n, dtype=np.float32, format="csr")).tocsr()  # a cell is in its own neighbourhood
    A.data[:] = 1.0
    # intersections of the neighbour sets on the kNN edges only (never the dense n x n product)
    inter = np.asarray(A[rows].multiply(A[idx.ravel()]).sum(axis=1), dtype=np.float64).ravel()
    union = 2.0 * (k + 1) - inter
    w = inter / union
    G = sp.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    G = G.maximum(G.T).tocsr()
    G.setdiag(0)
    G.eliminate_zeros()
    return G


def _igraph(G: sp.csr_matrix) -> Any:
    import igraph as ig

    upper = sp.triu(G, k=1).tocoo()
    g = ig.Graph(n=G.shape[0], edges=np.column_stack([upper.row, upper.col]).tolist(), directed=False)
    g.es["weight"] = upper.data.astype(np.float64).tolist()
    return g


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... by decreasing size (ties: first appearance)."""
    uniq, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new = np.empty(uniq.size, dtype=np.int64)
    new[order] = np.arange(uniq.size)
    return new[np.searchsorted(uniq, labels)]


def leiden(G: sp.csr_matrix | Any, *, resolution: float = 1.0, seed: int = 0, n_iterations: int = 2) -> np.ndarray:
    """Leiden partition of a weighted undirected graph (``leidenalg``, RB-configuration quality).

    Parameters
    ----------
    G
        Symmetric CSR adjacency, or an ``igraph.Graph`` with a ``'weight'`` edge attribute.
    resolution
        Resolution parameter (higher: more, smaller clusters).
    seed
        Seed of leidenalg's random choices.
    n_iterations
        Iterations of the Leiden algorithm (2, leidenalg's default; negative: until the partition no longer
        changes, 5x slower on 11,000 cells for the same number of clusters).

    Returns
    -------
    int64 array of cluster labels, numbered by decreasing size.
    """
    import leidenalg as la

    g = G if not sp.issparse(G) else _igraph(G)
    if g.vcount() == 0:
        return np.zeros(0, dtype=np.int64)
    part = la.find_partition(
        g,
        la.RBConfigurationVertexPartition,
        weights="weight",
        resolution_parameter=float(resolution),
        seed=int(seed) % (2**31 - 1),
        n_iterations=n_iterations,
    )
    return _relabel_by_size(np.asarray(part.membership, dtype=np.int64))


def merge_small_clusters(G: sp.csr_matrix, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge every cluster of fewer than ``min_size`` cells into the larger cluster it is most connected to.

    Smallest clusters first; a cluster with no edge to a large one stays. Returns labels numbered by size.
    """
    labels = _relabel_by_size(np.asarray(labels, dtype=np.int64))
    k = int(labels.max()) + 1 if labels.size else 0
    sizes = np.bincount(labels, minlength=k)
    if k < 2 or sizes.min() >= min_size:
        return labels
    C = one_hot(labels, k)
    M = (C.T @ G @ C).toarray()  # k x k connection weights between clusters
    np.fill_diagonal(M, 0.0)
    target = np.arange(k)
    for c in np.argsort(sizes, kind="stable"):
        if sizes[c] >= min_size:
            continue
        big = np.flatnonzero(sizes >= min_size)
        if big.size == 0 or M[c, big].max() <= 0:
            continue
        t = int(big[np.argmax(M[c, big])])
        target[target == c] = t
        sizes[t] += sizes[c]
        sizes[c] = 0
        M[t] += M[c]
        M[:, t] += M[:, c]
        M[t, t] = 0.0
    return _relabel_by_size(target[labels])


def _modality_blocks(mdata: MuData) -> list[Any]:
    return [X for _, _, X in _embedding_inputs(mdata)]


def _embedding_inputs(mdata: MuData) -> list[tuple[str, np.ndarray, Any]]:
    """(modality, indices of its features in the embedding, their preprocessed values) of every embedded modality."""
    blocks = []
    for name, adata in mdata.mod.items():
        X = adata.layers.get(Keys.PREPROCESSED, None)
        if X is None:
            continue
        use = adata.var[Keys.HVG].to_numpy(dtype=bool) if Keys.HVG in adata.var else np.ones(adata.n_vars, bool)
        if not use.any():
            continue
        sub = X[:, np.flatnonzero(use)] if not use.all() else X
        blocks.append((name, np.flatnonzero(use), sub))
        logger.debug("cluster embedding: %s, %d features", name, int(use.sum()))
    if not blocks:
        msg = (
            "no modality has layers['preprocessed']; run smo.pp.preprocess(mdata) before clustering "
            "(annotate(method='cluster'))."
        )
        raise InputError(msg)
    return blocks


def _assign_rest(E: np.ndarray, sample: np.ndarray, lab: np.ndarray, n_neighbors: int, *, seed: int = 0) -> np.ndarray:
    """Labels of all cells: the sample keeps its own, every other cell the majority of its nearest sampled cells.

    The neighbours are searched exactly (:func:`~spatialmultiomics.annotate._neighbors.exact_neighbors`: group by
    group where the bounds spare most of the reference, else brute force) among at most :data:`_ASSIGN_REFERENCE`
    sampled cells, in the embedding's top :data:`_TREE_DIMS` principal components; ties of the vote go to the
    smaller cluster number (the larger cluster). The same search assigns the cells of
    :func:`~spatialmultiomics.annotate.annotate_chunked`.
    """
    from spatialmultiomics.annotate._neighbors import exact_neighbors, vote

    n = E.shape[0]
    out = np.empty(n, dtype=np.int64)
    out[sample] = lab
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    if rest.size == 0:
        return out
    pca = assign_pca(E[sample])
    if pca is not None:
        E = np.asarray(pca.transform(E), dtype=np.float32)
    ref = assign_reference(sample.size)
    nn = exact_neighbors(E[sample[ref]], min(n_neighbors, ref.size), seed=seed)
    ref_lab = lab[ref]
    for a in range(0, rest.size, 50_000):
        chunk = rest[a : a + 50_000]
        out[chunk] = vote(ref_lab, nn.kneighbors(E[chunk]))
    return out


def assign_pca(Es: np.ndarray) -> Any:
    """PCA of the sample's embedding ``Es`` to its top :data:`_TREE_DIMS` components (None when it has fewer)."""
    if Es.shape[1] <= _TREE_DIMS:
        return None
    from sklearn.decomposition import PCA

    return PCA(n_components=_TREE_DIMS, svd_solver="full").fit(Es)


def assign_reference(n_sample: int) -> np.ndarray:
    """Positions in the sample of the reference cells: all, or :data:`_ASSIGN_REFERENCE` evenly spaced."""
    ref = np.arange(n_sample)
    if ref.size > _ASSIGN_REFERENCE:  # evenly spaced over the (seeded, sorted) sample
        ref = np.linspace(0, n_sample - 1, _ASSIGN_REFERENCE).round().astype(np.int64)
    return ref
