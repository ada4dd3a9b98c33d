"""Spot <-> cell: aggregating single cells into the footprints of Visium-like spots.

A Visium spot is a disk 55 µm wide; spots sit on a hexagonal lattice 100 µm centre to centre, so footprints never
overlap. A cell belongs to a spot when its centre lies inside the spot's disk (the nearest spot when footprints
overlap). Intensities (proteins) are averaged over the cells of a spot, counts (RNA) are summed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option, check_positive
from spatialmultiomics.align._match import check_coords

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["aggregate_to_spots", "assign_cells_to_spots", "looks_like_spots", "spot_weights"]

#: Visium geometry (µm)
VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_SPOT_SPACING_UM = 100.0


def assign_cells_to_spots(cell_coords: Any, spot_coords: Any, *, spot_diameter: float = 55.0) -> np.ndarray:
    """Index of the spot whose footprint holds each cell (-1 for cells in no spot), shape (n_cells,) int64.

    Parameters
    ----------
    cell_coords, spot_coords
        Centres (x, y) in µm, shapes (n_cells, 2) and (n_spots, 2), in the same frame.
    spot_diameter
        Footprint diameter in µm; a cell belongs to a spot when its centre is within ``spot_diameter / 2`` of the
        spot centre (the nearest such spot).
    """
    from scipy.spatial import cKDTree

    cells = check_coords(cell_coords, name="cell_coords")
    spots = check_coords(spot_coords, name="spot_coords")
    radius = check_positive(spot_diameter, name="spot_diameter") / 2.0
    if spots.shape[0] == 0 or cells.shape[0] == 0:
        return np.full(cells.shape[0], -1, dtype=np.int64)
    # distance_upper_bound is strict: nudge it so that a centre exactly on the rim counts as inside
    _, idx = cKDTree(spots).query(cells, k=1, distance_upper_bound=float(np.nextafter(radius, np.inf)))
    idx = idx.astype(np.int64)
    idx[idx >= spots.shape[0]] = -1
    return idx


def spot_weights(assignment: np.ndarray, n_spots: int, how: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """Aggregation matrix (n_spots x n_cells, CSR) from a cell -> spot assignment, and cells per spot.

    Row ``s`` holds 1 (``how='sum'``) or ``1 / n_cells[s]`` (``'mean'``) for each cell of spot ``s``.
    """
    assignment = np.asarray(assignment, dtype=np.int64)
    inside = np.flatnonzero(assignment >= 0)
    n_cells = np.bincount(assignment[inside], minlength=n_spots).astype(np.int64)
    weights = np.ones(inside.size)
    if how == "mean":
        weights = 1.0 / n_cells[assignment[inside]]
    agg = sp.csr_matrix((weights, (assignment[inside], inside)), shape=(n_spots, assignment.size))
    return agg, n_cells


def _aggregate(X: Any, assignment: np.ndarray, n_spots: int, how: str) -> tuple[Any, np.ndarray]:
    """Sum or mean of the rows of ``X`` per spot; returns (n_spots x n_features matrix, cells per spot)."""
    agg, n_cells = spot_weights(assignment, n_spots, how)
    out = agg @ X
    dtype = np.result_type(X.dtype, np.float32)
    if sp.issparse(out):
        return sp.csr_matrix(out, dtype=dtype), n_cells
    return np.asarray(out, dtype=dtype), n_cells


def aggregate_to_spots(
    cells: AnnData,
    spot_coords: Any,
    *,
    spot_diameter: float = 55.0,
    how: str = "mean",
    spot_names: Any = None,
    layer: str | None = None,
) -> AnnData:
    """Aggregate single cells into spots: the cells whose centre lies inside each spot's footprint.

    Parameters
    ----------
    cells
        Single-cell AnnData with ``obsm['spatial']`` (µm) in the frame of the spots.
    spot_coords
        Spot centres (x, y) in µm, shape (n_spots, 2), or an AnnData of spots (its ``obsm['spatial']`` and
        ``obs_names`` are used).
    spot_diameter
        Spot footprint diameter in µm (Visium: 55).
    how
        ``'mean'`` for intensities (proteins), ``'sum'`` for counts (RNA).
    spot_names
        Ids of the spots (default: the spot AnnData's ``obs_names``, else ``spot_0`` ...).
    layer
        Aggregate this layer of ``cells`` instead of ``X``.

    Returns
    -------
    AnnData with one row per spot: ``X`` the aggregated values (sparse stays sparse; empty spots are rows of 0),
    ``obs['n_cells']`` the number of cells in the spot, ``obsm['spatial']`` the spot centres, ``var`` and ``uns``
    of ``cells``, and ``uns['spot_aggregation']`` with the parameters and counts.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> cells = ad.AnnData(np.array([[1.0], [3.0], [10.0]]))
    >>> cells.obsm["spatial"] = np.array([[0.0, 0.0], [10.0, 0.0], [100.0, 0.0]])
    >>> spots = aggregate_to_spots(cells, np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]]))
    >>> spots.X.ravel().tolist(), spots.obs["n_cells"].tolist()
    ([2.0, 10.0, 0.0], [2, 1, 0])
    """
    import anndata as ad

    how = check_option(how, ("mean", "sum"), name="how")
    diameter = check_positive(spot_diameter, name="spot_diameter")
    if not isinstance(cells, ad.AnnData):
        msg = f"cells must be an AnnData with obsm['spatial'], got {type(cells).__name__}."
        raise InputError(msg)
    if Keys.SPATIAL not in cells.obsm:
        msg = "cells has no obsm['spatial'] coordinates (µm); add them before aggregating to spots."
        raise InputError(msg)
    if isinstance(spot_coords, ad.AnnData):
        if Keys.SPATIAL not in spot_coords.obsm:
            msg = "the spot AnnData has no obsm['spatial'] coordinates (µm)."
            raise InputError(msg)
        names = spot_coords.obs_names if spot_names is None else spot_names
        spot_coords = spot_coords.obsm[Keys.SPATIAL]
    else:
        names = spot_names
    spots = check_coords(spot_coords, name="spot_coords")
    index = pd.Index([f"spot_{i}" for i in range(spots.shape[0])] if names is None else list(map(str, names)))
    if len(index) != spots.shape[0]:
        msg = f"spot_names has {len(index)} entries for {spots.shape[0]} spots; give one name per spot."
        raise InputError(msg)
    if layer is not None and layer not in cells.layers:
        msg = f"layer={layer!r} is not a layer of cells; available: {list(cells.layers)}."
        raise InputError(msg)
    X = cells.X if layer is None else cells.layers[layer]
    assignment = assign_cells_to_spots(cells.obsm[Keys.SPATIAL], spots, spot_diameter=diameter)
    values, n_cells = _aggregate(X, assignment, spots.shape[0], how)
    n_in = int((assignment >= 0).sum())
    n_empty = int((n_cells == 0).sum())
    out = ad.AnnData(values, obs=pd.DataFrame({"n_cells": n_cells}, index=index), var=cells.var.copy())
    out.obsm[Keys.SPATIAL] = spots.copy()
    out.uns.update({k: v for k, v in cells.uns.items() if k != "spot_aggregation"})
    out.uns["spot_aggregation"] = {
        "how": how,
        "spot_diameter_um": diameter,
        "n_cells_in_spots": n_in,
        "n_cells_outside": int(cells.n_obs - n_in),
        "n_empty_spots": n_empty,
        "layer": layer if layer is not None else "X",
    }
    logger.info(
        "aggregated %d of %d cells into %d spots (%s; %d empty; median %.1f cells per occupied spot)",
        n_in,
        cells.n_obs,
        spots.shape[0],
        how,
        n_empty,
        float(np.median(n_cells[n_cells > 0])) if n_empty < spots.shape[0] else 0.0,
    )
    return out


def looks_like_spots(adata: AnnData) -> tuple[bool, str]:
    """Whether ``adata`` holds Visium-like spots, and why: platform ``visium`` in ``uns['provenance']``, or centres on
    a regular lattice about 100 µm apart (nearest-neighbour distances within 5 % of a median in [80, 120] µm)."""
    from scipy.spatial import cKDTree

    prov = adata.uns.get(Keys.PROVENANCE, {})
    platform = str(prov.get("platform", "")).lower() if isinstance(prov, Mapping) else ""
    if platform == "visium":
        return True, "platform 'visium' in uns['provenance']"
    if Keys.SPATIAL not in adata.obsm or adata.n_obs < 7:
        return False, "too few observations for a lattice"
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]
    d, _ = cKDTree(xy).query(xy, k=2)
    nn = d[:, 1]
    med = float(np.median(nn))
    regular = float(np.mean(np.abs(nn - med) <= 0.05 * med))
    if 80.0 <= med <= 120.0 and regular >= 0.9:
        return True, f"centres on a regular lattice {med:.0f} µm apart ({regular:.0%} of spacings within 5 %)"
    return False, f"nearest-neighbour spacing {med:.1f} µm, {regular:.0%} regular"
