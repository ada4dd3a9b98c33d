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

Coordinates may also stay on disk (a zarr array, or a Dask array over one): then no coordinate enters the task
graph or the client. One task per row chunk reads its chunk, gives every cell its tile and copies the cells that
lie in a neighbouring tile's halo to that tile too, and splits the result by bucket (a run of consecutive tiles);
one task per bucket gathers its pieces from every row chunk (worker to worker under ``dask.distributed``) and
counts its tiles exactly as above. A tile's cells are scattered over the store, so this spatial shuffle is what
lets each task hold only its own cells; the client keeps the grid, the type codes (the smallest integer type)
and the sums.

Dask is an optional extra (``pip install 'spatialmultiomics[dask]'``), imported only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
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

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the exact mean and variance (K, K) of the join counts under relabelling within FOVs.

        The graph is undirected, so the degree sums per FOV are all the moments need (``S0 = Ssq = Srec`` and
        ``Sout2 = Sin2 = Sio``).
        """
        from spatialmultiomics.spatial._nhood import _join_count_moments

        d, d2 = self.degree_sum, self.degree_sq_sum
        stats = {"S0": d, "Ssq": d, "Srec": d, "Sout2": d2, "Sin2": d2, "Sio": d2}
        return _join_count_moments(self.n_cells.astype(np.float64), stats)

    def colocalization(self, categories: list[str], *, expected: str, keep: np.ndarray | None = None) -> Any:
        """The co-localization statistics of the pairs among the types ``keep`` (indices into ``categories``, the
        names of the K codes; default all), with the exact moments of :meth:`moments`. The types left out stay in
        the graph and in the null (the cells in the graph count them)."""
        from spatialmultiomics.spatial._nhood import _result

        mean, var = self.moments()
        n_cells = self.n_cells.sum(axis=0).astype(np.float64)
        keep = np.arange(len(categories)) if keep is None else np.asarray(keep, dtype=np.int64)
        pairs = np.ix_(keep, keep)
        return _result(
            [categories[i] for i in keep],
            self.count[pairs],
            mean[pairs],
            var[pairs],
            n_cells[keep],
            directed=False,
            expected=expected,
            n_total=float(n_cells.sum()),
        )


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
    """Return the cell order sorted by tile, tile bounds in that order, and a map tile key -> (start, stop).

    Tiles are squares of the first two coordinates (with 3-D coordinates, columns through every z)."""
    origin = coords[:, :2].min(axis=0)
    cell = np.floor((coords[:, :2] - origin) / tile_size).astype(np.int64)
    nx = int(cell[:, 0].max()) + 3
    ny = int(cell[:, 1].max()) + 3
    key = (fov * nx + (cell[:, 0] + 1)) * ny + (cell[:, 1] + 1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    stops = np.r_[starts[1:], sorted_key.size]
    index = {int(sorted_key[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}
    return order, np.stack([starts, stops], axis=1), {"index": index, "nx": nx, "ny": ny, "origin": origin}


#: rows of coordinates read by one task at least (a zarr array's chunks are grouped up to this)
_ROWS_PER_TASK = 1 << 18


def _on_disk(x: Any) -> Any:
    """``x`` as a Dask array when it is one or a zarr array (read by the tasks, a few row chunks each), else None."""
    import dask.array as da

    if isinstance(x, da.Array):
        return x
    if type(x).__module__.split(".")[0] == "zarr" and hasattr(x, "chunks"):
        rows = int(x.chunks[0]) * max(1, -(-_ROWS_PER_TASK // int(x.chunks[0])))
        return da.from_zarr(x, chunks=(rows, *x.shape[1:]))
    return None


def _lazy_coords(coords: Any) -> Any:
    """``coords`` as a Dask array with one column chunk when it lives on disk (zarr or Dask array), else None."""
    arr = _on_disk(coords)
    if arr is None:
        return None
    if arr.ndim != 2 or arr.shape[1] != 2:
        msg = f"coords on disk must be an array of shape (n_cells, 2) in micrometres, got shape {arr.shape}."
        raise InputError(msg)
    if any(np.isnan(c) for c in arr.chunks[0]):
        msg = "coords is a Dask array of unknown chunk sizes; call coords.compute_chunk_sizes() first."
        raise InputError(msg)
    return arr.rechunk({1: -1}) if arr.numblocks[1] > 1 else arr


def _route_block(
    xy: Any,
    codes: np.ndarray,
    fcode: np.ndarray | None,
    start: int,
    grid: dict,
    tile_size: float,
    radius: float,
    edges: np.ndarray,
) -> tuple:
    """Give the cells of one row chunk their tile (owned) and every neighbouring tile whose halo holds them.

    Returns one piece per bucket: (tile key, x/y, code, row, is_halo) of its records, in row order.
    """
    xy = np.asarray(xy, dtype=np.float64)
    origin, nx, ny = grid["origin"], grid["nx"], grid["ny"]
    cell = np.floor((xy - origin) / tile_size).astype(np.int64)  # as _tiles computes it
    f = np.zeros(xy.shape[0], np.int64) if fcode is None else fcode.astype(np.int64)
    rows = np.arange(xy.shape[0], dtype=np.int64)
    keys, idx, halo = [(f * nx + (cell[:, 0] + 1)) * ny + (cell[:, 1] + 1)], [rows], [np.zeros(rows.size, bool)]
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            c = cell + np.array([dx, dy])  # the neighbouring tile, and its square grown by the radius
            lo = origin + c * tile_size - radius
            hi = origin + (c + 1) * tile_size + radius
            inside = np.flatnonzero(np.all((xy >= lo) & (xy <= hi), axis=1))
            c = c[inside]
            keys.append((f[inside] * nx + (c[:, 0] + 1)) * ny + (c[:, 1] + 1))
            idx.append(inside)
            halo.append(np.ones(inside.size, bool))
    key, row, is_halo = np.concatenate(keys), np.concatenate(idx), np.concatenate(halo)
    order = np.lexsort((row, key))
    key, row, is_halo = key[order], row[order], is_halo[order]
    cuts = np.searchsorted(key, edges)
    return tuple((key[a:b], xy[row[a:b]], codes[row[a:b]], row[a:b] + start, is_halo[a:b]) for a, b in pairwise(cuts))


def _count_bucket(
    pieces: list[tuple],
    tiles_per_fov: int,
    n_fov: int,
    radius: float,
    n_types: int,
    with_neighbours: bool,
) -> tuple:
    """Count the tiles of one bucket from its records gathered over every row chunk (as :func:`_tile_counts`)."""
    key, xy, codes, row, is_halo = (np.concatenate([p[i] for p in pieces]) for i in range(5))
    order = np.lexsort((is_halo, key))  # by tile, owned cells first (in row order), then the halo
    key, xy, codes, row, is_halo = key[order], xy[order], codes[order], row[order], is_halo[order]
    count = np.zeros((n_types, n_types))
    deg, deg2 = np.zeros(n_fov), np.zeros(n_fov)
    n_cells = np.zeros((n_fov, n_types), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    stops = np.r_[starts[1:], key.size]
    n_tiles, owned_rows, neighbours = 0, [], []
    for a, b in zip(starts, stops, strict=True):
        m = a + int(np.count_nonzero(~is_halo[a:b]))
        if m == a:
            continue  # a halo without owned cells: no tile there
        c, s1, s2, nb = _tile_counts(xy[a:m], codes[a:m], xy[m:b], codes[m:b], radius, n_types, with_neighbours)
        f = int(key[a]) // tiles_per_fov
        count += c
        deg[f] += s1
        deg2[f] += s2
        n_cells[f] += np.bincount(codes[a:m].astype(np.int64), minlength=n_types)
        n_tiles += 1
        if with_neighbours:
            owned_rows.append(row[a:m])
            neighbours.append(nb)
    return count, deg, deg2, n_cells, n_tiles, owned_rows, neighbours


def _join_counts_lazy(
    coords: Any,
    codes: Any,
    fcode: np.ndarray | None,
    n_fov: int,
    *,
    n_types: int,
    radius: float,
    tile_size: float,
    neighbour_counts: bool,
) -> TiledJoinCounts:
    """:func:`join_counts_tiled` on coordinates read by the tasks (a Dask array over a zarr store); the codes in
    memory or read by the tasks too (a Dask array)."""
    import dask
    import dask.array as da

    n = int(coords.shape[0])
    xy64 = coords.astype(np.float64)
    checks = [xy64.min(axis=0), xy64.max(axis=0), (~da.isfinite(xy64)).any(axis=1).sum()]
    lazy_codes = isinstance(codes, da.Array)
    if lazy_codes:
        codes = codes.rechunk((coords.chunks[0],))
        checks += [codes.min(), codes.max()]
    # one read of the coordinates (and codes). Every graph here is submitted unoptimized: the store's read tasks
    # then have the same spec in each computation (an optimized graph renames their inputs, and distributed
    # warns of a different run_spec when a key of the previous computation is still held).
    lo, hi, n_bad, *code_range = da.compute(*checks, optimize_graph=False)
    if n_bad:
        msg = (
            f"coords has {int(n_bad)} cells with NaN or infinite coordinates; drop or fix them before building a graph."
        )
        raise InputError(msg)
    if code_range and (code_range[0] < 0 or code_range[1] >= n_types):
        msg = f"codes must be {n} integers in [0, {n_types}), got values from {code_range[0]} to {code_range[1]}."
        raise InputError(msg)
    last = np.floor((hi - lo) / tile_size).astype(np.int64)  # floor is monotone: the largest tile index of _tiles
    grid = {"origin": lo, "nx": int(last[0]) + 3, "ny": int(last[1]) + 3}
    n_keys = n_fov * grid["nx"] * grid["ny"]
    n_buckets = int(min(n_keys, 2 * coords.numblocks[0]))
    edges = np.linspace(0, n_keys, n_buckets + 1).round().astype(np.int64)
    codes = codes.astype(np.min_scalar_type(max(n_types - 1, 0)))  # 1 byte a cell in the graph, up to 256 types
    code_blocks = codes.to_delayed(optimize_graph=False).ravel() if lazy_codes else None
    fsmall = None if fcode is None else fcode.astype(np.min_scalar_type(max(n_fov - 1, 0)))
    route = dask.delayed(_route_block, nout=n_buckets, pure=True)
    routed, start = [], 0
    blocks = coords.to_delayed(optimize_graph=False).ravel()
    for i, (block, size) in enumerate(zip(blocks, coords.chunks[0], strict=True)):
        stop = start + int(size)
        f = None if fsmall is None else fsmall[start:stop]
        c = codes[start:stop] if code_blocks is None else code_blocks[i]
        routed.append(route(block, c, f, start, grid, tile_size, radius, edges))
        start = stop
    count_bucket = dask.delayed(_count_bucket, pure=True)
    tiles_per_fov = grid["nx"] * grid["ny"]
    tasks = [
        count_bucket([r[b] for r in routed], tiles_per_fov, n_fov, radius, n_types, neighbour_counts)
        for b in range(n_buckets)
    ]
    count = np.zeros((n_types, n_types))
    n_cells = np.zeros((n_fov, n_types), dtype=np.int64)
    deg, deg2 = np.zeros(n_fov), np.zeros(n_fov)
    neigh = np.zeros((n, n_types), dtype=np.int64) if neighbour_counts else None
    n_tiles = 0
    for c, s1, s2, nc, t, rows, nbs in dask.compute(*tasks, optimize_graph=False):
        count += c
        deg += s1
        deg2 += s2
        n_cells += nc
        n_tiles += t
        if neigh is not None:
            for r, nb in zip(rows, nbs, strict=True):
                neigh[r] = nb
    return TiledJoinCounts(count, n_cells, deg, deg2, neigh, n_tiles)


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
        Array (n_cells, 2) of coordinates in µm: in memory (NumPy), or on disk, read inside the tasks (a zarr
        array such as ``zarr.open_group(store)["obsm/spatial"]``, or a Dask array over one): see the module
        docstring. The counts are the same either way. In memory, (n_cells, 3) works too: the tiles are squares in
        x/y through every z, the distances are 3-D, as :func:`radius_graph` computes them.
    codes
        Integer type code per cell, in ``[0, n_types)`` (n_cells,): in memory (sent with the tasks, in the smallest
        integer type) or, with coordinates on disk, a zarr / Dask array read by the tasks too.
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

    lazy = _lazy_coords(coords)
    if lazy is None:
        coords = _check_coords(np.asarray(coords, np.float64))
    n = int((coords if lazy is None else lazy).shape[0])
    lazy_codes = None if lazy is None else _on_disk(codes)
    if lazy_codes is not None:  # read by the tasks; the range is checked in the pass over the coordinates
        if lazy_codes.shape != (n,) or lazy_codes.dtype.kind not in "iu":
            msg = (
                f"codes must be {n} integers in [0, {n_types}), got shape {lazy_codes.shape} dtype {lazy_codes.dtype}."
            )
            raise InputError(msg)
        codes = lazy_codes
    else:
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
    if lazy is not None and n:
        return _join_counts_lazy(
            lazy,
            codes,
            fov_codes,
            n_fov,
            n_types=n_types,
            radius=radius,
            tile_size=tile_size,
            neighbour_counts=neighbour_counts,
        )
    if lazy is not None:
        coords = np.zeros((0, 2))
    order, bounds, grid = _tiles(coords, fcode, tile_size) if n else (np.zeros(0, np.int64), np.zeros((0, 2)), {})
    tasks, owners = [], []
    # tiles are squares in x/y (a column through every z of 3-D coordinates), their halos too; distances use all
    # the coordinates
    origin = grid.get("origin")
    for a, b in bounds:
        own = order[a:b]
        f = int(fcode[own[0]])
        c = np.floor((coords[own[0], :2] - origin) / tile_size).astype(np.int64)
        lo = origin + c * tile_size - radius
        hi = origin + (c + 1) * tile_size + radius
        halo_parts = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                if dx == 0 and dy == 0:
                    continue
                key = (f * grid["nx"] + (c[0] + dx + 1)) * grid["ny"] + (c[1] + dy + 1)
                if int(key) in grid["index"]:
                    s, e = grid["index"][int(key)]
                    cand = order[s:e]
                    xy = coords[cand, :2]
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


def _label_codes(labels: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Codes of integer labels among their sorted distinct values."""
    return np.searchsorted(categories, labels).astype(np.int64)


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
        Array (n_cells, 2), µm: in memory, or on disk (a zarr array or a Dask array, read chunk by chunk inside
        the tasks; see :func:`join_counts_tiled`).
    labels
        Cell type per cell (categorical, strings or integers), (n_cells,). With coordinates on disk, integer
        labels may stay on disk too (a zarr or Dask array of type codes, such as ``annotate_chunked``'s codes
        written to zarr): their distinct values are the categories, and the tasks read them.
    radius, tile_size, fov
        As in :func:`join_counts_tiled`.
    expected
        ``'exact'`` or ``'paper'`` (see :func:`spatialmultiomics.spatial.colocalization`).

    Returns
    -------
    :class:`spatialmultiomics.spatial.ColocalizationResult` (undirected graph).
    """
    import pandas as pd

    expected = check_option(expected, ("exact", "paper"), name="expected")
    lazy = _on_disk(labels) if _lazy_coords(coords) is not None else None
    if lazy is not None and lazy.ndim == 1 and lazy.dtype.kind in "iu":
        # integer labels on disk (type codes): the categories in one pass, the codes mapped inside the tasks
        import dask.array as da

        uniques = np.asarray(da.unique(lazy).compute(optimize_graph=False))
        categories = [str(c) for c in uniques]  # as pd.Categorical names integer labels in memory
        codes = lazy.map_blocks(_label_codes, uniques, dtype=np.int64)
    else:
        values = labels.compute() if hasattr(labels, "compute") else labels
        cat = pd.Categorical(np.asarray(values))
        if (cat.codes < 0).any():
            msg = "labels has missing values; give every cell a type."
            raise InputError(msg)
        categories = [str(c) for c in cat.categories]
        codes = cat.codes.astype(np.int64)
    tiled = join_counts_tiled(coords, codes, n_types=len(categories), radius=radius, tile_size=tile_size, fov=fov)
    result = tiled.colocalization(categories, expected=expected)
    params = {"radius": float(radius), "tile_size": tile_size, "expected": expected, "n_tiles": tiled.n_tiles}
    return type(result)(**{**result.__dict__, "params": params})
