"""10x Visium: Space Ranger ``outs/`` (matrix + ``spatial/`` positions and scale factors) -> AnnData in µm.

Files read
----------
- matrix: ``filtered_feature_bc_matrix.h5`` (10x HDF5; also ``<sample>_filtered_feature_bc_matrix.h5``,
  ``filtered_probe_bc_matrix.h5``, the ``raw_*`` files) or the MEX folder ``filtered_feature_bc_matrix/``
  (``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz`` or ``genes.tsv``);
- ``spatial/tissue_positions_list.csv`` (no header, Space Ranger < 2.0), ``spatial/tissue_positions.csv``
  (header, Space Ranger >= 2.0) or ``spatial/tissue_positions.parquet`` (Visium HD / Space Ranger >= 3);
- ``spatial/scalefactors_json.json``.

Coordinates: ``x = pxl_col_in_fullres``, ``y = pxl_row_in_fullres`` (full-resolution image pixels) times
``55 µm / spot_diameter_fullres`` (Visium spots are 55 µm wide, 100 µm centre to centre), or times
``microns_per_pixel`` when the scale factors give it (Visium HD). Without scale factors the spots are placed from
``array_row`` / ``array_col`` on the ideal 100 µm hexagonal grid, with a warning.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._warnings import warn
from spatialmultiomics.io._common import (
    attach_controls,
    build_anndata,
    check_unique_ids,
    existing_path,
    find_file,
    id_strings,
    numeric_column,
    read_frame,
    require_columns,
    short,
    stamp_provenance,
)
from spatialmultiomics.io._constants import TenxH5, VisiumColumns, VisiumFiles
from spatialmultiomics.io._tenx import TenxMatrix, modality_block, read_10x_h5, read_10x_mex

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["visium"]


def _locate(path: Path) -> tuple[Path | None, Path]:
    """(matrix file or MEX folder or None, the outs folder)."""
    if path.is_file():
        return path, path.parent
    if any((path / n).is_file() for n in TenxH5.MEX_MATRIX):
        return path, path.parent
    hit = find_file(path, VisiumFiles.MATRIX_H5, kind="file")
    if hit is None:
        hit = find_file(path, VisiumFiles.MATRIX_MEX, kind="dir")
    return hit, path


def _read_positions(path: Path) -> tuple[pd.DataFrame, str]:
    """The positions table with the six standard columns and the layout name."""
    cols = VisiumColumns
    if path.suffix.lower() == ".parquet":
        frame, _ = read_frame(path)
        layout = "tissue_positions.parquet (Visium HD / Space Ranger >= 3)"
    else:
        with path.open() as handle:
            first = handle.readline()
        has_header = cols.BARCODE in first.lower() or cols.IN_TISSUE in first.lower()
        if has_header:
            frame, _ = read_frame(path, text_columns=lambda i, n: n.strip().lower() == cols.BARCODE)
            layout = "tissue_positions.csv (header, Space Ranger >= 2.0)"
        else:
            try:
                frame = pd.read_csv(path, header=None, dtype={0: str})
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
                msg = f"{path}: cannot be parsed as a Space Ranger positions file ({short(err)})."
                raise InputError(msg) from err
            if frame.shape[1] != len(cols.ORDER):
                msg = (
                    f"{path}: a header-less positions file needs {len(cols.ORDER)} columns {list(cols.ORDER)}, "
                    f"found {frame.shape[1]}."
                )
                raise InputError(msg)
            frame.columns = list(cols.ORDER)
            layout = "tissue_positions_list.csv (no header, Space Ranger < 2.0)"
    resolved = require_columns(list(frame.columns), {c: (c,) for c in cols.ORDER}, path=path, what="positions file")
    frame = frame.rename(columns={v: k for k, v in resolved.items()})
    frame[cols.BARCODE] = id_strings(frame[cols.BARCODE])
    check_unique_ids(frame[cols.BARCODE], path=path, column=cols.BARCODE)
    return frame.set_index(cols.BARCODE), layout


def _read_scalefactors(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{path}: not a readable JSON file ({short(err)})."
        raise InputError(msg) from err
    if not isinstance(data, dict):
        msg = f"{path}: expected a JSON object of scale factors, got {type(data).__name__}."
        raise InputError(msg)
    out = {str(k): float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if VisiumColumns.MICRONS_PER_PIXEL not in out and VisiumColumns.SPOT_DIAMETER not in out:
        msg = (
            f"{path}: has neither {VisiumColumns.SPOT_DIAMETER!r} nor {VisiumColumns.MICRONS_PER_PIXEL!r}; "
            f"keys: {sorted(data)}."
        )
        raise InputError(msg)
    um = out.get(VisiumColumns.MICRONS_PER_PIXEL)
    if um is None:
        um = VisiumColumns.SPOT_DIAMETER_UM / out[VisiumColumns.SPOT_DIAMETER]
    if not (math.isfinite(um) and um > 0):
        msg = f"{path}: scale factors give a non-positive or infinite µm per pixel ({um!r})."
        raise InputError(msg)
    out["um_per_pixel"] = um
    return out


def hex_grid_um(array_row: np.ndarray, array_col: np.ndarray) -> np.ndarray:
    """Ideal Visium spot centres in µm from array indices: ``x = 50 * array_col``, ``y = 50 * sqrt(3) * array_row``
    (neighbouring spots of a row differ by 2 in ``array_col``; centre-to-centre distance 100 µm)."""
    half = VisiumColumns.SPOT_PITCH_UM / 2
    return np.column_stack([np.asarray(array_col, float) * half, np.asarray(array_row, float) * half * math.sqrt(3.0)])


def visium(
    path: str | Path,
    *,
    modality: str = "rna",
    in_tissue_only: bool = True,
    require_coordinates: bool = True,
) -> ad.AnnData:
    """Read a Space Ranger output into an AnnData with spot coordinates in µm.

    Parameters
    ----------
    path
        The ``outs/`` folder, the matrix ``.h5`` file or the MEX matrix folder (then ``spatial/`` is looked for
        next to it).
    modality
        ``'rna'``: the ``Gene Expression`` features; ``'protein'``: ``Antibody Capture`` / ``Protein Expression``
        features (Visium CytAssist gene and protein expression).
    in_tissue_only
        Keep only spots with ``in_tissue == 1`` in the positions file (the filtered matrix already has only those).
    require_coordinates
        Without a positions file, raise (default) or return the matrix without ``obsm['spatial']``.

    Returns
    -------
    AnnData: ``X`` CSR float32 counts (spots x features); ``var_names`` feature names (gene symbols, repeats made
    unique), ``var['gene_ids']``, ``var['feature_types']`` and other per-feature fields; ``obs`` ``in_tissue``,
    ``array_row``, ``array_col``, ``pxl_row_in_fullres``, ``pxl_col_in_fullres``; ``obsm['spatial']`` (x, y) in µm;
    ``uns['provenance']`` with the Space Ranger version, positions layout, scale factors and µm per pixel.
    """
    path = existing_path(path)
    matrix_path, outs = _locate(path)
    spatial = outs / VisiumFiles.SPATIAL
    if not spatial.is_dir() and (outs.parent / VisiumFiles.SPATIAL).is_dir():
        spatial = outs.parent / VisiumFiles.SPATIAL
    positions = find_file(spatial, VisiumFiles.POSITIONS, kind="file") if spatial.is_dir() else None
    scalef = (spatial / VisiumFiles.SCALEFACTORS) if (spatial / VisiumFiles.SCALEFACTORS).is_file() else None
    missing = []
    if matrix_path is None:
        missing.append(" or ".join([*VisiumFiles.MATRIX_H5[:1], f"{VisiumFiles.MATRIX_MEX[0]}/"]))
    if positions is None and require_coordinates:
        missing.append(" or ".join(f"spatial/{n}" for n in VisiumFiles.POSITIONS))
        if scalef is None:
            missing.append(f"spatial/{VisiumFiles.SCALEFACTORS}")
    if missing:
        msg = f"{outs}: not a complete Space Ranger output; missing {len(missing)} file(s): {'; '.join(missing)}."
        raise InputError(msg)
    tm: TenxMatrix = read_10x_h5(matrix_path) if matrix_path.is_file() else read_10x_mex(matrix_path)
    X, feats, Xc, ctrl = modality_block(tm, modality, path=matrix_path)
    barcodes = check_unique_ids(tm.barcodes, path=matrix_path, column="barcodes")
    obs = pd.DataFrame(index=barcodes)
    for key, values in tm.barcode_extra.items():
        obs[key] = values
    files = list(tm.files)
    coords = None
    extra: dict[str, object] = {"matrix_format": tm.attrs.get("format", "")}
    keep = np.ones(barcodes.size, dtype=bool)
    if positions is not None:
        pos, layout = _read_positions(positions)
        files.append(positions)
        extra["positions_layout"] = layout
        absent = ~barcodes.isin(pos.index)
        if absent.any():
            msg = (
                f"{positions}: {int(absent.sum())} of the matrix's {barcodes.size} barcodes are not in the positions "
                f"file (e.g. {barcodes[absent][0]!r}); the matrix and spatial/ come from different runs."
            )
            raise InputError(msg)
        pos = pos.loc[barcodes]
        for col in VisiumColumns.ORDER[1:]:
            obs[col] = numeric_column(pos, col, positions).astype(np.int64 if "pxl" not in col else np.float64)
        if in_tissue_only:
            keep = obs[VisiumColumns.IN_TISSUE].to_numpy() == 1
        if scalef is not None:
            factors = _read_scalefactors(scalef)
            files.append(scalef)
            um = factors["um_per_pixel"]
            coords = obs[[VisiumColumns.PIXEL_COL, VisiumColumns.PIXEL_ROW]].to_numpy(np.float64) * um
            extra["scalefactors"] = {k: v for k, v in factors.items() if k != "um_per_pixel"}
            pixel_size = um
        else:
            warn(
                f"{spatial}: no {VisiumFiles.SCALEFACTORS}; spots placed on the ideal 100 µm hexagonal grid from "
                "array_row / array_col instead of the imaged positions."
            )
            coords = hex_grid_um(obs[VisiumColumns.ARRAY_ROW].to_numpy(), obs[VisiumColumns.ARRAY_COL].to_numpy())
            extra["coordinates"] = "hexagonal grid from array_row / array_col (no scale factors)"
            pixel_size = 1.0
    else:
        extra["coordinates"] = "none (no positions file)"
        pixel_size = float("nan")
    var = pd.DataFrame(
        {
            "gene_ids": feats[TenxH5.FEATURE_ID].to_numpy(),
            "feature_types": feats[TenxH5.FEATURE_TYPE].to_numpy(),
        }
    )
    for col in feats.columns:
        if col not in (TenxH5.FEATURE_ID, TenxH5.FEATURE_NAME, TenxH5.FEATURE_TYPE):
            var[col] = feats[col].to_numpy()
    if keep.all():  # the filtered matrix: every barcode is in tissue, no row copy
        X_keep, Xc_keep, names_keep, coords_keep, obs_keep = X, Xc, barcodes, coords, obs.reset_index(drop=True)
    else:
        idx = np.flatnonzero(keep)
        X_keep, Xc_keep, names_keep = X[idx], Xc[idx], barcodes[idx]
        coords_keep = None if coords is None else coords[idx]
        obs_keep = obs.iloc[idx].reset_index(drop=True)
    adata = build_anndata(
        X_keep,
        obs_names=names_keep,
        var_names=feats[TenxH5.FEATURE_NAME].tolist(),
        coords_um=coords_keep,
        obs=obs_keep,
        var=var,
        sparse=True,
    )
    attach_controls(adata, Xc_keep, ctrl[TenxH5.FEATURE_NAME].tolist(), ctrl[TenxH5.FEATURE_TYPE].tolist())
    version = tm.attrs.get("software_version") or (
        "Space Ranger >= 2.1 (probe-level matrix)"
        if "probe_region" in feats
        else extra.get("positions_layout", "unknown")
    )
    return stamp_provenance(
        adata,
        platform="visium",
        reader="spatialmultiomics.io.visium",
        version=version,
        pixel_size_um=pixel_size,
        files=files,
        modality=modality,
        **extra,
    )
