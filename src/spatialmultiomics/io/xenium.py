"""10x Xenium: Xenium Onboard Analysis (XOA) output bundle -> AnnData (one modality) or MuData (all) in µm.

Files read
----------
- ``cell_feature_matrix.h5`` (10x HDF5) or the MEX folder ``cell_feature_matrix/`` (``matrix.mtx.gz``,
  ``barcodes.tsv.gz``, ``features.tsv.gz``);
- ``cells.parquet`` or ``cells.csv.gz``: ``cell_id`` (integers in XOA 1.0-1.2, strings such as ``aaabinlp-1`` from
  XOA 1.3; bytes in some parquet files), ``x_centroid``, ``y_centroid`` (µm) and per-cell fields
  (``transcript_counts``, ``control_probe_counts``, ``cell_area``, ``nucleus_area``, ``segmentation_method``, ...);
- ``experiment.xenium`` (JSON, optional): software version, pixel size, run and panel names.

Feature types: ``Gene Expression`` -> RNA; ``Protein Expression`` (Xenium Protein) -> the ``protein`` modality;
every other type (``Negative Control Probe``, ``Negative Control Codeword``, ``Blank Codeword`` /
``Unassigned Codeword``, ``Deprecated Codeword``, ``Genomic Control``) -> ``obsm['control_counts']``.
Tested on files written in the layouts of XOA 1.0 (integer ids, csv.gz), 1.3-2.x (string ids, parquet with byte
ids) and 3.x/4.x (genomic controls, protein features).

Coordinates: ``x_centroid``, ``y_centroid`` are already µm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics.io._common import (
    attach_controls,
    build_anndata,
    check_unique_ids,
    existing_path,
    id_strings,
    numeric_column,
    read_frame,
    require_columns,
    require_files,
    short,
    stamp_provenance,
)
from spatialmultiomics.io._constants import TenxH5, XeniumColumns, XeniumFiles
from spatialmultiomics.io._tenx import TenxMatrix, feature_kinds, modality_block, read_10x_h5, read_10x_mex

if TYPE_CHECKING:
    import anndata as ad
    from mudata import MuData

__all__ = ["xenium", "xenium_mudata"]


def _experiment(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{path}: not a readable JSON file ({short(err)})."
        raise InputError(msg) from err
    return data if isinstance(data, dict) else {}


def _load(path: Path) -> tuple[TenxMatrix, pd.DataFrame, np.ndarray, list[Path], dict[str, Any]]:
    """Matrix, cells table aligned to the matrix barcodes, coordinates (µm), files read, extra provenance."""
    existing_path(path)
    folder = path.parent if path.is_file() else path
    if path.is_file():
        found = require_files(
            folder,
            {"cells": (XeniumFiles.CELLS, "file"), "?experiment": ((XeniumFiles.EXPERIMENT,), "file")},
            platform="Xenium",
        )
        matrix_path: Path = path
    else:
        found = require_files(
            folder,
            {
                "matrix": ((*XeniumFiles.MATRIX_H5, *(f"{d}" for d in XeniumFiles.MATRIX_MEX)), "any"),
                "cells": (XeniumFiles.CELLS, "file"),
                "?experiment": ((XeniumFiles.EXPERIMENT,), "file"),
            },
            platform="Xenium",
        )
        matrix_path = found["matrix"]  # type: ignore[assignment]
    tm = read_10x_h5(matrix_path) if matrix_path.is_file() else read_10x_mex(matrix_path)
    cells_path: Path = found["cells"]  # type: ignore[assignment]
    cells, _ = read_frame(cells_path, text_columns=lambda i, n: n.strip().lower() in XeniumColumns.CELL_ID)
    cols = require_columns(
        list(cells.columns),
        {"cell_id": XeniumColumns.CELL_ID, "x": XeniumColumns.X, "y": XeniumColumns.Y},
        path=cells_path,
        what="cells table",
    )
    ids = check_unique_ids(id_strings(cells[cols["cell_id"]]), path=cells_path, column=cols["cell_id"])
    cells.index = ids
    barcodes = check_unique_ids(tm.barcodes, path=matrix_path, column="barcodes")
    absent = ~barcodes.isin(ids)
    if absent.any():
        msg = (
            f"{cells_path}: {int(absent.sum())} of the matrix's {barcodes.size} cells are not in the cells table "
            f"(e.g. {barcodes[absent][0]!r}); the matrix and {cells_path.name} come from different runs."
        )
        raise InputError(msg)
    if len(ids) > barcodes.size:
        logger.info("%s: %d cells have no matrix row and are left out.", cells_path.name, len(ids) - barcodes.size)
    cells = cells.loc[barcodes]
    coords = np.column_stack(
        [numeric_column(cells, cols["x"], cells_path), numeric_column(cells, cols["y"], cells_path)]
    )
    if not np.isfinite(coords).all():
        n_bad = int((~np.isfinite(coords)).any(axis=1).sum())
        msg = f"{cells_path}: {n_bad} cells have missing or infinite x_centroid / y_centroid."
        raise InputError(msg)
    obs = cells.drop(columns=[cols["cell_id"], cols["x"], cols["y"]]).reset_index(drop=True)
    exp = _experiment(found.get("experiment"))
    version = str(exp.get("analysis_sw_version") or tm.attrs.get("software_version") or "unknown")
    files = [*tm.files, cells_path] + ([found["experiment"]] if found.get("experiment") else [])
    extra: dict[str, Any] = {
        "matrix_format": tm.attrs.get("format", ""),
        "cells_file": cells_path.name,
        "_version": version,
    }
    for key in ("pixel_size", "run_name", "region_name", "panel_name", "instrument_sw_version"):
        if key in exp and isinstance(exp[key], str | int | float):
            extra[f"experiment_{key}"] = exp[key]
    return tm, obs, coords, [Path(f) for f in files], extra


def _build(
    tm: TenxMatrix, obs: pd.DataFrame, coords: np.ndarray, files: list[Path], extra: dict[str, Any], modality: str
) -> ad.AnnData:
    X, feats, Xc, ctrl = modality_block(tm, modality, path=files[0])
    var = pd.DataFrame(
        {"gene_ids": feats[TenxH5.FEATURE_ID].to_numpy(), "feature_types": feats[TenxH5.FEATURE_TYPE].to_numpy()}
    )
    adata = build_anndata(
        X,
        obs_names=tm.barcodes,
        var_names=feats[TenxH5.FEATURE_NAME].tolist(),
        coords_um=coords,
        obs=obs.copy(),
        var=var,
        sparse=modality == "rna",
    )
    if modality == "rna":
        attach_controls(adata, Xc, ctrl[TenxH5.FEATURE_NAME].tolist(), ctrl[TenxH5.FEATURE_TYPE].tolist())
    info = {k: v for k, v in extra.items() if not k.startswith("_")}
    return stamp_provenance(
        adata,
        platform="xenium",
        reader="spatialmultiomics.io.xenium",
        version=extra["_version"],
        pixel_size_um=1.0,
        files=files,
        modality=modality,
        **info,
    )


def xenium(path: str | Path, *, modality: str = "rna") -> ad.AnnData:
    """Read one modality of a Xenium output bundle into an AnnData with cell centroids in µm.

    Parameters
    ----------
    path
        The XOA output folder (or its ``cell_feature_matrix.h5``; ``cells.*`` is looked for next to it).
    modality
        ``'rna'`` (``Gene Expression`` features) or ``'protein'`` (``Protein Expression`` features of Xenium
        Protein). Use :func:`xenium_mudata` to get both at once.

    Returns
    -------
    AnnData: ``X`` float32 (CSR counts for RNA, dense for protein), ``var['gene_ids']``, ``var['feature_types']``;
    ``obs`` the per-cell fields of the cells table; ``obsm['spatial']`` (x, y) in µm; for RNA the control features
    in ``obsm['control_counts']`` (CSR) with names and types in ``uns['control_features']``; ``uns['provenance']``
    with the XOA version.
    """
    tm, obs, coords, files, extra = _load(Path(path))
    return _build(tm, obs, coords, files, extra, modality)


def xenium_mudata(path: str | Path) -> MuData:
    """Read every modality of a Xenium output bundle: a MuData with ``'rna'`` and, when the panel has protein
    features, ``'protein'`` (same cells, same order). Parameters and slots as in :func:`xenium`."""
    from spatialmultiomics._keys import Keys
    from spatialmultiomics._mudata import make_mudata

    tm, obs, coords, files, extra = _load(Path(path))
    kinds = set(feature_kinds(tm.features[TenxH5.FEATURE_TYPE]))
    mods = {m: _build(tm, obs, coords, files, extra, m) for m in ("rna", "protein") if m in kinds}
    if not mods:
        msg = f"{files[0]}: neither Gene Expression nor Protein Expression features."
        raise InputError(msg)
    mdata = make_mudata(mods)
    mdata.obsm[Keys.SPATIAL] = coords.copy()
    return mdata
