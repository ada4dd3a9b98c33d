"""Spatial neighbour graphs: radius, k-nearest-neighbour and Delaunay, never across fields of view.

Three array-level builders (:func:`radius_graph`, :func:`knn_graph`, :func:`delaunay_graph`) take coordinates in
micrometres and an optional FOV label per cell and return two CSR matrices with the same sparsity structure:
connectivities (float32, 1.0 per edge) and distances (float32, µm). The container-level
:func:`spatial_neighbors` reads ``obsm['spatial']`` (and ``obs['fov']`` when present), calls one builder and
stores the graph in ``obsp`` with its parameters in ``uns`` (squidpy's layout). The graph is built per FOV, so two
cells of different FOVs are never neighbours, whatever their coordinates. No n x n dense object is ever made:
memory is O(n + edges).

This module also holds the small private helpers the other ``spatial`` modules share (reading coordinates, FOV
codes and a stored graph from a container).
"""

from __future__ import annotations

import zlib
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option, check_positive, check_positive_int

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anndata import AnnData
    from mudata import MuData

__all__ = ["delaunay_graph", "knn_graph", "radius_graph", "spatial_neighbors"]

_METHODS = ("radius", "knn", "delaunay")


# ----------------------------------------------------------------------------------------------------------------
# shared private helpers
# ----------------------------------------------------------------------------------------------------------------
def _package_version() -> str:
    """Return the installed package version (``"unknown"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spatialmultiomics")
    except PackageNotFoundError:
        return "unknown"


def _check_coords(coords: Any, *, name: str = "coords") -> np.ndarray:
    """Return ``coords`` as a C-contiguous float64 array of shape (n, d), d >= 2, all finite."""
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        msg = f"{name} must be an array of shape (n_cells, 2) in micrometres, got shape {arr.shape}."
        raise InputError(msg)
    if not np.all(np.isfinite(arr)):
        n_bad = int((~np.isfinite(arr)).any(axis=1).sum())
        msg = f"{name} has {n_bad} cells with NaN or infinite coordinates; drop or fix them before building a graph."
        raise InputError(msg)
    return np.ascontiguousarray(arr)


def _fov_codes(fov: Any, n: int) -> np.ndarray | None:
    """Return FOV labels as int64 codes 0..F-1 (missing values form their own FOV), or None for one FOV."""
    if fov is None:
        return None
    import pandas as pd

    values = np.asarray(fov)
    if values.ndim != 1 or values.shape[0] != n:
        msg = f"fov must be a 1-d array with one label per cell ({n}), got shape {values.shape}."
        raise InputError(msg)
    codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=False)
    if len(uniques) <= 1:
        return None
    return codes.astype(np.int64, copy=False)


def _fov_groups(codes: np.ndarray | None, n: int) -> list[np.ndarray]:
    """Return one index array (sorted ascending) per FOV; a single group ``arange(n)`` when ``codes`` is None."""
    if codes is None:
        return [np.arange(n, dtype=np.int64)]
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes))])
    return [order[bounds[f] : bounds[f + 1]] for f in range(bounds.size - 1) if bounds[f + 1] > bounds[f]]


def _get_coords(data: AnnData | MuData) -> np.ndarray:
    """Return the validated ``obsm['spatial']`` coordinates of a container."""
    if Keys.SPATIAL not in data.obsm:
        msg = (
            f"No coordinates: obsm[{Keys.SPATIAL!r}] is missing (obsm has {list(data.obsm.keys())}); "
            "read the data with smo.io or set obsm['spatial'] to an (n_cells, 2) array in micrometres."
        )
        raise InputError(msg)
    return _check_coords(data.obsm[Keys.SPATIAL], name=f"obsm[{Keys.SPATIAL!r}]")


def _get_fov(data: AnnData | MuData, fov_key: str | None) -> np.ndarray | None:
    """Return FOV codes from ``obs[fov_key]`` when that column exists, else None."""
    if fov_key is None or fov_key not in data.obs.columns:
        return None
    return _fov_codes(data.obs[fov_key].to_numpy(), data.n_obs)


def _get_graph(data: AnnData | MuData, graph_key: str) -> sp.csr_matrix:
    """Return ``obsp[graph_key]`` as a CSR matrix, or raise a message that says to run spatial_neighbors."""
    if graph_key not in data.obsp:
        msg = (
            f"No spatial graph: obsp[{graph_key!r}] is missing (obsp has {list(data.obsp.keys())}); "
            "run smo.spatial.spatial_neighbors(data) first."
        )
        raise InputError(msg)
    graph = data.obsp[graph_key]
    graph = sp.csr_matrix(graph) if not sp.issparse(graph) or graph.format != "csr" else graph
    n = data.n_obs
    if graph.shape != (n, n):
        msg = f"obsp[{graph_key!r}] has shape {graph.shape}, expected ({n}, {n})."
        raise InputError(msg)
    return graph


def _get_labels(data: AnnData | MuData, label_key: str) -> tuple[np.ndarray, list[str]]:
    """Return integer codes (-1 = missing) and category names of ``obs[label_key]``; at least one labelled cell."""
    from spatialmultiomics._validate import check_categorical

    codes, categories = check_categorical(data, label_key)
    if not categories or not (codes >= 0).any():
        msg = f"obs[{label_key!r}] has no labelled cell (all values missing); annotate the cells first."
        raise InputError(msg)
    return codes, categories


def _fingerprint(graph: sp.csr_matrix) -> str:
    """CRC-32 of a CSR matrix's shape, structure and values (one sequential pass): detects changes to a graph."""
    arrays = (graph.indptr, graph.indices, graph.data)
    crc = zlib.crc32(np.asarray(graph.shape, dtype=np.int64).tobytes())
    for arr in arrays:
        crc = zlib.crc32(np.ascontiguousarray(arr), crc)
    return f"{graph.nnz}:{'/'.join(a.dtype.str for a in arrays)}:{crc:08x}"


