"""Joining modalities measured on the same cells, by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._mudata import make_mudata

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["join_by_id"]


def join_by_id(mods: Mapping[str, AnnData], *, coordinates_from: str | None = None) -> MuData:
    """Put modalities measured on the same cells into one MuData, joined on their cell ids.

    Cells present in every modality are kept, in the order of the first modality; cells missing from any
    modality are dropped and counted. Every row keeps its real id.

    Parameters
    ----------
    mods
        Modality name -> AnnData (``obsm['spatial']`` in µm). Any number of modalities (>= 1).
    coordinates_from
        Modality whose coordinates (and ``obs['fov']``) become the joint ones; default the first.

    Returns
    -------
    MuData with the shared cells, ``obsm['spatial']`` and ``obs['fov']`` (when present) at the top level, and
    ``uns['alignment']`` recording the route and the counts of kept and dropped cells per modality.
    """
    if not mods:
        msg = "no modalities to join; give at least one AnnData."
        raise InputError(msg)
    names = list(mods)
    ref = coordinates_from or names[0]
    if ref not in mods:
        msg = f"coordinates_from={ref!r} is not one of the modalities {names}."
        raise InputError(msg)
    shared = pd.Index(mods[names[0]].obs_names)
    for name in names[1:]:
        shared = shared[shared.isin(mods[name].obs_names)]
    if len(shared) == 0:
        examples = "; ".join(f"{n}: {list(mods[n].obs_names[:3])}" for n in names)
        msg = f"no cell id is shared by all modalities ({examples}); ids must match to join by id."
        raise InputError(msg)
    dropped = {n: int(mods[n].n_obs - len(shared)) for n in names}
    for n, d in dropped.items():
        if d:
            logger.warning("%s: %d of %d cells have no partner in every modality and are dropped.", n, d, mods[n].n_obs)
    subset = {n: (mods[n] if mods[n].obs_names.equals(shared) else mods[n][shared].copy()) for n in names}
    coords = np.asarray(subset[ref].obsm[Keys.SPATIAL], dtype=np.float64)
    max_offset = 0.0
    for n in names:
        if n != ref and Keys.SPATIAL in subset[n].obsm:
            max_offset = max(max_offset, float(np.abs(subset[n].obsm[Keys.SPATIAL] - coords).max()))
    if max_offset > 0:
        logger.info(
            "coordinates of matched cells differ by up to %.3g µm between modalities; using %s's.", max_offset, ref
        )
    mdata = make_mudata(subset)
    mdata.obsm[Keys.SPATIAL] = coords
    if Keys.FOV in subset[ref].obs:
        mdata.obs[Keys.FOV] = pd.Categorical(subset[ref].obs[Keys.FOV].astype(str).to_numpy())
    mdata.uns["alignment"] = {
        "route": "ids",
        "n_shared": len(shared),
        "dropped": dropped,
        "coordinates_from": ref,
        "max_coordinate_offset_um": max_offset,
    }
    return mdata
