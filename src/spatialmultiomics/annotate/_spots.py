"""Cell-type composition of spots from the single cells under them (deconvolution through the single-cell modality).

When one modality is Visium-like spots and the other a single-cell table (``align`` route ``'spots'``), the joint
factors are learnt on spots, where most spots mix several types: the factor loadings of a spot give its mixture,
but naming the mixture's dominant type from them is unreliable (on the synthetic tissue, 0.77 of spots right,
0.98 where one type holds more than half the spot and far less where none does). The single cells under a spot
say more: each cell is put through the same preprocessing as the spot-level modality (same transform, same
per-channel offset and spread, or the same per-cell normalisation for counts), its loadings on that modality's
factors are fitted by non-negative least squares with the factors fixed, and it takes the type whose named
factors explain most of it (the factors' names come from :func:`annotate`; as there, factors left Unknown do not
vote, and a cell is Unknown only when no named factor explains any of it). Counting the cells of each type in each
spot gives the composition; the spot's type is the most frequent named type (ties: the type with the larger
summed share over the spot's cells; Unknown only when none of its cells has a named type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.annotate._score import UNKNOWN

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["SpotComposition", "spot_composition"]

_NNLS_SWEEPS = 500  # HALS sweeps per cell at most; a cell stops once a sweep moves it < 1e-4 of its first move


@dataclass
class SpotComposition:
    """Result of :func:`spot_composition`.

    Attributes
    ----------
    composition
        Fraction of each spot's cells of each type, DataFrame (n_spots, n_types) indexed by spot id (rows of 0
        for spots without a cell).
    n_cells
        Cells under each spot, Series indexed by spot id.
    spot_type
        The most frequent type of each spot (the factor-based label where the spot has no cell).
    share
        Fraction of the spot's cells of that type (NaN without a cell).
    cells
        One row per single cell: ``cell_id``, ``spot_id`` (empty outside every spot), ``cell_type``,
        ``confidence`` (share of the cell's explained signal carried by its type's factors).
    """

    composition: pd.DataFrame
    n_cells: pd.Series
    spot_type: pd.Series
    share: pd.Series
    cells: pd.DataFrame


def spot_modalities(mdata: MuData) -> list[str]:
    """Modalities whose single cells the alignment aggregated into spots (``uns['alignment']``, route ``'spots'``)."""
    info = mdata.uns.get("alignment", {})
    entries = info.get("modalities", {}) if hasattr(info, "get") else {}
    return [name for name, entry in entries.items() if entry.get("route") == "spots"]


def _factor_types(mdata: MuData, k: int) -> np.ndarray:
    nmf = mdata.uns.get(Keys.NMF_UNS, {})
    ann = nmf.get("annotation") if hasattr(nmf, "get") else None
    ann = mdata.uns.get("annotation") if ann is None else ann
    if ann is None or "cell_type" not in ann:
        msg = "mdata has no factor annotation (uns['nmf']['annotation']); run smo.annotate.annotate first."
        raise InputError(msg)
    names = np.asarray([str(v) for v in ann["cell_type"]], dtype=object)
    if names.size != k:
        msg = f"the factor annotation names {names.size} factors but the factorization has {k}; re-run annotate."
        raise InputError(msg)
    return names


def _preprocess_like(mdata: MuData, modality: str, cells: AnnData) -> np.ndarray | sp.csr_matrix:
    """The cells' values preprocessed as the spot-level modality was (feature order of the modality)."""
    from spatialmultiomics.pp import modality_kind
    from spatialmultiomics.pp._normalize import _normalized, apply_intensity_scaling, stored_intensity_transform

    target = mdata[modality]
    missing = target.var_names.difference(cells.var_names)
    if len(missing):
        msg = (
            f"cells lack {len(missing)} feature(s) of modality {modality!r} (e.g. {list(missing[:3])}); pass the "
            "single-cell table the spots were aggregated from."
        )
        raise InputError(msg)
    X = cells[:, target.var_names].X
    params = mdata.uns.get("preprocess", {})
    if modality_kind(mdata, modality) == "counts":
        return _normalized(
            X, method=params.get("rna_normalization", "library"), target_sum=params.get("target_sum", 1e4)
        )
    if Keys.SCALE_LOW not in target.var or Keys.SCALE_SPAN not in target.var:
        msg = f"modality {modality!r} has no var['scale_low'] / var['scale_span']; run smo.pp.preprocess first."
        raise InputError(msg)
    return apply_intensity_scaling(
        X,
        target.var[Keys.SCALE_LOW].to_numpy(),
        target.var[Keys.SCALE_SPAN].to_numpy(),
        **stored_intensity_transform(target, fallback=params),
    )