def _known_symmetric(data: AnnData | MuData, graph_key: str, graph: sp.csr_matrix) -> bool:
    """Whether ``obsp[graph_key]`` is, unchanged, a symmetric graph written by :func:`spatial_neighbors`.

    The builder records ``symmetric`` and a fingerprint of the graph in ``uns['{prefix}_neighbors']``; when the
    stored graph still matches it, its symmetry need not be checked again (that check is a full transpose).
    """
    suffix = "_connectivities"
    if not graph_key.endswith(suffix):
        return False
    info = data.uns.get(f"{graph_key[: -len(suffix)]}_neighbors")
    if not isinstance(info, dict) or info.get("connectivities_key") != graph_key:
        return False
    return bool(info.get("symmetric", False)) and info.get("fingerprint") == _fingerprint(graph)


def _binary_graph(graph: sp.spmatrix) -> sp.csr_matrix:
    """Return the 0/1 pattern of ``graph``: CSR with int8 ones, sorted indices, no self-loops, no explicit zeros.

    A graph that is already clean (the output of the builders) is not copied: the result shares its ``indptr``
    and ``indices`` arrays, so only 1 byte per edge is allocated.
    """
    g = graph if sp.issparse(graph) and graph.format == "csr" else sp.csr_matrix(graph)
    has_zeros = bool(np.any(g.data == 0))
    n_self = int(np.count_nonzero(g.diagonal()))
    if has_zeros or n_self or not g.has_sorted_indices:
        g = g.copy()
        g.eliminate_zeros()
        if n_self:
            logger.info("Ignoring %d self-loops of the spatial graph.", n_self)
            g.setdiag(0)
            g.eliminate_zeros()
        g.sort_indices()
    out = sp.csr_matrix((np.ones(g.nnz, dtype=np.int8), g.indices, g.indptr), shape=g.shape)
    out.has_sorted_indices = True
    return out


_EDGE_CHUNK = 1 << 22  # edges per block in edge loops: bounded temporary memory


