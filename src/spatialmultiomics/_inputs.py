"""The inputs of a run and their checks, shared by the single-sample pipeline and the cohort.

Reading every modality of a run (paths or AnnData objects, platforms, pixel sizes), spillover compensation, the
checks of the number of factors, and the versions recorded with a result. Kept apart from
:mod:`spatialmultiomics._pipeline` so that the cohort and the report use them without importing the pipeline (no
import circle between the pipeline, the cohort and the report).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_positive_int

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["PathLike"]

PathLike = str | Path


def _load(
    source: PathLike | AnnData, *, platform: str | None, modality: str, pixel_size_um: float | None, argname: str
) -> AnnData:
    from anndata import AnnData

    from spatialmultiomics import io

    if isinstance(source, AnnData):
        if Keys.SPATIAL not in source.obsm:
            msg = f"{argname}: the AnnData has no obsm['spatial'] coordinates."
            raise InputError(msg)
        return source.copy()
    if not isinstance(source, str | Path):
        msg = f"{argname} must be a file path or an AnnData, got {type(source).__name__}."
        raise InputError(msg)
    return io.read(source, platform, modality=modality, pixel_size_um=pixel_size_um)


def _check_platform(platform: str | None, *, kind: str, argname: str) -> str:
    from spatialmultiomics.io import PLATFORMS, normalize_platform

    canon = normalize_platform(platform, name=argname)
    pk = PLATFORMS[canon][0]
    if pk not in ("any", kind):
        allowed = sorted(p for p, (k, _) in PLATFORMS.items() if k in (kind, "any"))
        msg = f"{argname}={platform!r} is a {pk} platform; for this input use one of {allowed}."
        raise InputError(msg)
    return canon


def _collect_modalities(
    transcript_path: Any,
    protein_path: Any,
    platform_tx: str | None,
    platform_prot: str | None,
    extra_modalities: Mapping[str, Any] | None,
    pixel_size_um: float | Mapping[str, float] | None,
) -> dict[str, AnnData]:
    """Read every input into modality name -> AnnData; ``platform_tx`` / ``platform_prot`` are already checked."""

    def px(name: str) -> float | None:
        return pixel_size_um.get(name) if isinstance(pixel_size_um, Mapping) else pixel_size_um

    mods: dict[str, AnnData] = {}
    if isinstance(transcript_path, str | Path) and Path(transcript_path).suffix.lower() == ".h5mu":
        from spatialmultiomics._mudata import read_h5mu

        try:
            mdata_in = read_h5mu(transcript_path)
        except (OSError, KeyError, ValueError) as err:
            msg = f"{transcript_path}: not a readable .h5mu file ({type(err).__name__})."
            raise InputError(msg) from err
        for name, adata in mdata_in.mod.items():
            if Keys.SPATIAL not in adata.obsm:
                if Keys.SPATIAL not in mdata_in.obsm:
                    msg = f"{transcript_path}: modality {name!r} has no obsm['spatial'] coordinates."
                    raise InputError(msg)
                joint = pd.DataFrame(np.asarray(mdata_in.obsm[Keys.SPATIAL])[:, :2], index=mdata_in.obs_names)
                adata.obsm[Keys.SPATIAL] = joint.loc[adata.obs_names].to_numpy(dtype=np.float64)
            mods[name] = adata
        transcript_path = None  # the .h5mu held every modality
    sides = (
        (transcript_path, platform_tx, Keys.RNA, "transcript_path"),
        (protein_path, platform_prot, Keys.PROTEIN, "protein_path"),
    )
    for source, platform, name, path_arg in sides:
        if source is None or name in mods:
            continue
        mods[name] = _load(source, platform=platform, modality=name, pixel_size_um=px(name), argname=path_arg)
    for name, source in (extra_modalities or {}).items():
        if name in mods:
            msg = f"extra_modalities: the name {name!r} is already used; pick another modality name."
            raise InputError(msg)
        mods[name] = _load(
            source, platform=None, modality=name, pixel_size_um=px(name), argname=f"extra_modalities[{name!r}]"
        )
    if not mods:
        msg = "no input: give transcript_path and/or protein_path."
        raise InputError(msg)
    return mods


def _compensate_spillover(mdata: MuData) -> None:
    """Spillover compensation of every intensity modality of single cells; the measured values move to
    ``layers['raw']``."""
    from spatialmultiomics import pp
    from spatialmultiomics.align._spots import looks_like_spots

    for name, adata in mdata.mod.items():
        if pp.modality_kind(mdata, name) != "intensity":
            continue
        if Keys.SPATIAL not in adata.obsm or looks_like_spots(adata)[0]:
            logger.info("spillover: %s skipped (no single-cell coordinates)", name)
            continue
        pp.compensate_spillover(adata)
        adata.layers[Keys.RAW] = adata.X
        adata.X = adata.layers[Keys.SPILL_COMPENSATED]


def _check_n_factors(n_factors: Any) -> int | str:
    """``'auto'`` or a positive integer."""
    if isinstance(n_factors, str) and n_factors.strip().lower() == "auto":
        return "auto"
    if isinstance(n_factors, str) and n_factors.strip().isdigit():
        n_factors = int(n_factors.strip())
    try:
        return check_positive_int(n_factors, name="n_factors")
    except InputError:
        msg = f"n_factors must be 'auto' or an integer >= 1, got {n_factors!r}."
        raise InputError(msg) from None


def _check_k_fits(n_factors: int, mdata: MuData) -> None:
    """Raise unless k <= min(cells, features factorized), the bound of the factorization, naming ``n_factors``."""
    from spatialmultiomics.factorize._api import _n_features_used

    per_mod = _n_features_used(mdata)
    n_cells, n_features = mdata.n_obs, sum(per_mod.values())
    if n_factors > min(n_cells, n_features):
        parts = ", ".join(f"{name}: {n}" for name, n in per_mod.items())
        msg = (
            f"n_factors={n_factors} (--n-factors) is more factors than the data allow: {n_cells} cells and "
            f"{n_features} features are factorized ({parts}), and the number of factors can be at most the smaller "
            f"of the two; use n_factors <= {min(n_cells, n_features)} or 'auto'."
        )
        raise InputError(msg)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("spatialmultiomics", "numpy", "scipy", "pandas", "scikit-learn", "anndata", "mudata"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out