def _cell_scores(Y: Any, H: np.ndarray) -> np.ndarray:
    """Non-negative loadings of each row of ``Y`` on the fixed factors ``H`` (k, p), times each factor's norm."""
    from spatialmultiomics.factorize._rowpass import row_sweeps

    H = np.asarray(H, dtype=np.float64)
    norms = np.linalg.norm(H, axis=1)
    live = norms > 0
    Hn = H[live] / norms[live, None]
    gram = Hn @ Hn.T
    xg = np.asarray(Y @ Hn.T, dtype=np.float64)
    W = np.maximum(xg, 0.0) / max(float(np.max(np.diag(gram))), 1e-12) / max(int(live.sum()), 1)
    row_sweeps(W, xg, gram, 1, _NNLS_SWEEPS, 1e-4)
    out = np.zeros((W.shape[0], H.shape[0]))
    out[:, live] = W  # loadings on unit-norm factors: the signal each factor explains, comparable across factors
    return out


def spot_composition(
    mdata: MuData,
    cells: AnnData,
    *,
    modality: str | None = None,
    spot_diameter: float | None = None,
    inplace: bool = True,
) -> SpotComposition | None:
    """Type the single cells under each spot with the joint factors and count them: each spot's composition.

    Parameters
    ----------
    mdata
        Result of the spot route (:func:`smo.align.align` with ``route='spots'``, preprocessed, factorized and
        annotated): rows are spots with ``obsm['spatial']`` (µm).
    cells
        The single-cell AnnData of ``modality`` that was aggregated into the spots: raw values in ``X``, its own
        coordinates in ``obsm['spatial']`` (µm; mapped into the spots' frame with the transform stored by the
        alignment).
    modality
        Modality of ``cells`` (default: the one aggregated into spots, from ``uns['alignment']``).
    spot_diameter
        Spot footprint in µm (default: the alignment's, else 55).
    inplace
        Store the result in ``mdata`` (see Returns) or return it.

    Returns
    -------
    None with ``inplace``: ``obsm['cell_type_composition']`` (fractions, DataFrame), ``obs['cell_type']`` and
    ``obs['cell_type_confidence']`` of spots with cells become the most frequent type and its share (the
    factor-based call is kept in ``obs['cell_type_from_factors']``), ``obs['cell_type_share']``,
    ``uns['spot_cells']`` (the per-cell table) and ``uns['spot_composition']`` (parameters and counts).
    Else a :class:`SpotComposition`.

    Examples
    --------
    See ``docs/alignment.md`` ("Spots: composition from the single cells").
    """
    from spatialmultiomics.align import Transform
    from spatialmultiomics.align._spots import assign_cells_to_spots

    info = mdata.uns.get("alignment", {})
    entries = info.get("modalities", {}) if hasattr(info, "get") else {}
    if modality is None:
        spot_mods = spot_modalities(mdata)
        if len(spot_mods) != 1:
            msg = (
                "modality is required: uns['alignment'] names no single modality aggregated into spots "
                f"(found {spot_mods}); pass modality=<name of the single-cell modality>."
            )
            raise InputError(msg)
        modality = spot_mods[0]
    if modality not in mdata.mod:
        msg = f"modality={modality!r} is not in mdata; it has {list(mdata.mod)}."
        raise InputError(msg)
    if Keys.SPATIAL not in cells.obsm:
        msg = "cells has no obsm['spatial'] coordinates (µm)."
        raise InputError(msg)
    entry = entries.get(modality, {})
    diameter = float(spot_diameter or info.get("params", {}).get("spot_diameter_um", 55.0))
    transform = Transform.from_dict(entry["transform"]) if "transform" in entry else Transform.identity()
    H = np.asarray(mdata[modality].varm[Keys.NMF_LOADINGS]).T  # (k, p)
    types = _factor_types(mdata, H.shape[0])

    Y = _preprocess_like(mdata, modality, cells)
    scores = _cell_scores(Y, H)
    # as annotate() calls cells: the best named type among the named factors; Unknown only when no named factor
    # explains any of the cell (factors left Unknown often carry a state of known types)
    columns = sorted({t for t in types.tolist() if t != UNKNOWN})
    by_type = np.zeros((scores.shape[0], len(columns)))
    for f, t in enumerate(types):
        if t != UNKNOWN:
            by_type[:, columns.index(t)] += scores[:, f]
    total = by_type.sum(axis=1)
    best = by_type.argmax(axis=1)
    cell_type = np.where(total > 0, np.asarray(columns, dtype=object)[best], UNKNOWN)
    share = np.divide(by_type, total[:, None], out=np.zeros_like(by_type), where=total[:, None] > 0)
    confidence = share[np.arange(share.shape[0]), best]

    spot_xy = np.asarray(mdata.obsm[Keys.SPATIAL], dtype=np.float64)
    assign = assign_cells_to_spots(
        transform.apply(np.asarray(cells.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]), spot_xy, spot_diameter=diameter
    )
    inside = assign >= 0
    if (total == 0).any():  # cells no named factor explains: an Unknown column, last
        columns = [*columns, UNKNOWN]
    code = np.where(total > 0, best, len(columns) - 1)
    n_spots = mdata.n_obs
    counts = np.zeros((n_spots, len(columns)))
    np.add.at(counts, (assign[inside], code[inside]), 1.0)
    shares = np.zeros((n_spots, len(columns)))
    np.add.at(shares, (assign[inside], code[inside]), confidence[inside])
    n_cells = counts.sum(axis=1)
    occupied = n_cells > 0
    # most frequent type; ties go to the larger summed share (< 1 after dividing by n + 1, so counts still rule)
    key = counts + shares / (n_cells[:, None] + 1.0)
    if UNKNOWN in columns:  # Unknown cells do not outvote typed ones: a spot is Unknown only when all its cells are
        u = columns.index(UNKNOWN)
        typed = n_cells - counts[:, u] > 0
        key[typed, u] = -1.0
    dominant = key.argmax(axis=1)
    frac = np.divide(counts, n_cells[:, None], out=np.zeros_like(counts), where=occupied[:, None])
    spot_share = np.where(occupied, frac[np.arange(n_spots), dominant], np.nan)

    index = mdata.obs_names
    before = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy() if Keys.CELL_TYPE in mdata.obs else None
    spot_type = np.where(occupied, np.asarray(columns, dtype=object)[dominant], before if before is not None else "")
    spot_ids = np.where(inside, np.asarray(index, dtype=object)[np.where(inside, assign, 0)], "")
    result = SpotComposition(
        composition=pd.DataFrame(frac, index=index, columns=columns),
        n_cells=pd.Series(n_cells.astype(np.int64), index=index, name="n_cells"),
        spot_type=pd.Series(spot_type, index=index, name=Keys.CELL_TYPE),
        share=pd.Series(spot_share, index=index, name=Keys.COMPOSITION_SHARE),
        cells=pd.DataFrame(
            {
                "cell_id": cells.obs_names.to_numpy().astype(str),
                "spot_id": spot_ids.astype(str),
                "cell_type": cell_type.astype(str),
                "confidence": confidence.astype(np.float32),
            }
        ),
    )
    logger.info(
        "spot composition: %d of %d %s cells under %d spots typed with the factors, spots typed from their cells "
        "(median %d cells); factor-based call kept for %d spots without a cell",
        int(inside.sum()),
        cells.n_obs,
        modality,
        int(occupied.sum()),
        int(np.median(n_cells[occupied])) if occupied.any() else 0,
        int((~occupied).sum()),
    )
    if not inplace:
        return result
    if before is not None:
        mdata.obs["cell_type_from_factors"] = pd.Categorical(before)
        old_conf = mdata.obs[Keys.CELL_TYPE_CONFIDENCE].to_numpy(dtype=np.float32)
    else:
        old_conf = np.zeros(n_spots, np.float32)
    order = [t for t in columns if t != UNKNOWN and t in set(spot_type.tolist())]
    order += [t for t in sorted(set(spot_type.tolist())) if t not in order and t != UNKNOWN]
    order += [UNKNOWN] if UNKNOWN in set(spot_type.tolist()) else []
    mdata.obs[Keys.CELL_TYPE] = pd.Categorical(spot_type.astype(str), categories=order)
    mdata.obs[Keys.CELL_TYPE_CONFIDENCE] = np.where(occupied, spot_share, old_conf).astype(np.float32)
    mdata.obs[Keys.COMPOSITION_SHARE] = spot_share
    mdata.obsm[Keys.COMPOSITION] = result.composition
    mdata.uns[Keys.SPOT_CELLS] = result.cells
    mdata.uns["spot_composition"] = {
        "modality": modality,
        "spot_diameter_um": diameter,
        "n_cells": int(cells.n_obs),
        "n_cells_in_spots": int(inside.sum()),
        "n_spots_with_cells": int(occupied.sum()),
        "n_spots_changed": int(np.sum(occupied & (spot_type != before))) if before is not None else 0,
        "method": "factor transfer to single cells (NNLS on the modality's loadings), most frequent type per spot",
    }
    return None