def _edge_blocks(indptr: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """Split the edges of a CSR structure into blocks of about ``_EDGE_CHUNK`` edges made of whole rows.

    Yields ``(first_row, end_row, start, stop)``: rows ``first_row .. end_row - 1`` own the edges
    ``start .. stop - 1`` (``indices[start:stop]`` are their targets); per-edge values of the source cells are
    ``np.repeat(values[first_row:end_row], np.diff(indptr[first_row:end_row + 1]))``. Blocks without edges are
    skipped. Memory per block is O(_EDGE_CHUNK).
    """
    n = indptr.size - 1
    nnz = int(indptr[-1])
    cuts = np.unique(np.searchsorted(indptr, np.arange(_EDGE_CHUNK, nnz, _EDGE_CHUNK), side="right") - 1)
    bounds = [0, *[int(c) for c in cuts if 0 < c < n], n]
    for a, b in pairwise(bounds):
        start, stop = int(indptr[a]), int(indptr[b])
        if stop > start:
            yield a, b, start, stop


def _small_int(max_value: int) -> type[np.integer]:
    """int32 when every value fits (faster gathers and bincounts), else int64."""
    return np.int32 if max_value < np.iinfo(np.int32).max else np.int64


# ----------------------------------------------------------------------------------------------------------------
# array-level builders
# ----------------------------------------------------------------------------------------------------------------
def _assemble(
    rows: list[np.ndarray], cols: list[np.ndarray], dists: list[np.ndarray], n: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Build (connectivities, distances) CSR float32 matrices with one sparsity structure from edge lists."""
    idx_dtype = _index_dtype(n)
    r = np.concatenate(rows).astype(idx_dtype, copy=False) if rows else np.zeros(0, idx_dtype)
    c = np.concatenate(cols).astype(idx_dtype, copy=False) if cols else np.zeros(0, idx_dtype)
    d = np.concatenate(dists).astype(np.float32, copy=False) if dists else np.zeros(0, np.float32)
    # COO -> CSR is a linear counting sort; duplicates cannot occur and explicit zero distances are kept
    distances = sp.csr_matrix((d, (r, c)), shape=(n, n))
    del r, c, d
    distances.sort_indices()
    connectivities = sp.csr_matrix(
        (np.ones(distances.nnz, dtype=np.float32), distances.indices.copy(), distances.indptr.copy()), shape=(n, n)
    )
    connectivities.has_sorted_indices = True
    return connectivities, distances


def _index_dtype(n: int) -> type[np.integer]:
    """Smallest index dtype (int32 or int64) for ``n`` cells."""
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _edge_lengths(coords: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Euclidean length (µm) of edges ``i -> j``, computed in float64 blocks, returned as float32."""
    x = np.ascontiguousarray(coords[:, 0])
    y = np.ascontiguousarray(coords[:, 1])
    extra = [np.ascontiguousarray(coords[:, k]) for k in range(2, coords.shape[1])]
    out = np.empty(i.size, dtype=np.float32)
    for start in range(0, i.size, _EDGE_CHUNK):
        ii, jj = i[start : start + _EDGE_CHUNK], j[start : start + _EDGE_CHUNK]
        total = x[ii]
        total -= x[jj]
        total *= total
        for axis in (y, *extra):
            delta = axis[ii]
            delta -= axis[jj]
            delta *= delta
            total += delta
        out[start : start + _EDGE_CHUNK] = np.sqrt(total, out=total)
    return out


def radius_graph(
    coords: np.ndarray, radius: float, fov: np.ndarray | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Connect every pair of cells closer than ``radius`` (inclusive), within each FOV.

    Parameters
    ----------
    coords
        Array of shape (n_cells, 2) with coordinates in micrometres.
    radius
        Neighbourhood radius in micrometres (> 0); pairs with distance <= radius are joined.
    fov
        Optional FOV label per cell, shape (n_cells,); cells of different FOVs are never joined.

    Returns
    -------
    connectivities
        CSR float32 (n_cells, n_cells), 1.0 per edge, symmetric, no self-loops.
    distances
        CSR float32 (n_cells, n_cells), edge lengths in micrometres, same sparsity structure.
    """
    from scipy.spatial import cKDTree

    coords = _check_coords(coords)
    radius = check_positive(radius, name="radius")
    n = coords.shape[0]
    idx_dtype = _index_dtype(n)
    first, second, dists = [], [], []
    for idx in _fov_groups(_fov_codes(fov, n), n):
        if idx.size < 2:
            continue
        pairs = cKDTree(coords[idx]).query_pairs(radius, output_type="ndarray")
        if pairs.size == 0:
            continue
        gidx = idx.astype(idx_dtype, copy=False)
        i, j = gidx[pairs[:, 0]], gidx[pairs[:, 1]]
        del pairs
        first.append(i)
        second.append(j)
        dists.append(_edge_lengths(coords, i, j))
    i = np.concatenate(first) if first else np.zeros(0, idx_dtype)
    j = np.concatenate(second) if second else np.zeros(0, idx_dtype)
    d = np.concatenate(dists) if dists else np.zeros(0, np.float32)
    del first, second, dists
    return _assemble([i, j], [j, i], [d, d], n)


def knn_graph(
    coords: np.ndarray, n_neighbors: int, fov: np.ndarray | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Join each cell to its ``n_neighbors`` nearest other cells of the same FOV (a directed graph).

    Row ``i`` holds the out-edges of cell ``i``. A FOV with ``m <= n_neighbors`` cells joins each of its cells to
    all ``m - 1`` others; a FOV of one cell gives it no edge. Among cells at exactly equal distance the KD-tree's
    (deterministic) order decides.

    Parameters
    ----------
    coords
        Array of shape (n_cells, 2) with coordinates in micrometres.
    n_neighbors
        Number of neighbours per cell (>= 1).
    fov
        Optional FOV label per cell, shape (n_cells,).

    Returns
    -------
    connectivities
        CSR float32 (n_cells, n_cells), 1.0 per edge, not symmetric in general, no self-loops.
    distances
        CSR float32 (n_cells, n_cells), edge lengths in micrometres, same sparsity structure.
    """
    from scipy.spatial import cKDTree

    coords = _check_coords(coords)
    k = check_positive_int(n_neighbors, name="n_neighbors")
    n = coords.shape[0]
    rows, cols, dists = [], [], []
    for idx in _fov_groups(_fov_codes(fov, n), n):
        m = idx.size
        kq = min(k + 1, m)
        if kq < 2:
            continue
        dist, nb = cKDTree(coords[idx]).query(coords[idx], k=kq, workers=-1)
        is_self = nb == np.arange(m)[:, None]
        no_self = ~is_self.any(axis=1)  # duplicated points: self may be displaced; drop the farthest instead
        is_self[no_self, -1] = True
        keep = ~is_self
        rows.append(np.repeat(idx, kq - 1))
        cols.append(idx[nb[keep]])
        dists.append(dist[keep].astype(np.float32))
    return _assemble(rows, cols, dists, n)


def _delaunay_edges(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edge list (both directions) of the Delaunay triangulation of ``pts`` (local indices)."""
    from scipy.spatial import Delaunay, QhullError

    m = pts.shape[0]
    if m == 2:
        return np.array([0, 1]), np.array([1, 0])
    try:
        tri = Delaunay(pts)
    except QhullError:
        # all points collinear (or identical): the triangulation degenerates to a chain along the line
        centred = pts - pts.mean(axis=0)
        direction = np.linalg.svd(centred, full_matrices=False)[2][0]
        order = np.argsort(centred @ direction, kind="stable")
        return np.concatenate([order[:-1], order[1:]]), np.concatenate([order[1:], order[:-1]])
    indptr, indices = tri.vertex_neighbor_vertices
    i = np.repeat(np.arange(m), np.diff(indptr))
    j = indices.astype(np.int64)
    if tri.coplanar.size:  # duplicated points left out of the triangulation: join each to its twin vertex
        p, v = tri.coplanar[:, 0], tri.coplanar[:, 2]
        i, j = np.concatenate([i, p, v]), np.concatenate([j, v, p])
    return i, j


def delaunay_graph(
    coords: np.ndarray, fov: np.ndarray | None = None, max_distance: float | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Join cells that share an edge of the Delaunay triangulation of their FOV.

    Collinear FOVs are joined as a chain along the line; duplicated points (left out by Qhull) are joined to
    their twin.

    Parameters
    ----------
    coords
        Array of shape (n_cells, 2) with coordinates in micrometres.
    fov
        Optional FOV label per cell, shape (n_cells,).
    max_distance
        Drop edges longer than this (µm); None keeps all.

    Returns
    -------
    connectivities
        CSR float32 (n_cells, n_cells), 1.0 per edge, symmetric, no self-loops.
    distances
        CSR float32 (n_cells, n_cells), edge lengths in micrometres, same sparsity structure.
    """
    coords = _check_coords(coords)
    if coords.shape[1] != 2:
        msg = f"coords must have 2 columns for method='delaunay', got {coords.shape[1]}."
        raise InputError(msg)
    max_d = None if max_distance is None else check_positive(max_distance, name="max_distance")
    n = coords.shape[0]
    rows, cols, dists = [], [], []
    for idx in _fov_groups(_fov_codes(fov, n), n):
        if idx.size < 2:
            continue
        i, j = _delaunay_edges(coords[idx])
        i, j = idx[i], idx[j]
        d = _edge_lengths(coords, i, j)
        if max_d is not None:
            keep = d <= max_d
            i, j, d = i[keep], j[keep], d[keep]
        rows.append(i)
        cols.append(j)
        dists.append(d)
    return _assemble(rows, cols, dists, n)


def _prune(conn: sp.csr_matrix, dist: sp.csr_matrix, max_distance: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Drop edges longer than ``max_distance`` from a (connectivities, distances) pair."""
    n = conn.shape[0]
    keep = dist.data <= max_distance
    row = np.repeat(np.arange(n), np.diff(dist.indptr))
    return _assemble([row[keep]], [dist.indices[keep]], [dist.data[keep]], n)


# ----------------------------------------------------------------------------------------------------------------
# container level
# ----------------------------------------------------------------------------------------------------------------
def spatial_neighbors(
    data: AnnData | MuData,
    *,
    method: str = "radius",
    radius: float = 50.0,
    n_neighbors: int = 6,
    max_distance: float | None = None,
    fov_key: str | None = Keys.FOV,
    key_added: str | None = None,
) -> None:
    """Build the spatial neighbour graph of a container and store it in ``obsp``.

    Parameters
    ----------
    data
        AnnData or MuData with coordinates in ``obsm['spatial']`` (n_cells, 2), in micrometres.
    method
        ``"radius"`` (all cells within ``radius``, undirected), ``"knn"`` (each cell to its ``n_neighbors``
        nearest, directed: row i -> its neighbours) or ``"delaunay"`` (Delaunay triangulation, undirected).
    radius
        Radius in micrometres for ``method="radius"`` (> 0; distance <= radius is an edge).
    n_neighbors
        Neighbours per cell for ``method="knn"``.
    max_distance
        For ``"knn"`` and ``"delaunay"``: drop edges longer than this (µm). Ignored by ``"radius"``.
    fov_key
        Column of ``obs`` with the field of view of each cell; used only when the column exists. Cells of
        different FOVs are never joined.
    key_added
        Prefix of the stored slots (squidpy's convention); None means ``"spatial"``.

    Returns
    -------
    None. Writes

    - ``obsp['{key_added}_connectivities']``: CSR float32 (n_cells, n_cells), 1.0 per edge, no self-loops;
    - ``obsp['{key_added}_distances']``: CSR float32, edge lengths in µm, same sparsity structure;
    - ``uns['{key_added}_neighbors']``: ``{'connectivities_key', 'distances_key', 'params', 'directed',
      'symmetric', 'fingerprint'}`` (the fingerprint, a CRC-32 of the graph, lets later steps trust
      ``'symmetric'`` while the stored graph is unchanged).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> adata = ad.AnnData(obsm={"spatial": np.array([[0.0, 0.0], [30.0, 0.0], [200.0, 0.0]])})
    >>> spatial_neighbors(adata, radius=50.0)
    >>> adata.obsp["spatial_connectivities"].nnz
    2
    """
    method = check_option(method, _METHODS, name="method")
    coords = _get_coords(data)
    fov = _get_fov(data, fov_key)
    if max_distance is not None:
        max_distance = check_positive(max_distance, name="max_distance")
    if method == "radius":
        radius = check_positive(radius, name="radius")
        conn, dist = radius_graph(coords, radius, fov=fov)
    elif method == "knn":
        n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
        conn, dist = knn_graph(coords, n_neighbors, fov=fov)
        if max_distance is not None:
            conn, dist = _prune(conn, dist, max_distance)
    else:
        conn, dist = delaunay_graph(coords, fov=fov, max_distance=max_distance)
    prefix = "spatial" if key_added is None else str(key_added)
    conn_key, dist_key = f"{prefix}_connectivities", f"{prefix}_distances"
    data.obsp[conn_key] = conn
    data.obsp[dist_key] = dist
    params: dict[str, Any] = {
        "method": method,
        "radius": float(radius) if method == "radius" else None,
        "n_neighbors": int(n_neighbors) if method == "knn" else None,
        "max_distance": max_distance if method != "radius" else None,
        "fov_key": fov_key if fov is not None else None,
        "version": _package_version(),
    }
    data.uns[f"{prefix}_neighbors"] = {
        "connectivities_key": conn_key,
        "distances_key": dist_key,
        "params": params,
        "directed": method == "knn",
        "symmetric": method != "knn",
        "fingerprint": _fingerprint(conn),
    }
    logger.info(
        "spatial_neighbors(method=%r): %d cells, %d edges (%.2f per cell).",
        method,
        data.n_obs,
        conn.nnz,
        conn.nnz / max(data.n_obs, 1),
    )
