"""Graph statistics on spatial tiles with a halo, scheduled by Dask (``dask.distributed`` or any scheduler).

The section (each FOV on its own) is cut into square tiles of ``tile_size`` µm. A tile's task receives the
cells it owns plus a halo: the cells of the same FOV within ``radius`` of the tile's square (taken from the
eight neighbouring tiles, so ``tile_size >= radius``). It builds the radius graph of its cells locally (KD-tree)
and counts, for the cells it owns only, every edge leaving them: the join counts ``C[a, b]`` (edges from an
a-cell to a b-cell), the degrees and, on request, the neighbour types of every owned cell. Every directed edge
``i -> j`` is counted once, by the tile that owns ``i``, and the halo makes every owned cell's neighbourhood
complete, so the tiles' counts add up exactly to the counts of the whole graph (as
:func:`spatialmultiomics.spatial.radius_graph` builds it: pairs at distance <= radius, no self-loops, never
across FOVs); the exact null moments (Cliff & Ord, non-free sampling, per FOV) need only the degree sums, which
add up too. No n x n object and no whole-section graph is ever built.

Dask is an optional extra (``pip install 'spatialmultiomics[dask]'``), imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._optional import import_optional
from spatialmultiomics._validate import check_option, check_positive

__all__ = ["TiledJoinCounts", "colocalization_tiled", "join_counts_tiled"]


@dataclass(frozen=True)
class TiledJoinCounts:
    """Join counts of a radius graph, added up over spatial tiles.

    Attributes
    ----------
    count
        Array (K, K), float64: edges from an a-cell to a b-cell (an a-a edge counts twice, as in squidpy).
    n_cells
        Array (n_fov, K), int64: cells of each type in each FOV.
    degree_sum, degree_sq_sum
        Arrays (n_fov,), float64: sum of degrees and of squared degrees per FOV.
    neighbour_counts
        Array (n_cells, K), int64: neighbours of each type per cell (in input order), or None.
    n_tiles
        Number of tiles (tasks).
    """

    count: np.ndarray
    n_cells: np.ndarray
    degree_sum: np.ndarray
    degree_sq_sum: np.ndarray
    neighbour_counts: np.ndarray | None
    n_tiles: int


def _tile_counts(
    own_xy: np.ndarray,
    own_codes: np.ndarray,
    halo_xy: np.ndarray,
    halo_codes: np.ndarray,
    radius: float,
    n_types: int,
    with_neighbours: bool,
) -> tuple[np.ndarray, float, float, np.ndarray | None]:
    """Count the edges leaving the owned cells of one tile (owned cells first, then the halo)."""
    from scipy.spatial import cKDTree

    n_own = own_xy.shape[0]
    all_xy = np.concatenate([own_xy, halo_xy])
    all_codes = np.concatenate([own_codes, halo_codes]).astype(np.int64)
    pairs = cKDTree(own_xy).sparse_distance_matrix(cKDTree(all_xy), radius, output_type="ndarray")
    i, j = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    keep = i != j  # owned cells come first: j == i is the cell itself
    i, j = i[keep], j[keep]
    key = own_codes.astype(np.int64)[i] * n_types + all_codes[j]
    count = np.bincount(key, minlength=n_types * n_types).reshape(n_types, n_types).astype(np.float64)
    degree = np.bincount(i, minlength=n_own).astype(np.float64)
    neighbours = None
    if with_neighbours:
        neighbours = np.bincount(i * n_types + all_codes[j], minlength=n_own * n_types).reshape(n_own, n_types)
    return count, float(degree.sum()), float(degree @ degree), neighbours


def _tiles(coords: np.ndarray, fov: np.ndarray, tile_size: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return the cell order sorted by tile, tile bounds in that order, and a map tile key -> (start, stop)."""
    origin = coords.min(axis=0)
    cell = np.floor((coords - origin) / tile_size).astype(np.int64)
    nx = int(cell[:, 0].max()) + 3
    ny = int(cell[:, 1].max()) + 3
    key = (fov * nx + (cell[:, 0] + 1)) * ny + (cell[:, 1] + 1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    stops = np.r_[starts[1:], sorted_key.size]
    index = {int(sorted_key[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
    return order, np.stack([starts, stops], axis=1), {"index": index, "nx": nx, "ny": ny, "origin": origin}


def join_counts_tiled(
    coords: Any,
    codes: Any,
    *,
    n_types: int,
    radius: float,
    tile_size: float | None = None,
    fov: Any = None,
    neighbour_counts: bool = False,
) -> TiledJoinCounts:
    """Join counts of the radius graph, computed tile by tile as Dask tasks and added up.

    Parameters
    ----------
    coords
        Array (n_cells, 2) of coordinates in µm (NumPy or Dask; a Dask array is computed, 16 bytes per cell).
    codes
        Integer type code per cell, in ``[0, n_types)`` (n_cells,).
    n_types
        Number of types K.
    radius
        Neighbourhood radius in µm (pairs at distance <= radius are joined).
    tile_size
        Side of the square tiles in µm, at least ``radius``; default ``max(20 * radius, 500)``.
    fov
        Optional FOV label per cell; cells of different FOVs are never joined.
    neighbour_counts
        Also return the number of neighbours of each type per cell (niche composition), (n_cells, K).

    Returns
    -------
    :class:`TiledJoinCounts`.
    """
    dask = import_optional("dask", extra="dask")
    from spatialmultiomics.spatial._graph import _check_coords, _fov_codes

    coords = _check_coords(np.asarray(coords.compute() if hasattr(coords, "compute") else coords, np.float64))
    n = coords.shape[0]
    codes = np.asarray(codes.compute() if hasattr(codes, "compute") else codes)
    if codes.shape != (n,) or codes.dtype.kind not in "iu" or (n and (codes.min() < 0 or codes.max() >= n_types)):
        msg = f"codes must be {n} integers in [0, {n_types}), got shape {codes.shape} dtype {codes.dtype}."
        raise InputError(msg)
    radius = check_positive(radius, name="radius")
    tile_size = max(20.0 * radius, 500.0) if tile_size is None else check_positive(tile_size, name="tile_size")
    if tile_size < radius:
        msg = f"tile_size={tile_size} must be at least radius={radius} (the halo comes from neighbouring tiles)."
        raise InputError(msg)
    fov_codes = _fov_codes(fov, n)
    fcode = np.zeros(n, dtype=np.int64) if fov_codes is None else fov_codes
    n_fov = int(fcode.max()) + 1 if n else 1
    order, bounds, grid = _tiles(coords, fcode, tile_size) if n else (np.zeros(0, np.int64), np.zeros((0, 2)), {})
    tasks, owners = [], []
    for a, b in bounds:
        own = order[a:b]
        f = int(fcode[own[0]])
        c = np.floor((coords[own[0]] - grid["origin"]) / tile_size).astype(np.int64)
        lo = grid["origin"] + c * tile_size - radius
        hi = grid["origin"] + (c + 1) * tile_size + radius
        halo_parts = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                if dx == 0 and dy == 0:
                    continue
                key = (f * grid["nx"] + (c[0] + dx + 1)) * grid["ny"] + (c[1] + dy + 1)
                if int(key) in grid["index"]:
                    s, e = grid["index"][int(key)]
                    cand = order[s:e]
                    xy = coords[cand]
                    inside = np.all((xy >= lo) & (xy <= hi), axis=1)
                    halo_parts.append(cand[inside])
        halo = np.concatenate(halo_parts) if halo_parts else np.zeros(0, np.int64)
        tasks.append(
            dask.delayed(_tile_counts)(
                coords[own], codes[own], coords[halo], codes[halo], radius, n_types, neighbour_counts
            )
        )
        owners.append((own, f))
    results = dask.compute(*tasks)
    count = np.zeros((n_types, n_types))
    n_cells = np.zeros((n_fov, n_types), dtype=np.int64)
    deg = np.zeros(n_fov)
    deg2 = np.zeros(n_fov)
    neigh = np.zeros((n, n_types), dtype=np.int64) if neighbour_counts else None
    for (own, f), (c, s1, s2, nb) in zip(owners, results, strict=True):
        count += c
        deg[f] += s1
        deg2[f] += s2
        n_cells[f] += np.bincount(codes[own], minlength=n_types)
        if neigh is not None:
            neigh[own] = nb
    return TiledJoinCounts(count, n_cells, deg, deg2, neigh, len(tasks))


def colocalization_tiled(
    coords: Any,
    labels: Any,
    *,
    radius: float,
    tile_size: float | None = None,
    fov: Any = None,
    expected: str = "exact",
) -> Any:
    """Co-localization of cell types on the radius graph, from join counts added up over Dask tiles.

    The same statistics as :func:`spatialmultiomics.spatial.colocalization` on the graph
    ``spatial_neighbors(method='radius', radius=radius)`` (exact mean and variance under random relabelling
    within FOVs, z, p, Benjamini-Hochberg q, the seed's score), without building the whole graph.

    Parameters
    ----------
    coords
        Array (n_cells, 2), µm.
    labels
        Cell type per cell (categorical, strings or integers), (n_cells,).
    radius, tile_size, fov
        As in :func:`join_counts_tiled`.
    expected
        ``'exact'`` or ``'paper'`` (see :func:`spatialmultiomics.spatial.colocalization`).

    Returns
    -------
    :class:`spatialmultiomics.spatial.ColocalizationResult` (undirected graph).
    """
    import pandas as pd

    from spatialmultiomics.spatial._nhood import _join_count_moments, _result

    expected = check_option(expected, ("exact", "paper"), name="expected")
    values = labels.compute() if hasattr(labels, "compute") else labels
    cat = pd.Categorical(np.asarray(values))
    if (cat.codes < 0).any():
        msg = "labels has missing values; give every cell a type."
        raise InputError(msg)
    categories = [str(c) for c in cat.categories]
    tiled = join_counts_tiled(
        coords, cat.codes.astype(np.int64), n_types=len(categories), radius=radius, tile_size=tile_size, fov=fov
    )
    stats = {
        "S0": tiled.degree_sum,
        "Ssq": tiled.degree_sum,
        "Srec": tiled.degree_sum,
        "Sout2": tiled.degree_sq_sum,
        "Sin2": tiled.degree_sq_sum,
        "Sio": tiled.degree_sq_sum,
    }
    mean, var = _join_count_moments(tiled.n_cells, stats)
    result = _result(categories, tiled.count, mean, var, tiled.n_cells.sum(axis=0), directed=False, expected=expected)
    params = {"radius": float(radius), "tile_size": tile_size, "expected": expected, "n_tiles": tiled.n_tiles}
    return type(result)(**{**result.__dict__, "params": params})
