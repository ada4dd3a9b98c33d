"""The seed's standardized table: optional id column, ``x``, ``y``, optional ``fov``, one column per feature.

CSV, TSV (also ``.txt`` and gzip-compressed variants) and parquet are read. Coordinates are multiplied by
``pixel_size_um`` (default 1: the table is already in micrometres). Feature values must be finite and non-negative.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.io._celltable import looks_numeric
from spatialmultiomics.io._common import existing_path, numeric_block, numeric_column, read_frame
from spatialmultiomics.io._constants import PLATFORM_PIXEL_SIZE_UM
from spatialmultiomics.io._names import clean_marker_names, find_coordinates, is_unnamed, unnamed_index_columns

__all__ = ["ID_COLUMNS", "read_table"]

#: column names (case-insensitive) taken as the cell / spot id
ID_COLUMNS = ("cell_id", "cellid", "cell", "id", "barcode", "barcodes", "spot_id", "spot", "obs_names", "index", "")
#: accepted spellings of the coordinate columns (case-insensitive), in order of preference
X_COLUMNS = (
    "x",
    "x_centroid",
    "centroidx",
    "centroid_x",
    "center_x",
    "x:x",
    "x_um",
    "x_location",
    "x_position",
    "cell x position",
    "centroid x µm",
    "pos_x",
    "cellx",
    "pxl_col_in_fullres",
)
Y_COLUMNS = (
    "y",
    "y_centroid",
    "centroidy",
    "centroid_y",
    "center_y",
    "y:y",
    "y_um",
    "y_location",
    "y_position",
    "cell y position",
    "centroid y µm",
    "pos_y",
    "celly",
    "pxl_row_in_fullres",
)
#: metadata columns kept in ``obs`` rather than read as features (case-insensitive)
FOV_COLUMNS = ("fov", "region", "library_id", "sample", "sample_id", "image", "field_of_view")
META_COLUMNS = ("cell_type", "celltype", "label", "phenotype", "cluster", "annotation", "true_cell_type")

_TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".tab", ".parquet", ".pq")


def _suffixes(path: Path) -> list[str]:
    sfx = [s.lower() for s in path.suffixes]
    if sfx and sfx[-1] in (".gz", ".bz2", ".zip", ".xz"):
        sfx = sfx[:-1]
    return sfx


def is_table(path: str | Path) -> bool:
    """Whether ``path`` has a table suffix this module reads."""
    sfx = _suffixes(Path(path))
    return bool(sfx) and sfx[-1] in _TABLE_SUFFIXES


def _text_column(index: int, name: str) -> bool:
    """Columns read as text: ids, FOV and label columns, and a pandas index column."""
    key = name.strip().lower()
    return (
        key in ID_COLUMNS or key in FOV_COLUMNS or key in META_COLUMNS or (index == 0 and name.startswith("Unnamed: 0"))
    )


def _load_frame(path: Path) -> pd.DataFrame:
    """The table as a DataFrame, parsed by pyarrow (multi-threaded); a header-only file gives zero rows."""
    frame, _ = read_frame(path, text_columns=_text_column, allow_empty=True)
    return frame


def _find(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _as_numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """Column ``column`` as float64; non-numeric values give a one-line error naming the value and its row."""
    return numeric_column(frame, column, path)


def read_table(
    path: str | Path,
    *,
    modality: str = "rna",
    platform: str = "generic",
    pixel_size_um: float = 1.0,
    id_column: str | None = None,
) -> ad.AnnData:
    """Read a standardized cell table into an AnnData.

    Parameters
    ----------
    path
        CSV / TSV / parquet file: an optional id column (``cell_id``, ``id``, ``barcode``, an unnamed first column,
        or any non-numeric first column), coordinate columns ``x`` and ``y`` (also ``x_centroid``, ``CentroidX``,
        ``center_x``, ...), an optional FOV column (``fov``, ``region``, ``sample``, ...) and one numeric column
        per feature (genes or proteins).
    modality
        ``'rna'`` for counts (stored as CSR when sparse), anything else for intensities (dense).
    platform
        Canonical platform name, recorded in the provenance.
    pixel_size_um
        Micrometres per coordinate unit; coordinates are multiplied by it.
    id_column
        Name of the id column, when it cannot be detected.

    Returns
    -------
    AnnData with ``X`` float32 raw values, ``obsm['spatial']`` in µm, ``obs['fov']`` when present, provenance in
    ``uns['provenance']``.
    """
    path = existing_path(path, folder=False)
    frame = _load_frame(path)
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        msg = f"{path}: has a header but no rows; at least one cell is needed."
        raise InputError(msg)
    # stray pandas index columns (whole numbers under an empty / "Unnamed: N" header): dropped, except a single one
    # in first place with distinct values, which has always served as the cell ids
    stray = unnamed_index_columns(frame)
    if (
        id_column is None
        and len(stray) == 1
        and stray[0] == frame.columns[0]
        and sum(is_unnamed(c) for c in frame.columns) == 1
        and frame[stray[0]].is_unique
        and _find([c for c in frame.columns if c != stray[0]], ID_COLUMNS) is None
    ) or len(stray) == len(frame.columns):
        stray = []
    if stray:
        frame = frame.drop(columns=stray)
        logger.info(
            "%s: dropped %d stray index column(s) %s (row numbers written by pandas).", path.name, len(stray), stray
        )
    columns = list(frame.columns)

    # id column
    if id_column is not None:
        if id_column not in frame:
            msg = f"{path}: id_column={id_column!r} is not a column; columns: {columns[:12]}."
            raise InputError(msg)
        id_col = id_column
    else:
        id_col = _find(columns, ID_COLUMNS)
        if id_col is None and columns[0].startswith("Unnamed: 0"):
            id_col = columns[0]
        if id_col is None and not pd.api.types.is_numeric_dtype(frame[columns[0]]):
            first = columns[0].strip().lower()
            if first not in X_COLUMNS + Y_COLUMNS + FOV_COLUMNS + META_COLUMNS:
                id_col = columns[0]

    x_col, y_col, unit = find_coordinates([c for c in columns if c != id_col])
    missing = [n for n, c in (("x", x_col), ("y", y_col)) if c is None]
    if missing:
        msg = f"{path}: no {' / '.join(repr(m) for m in missing)} coordinate column; columns are {columns[:12]}{' ...' if len(columns) > 12 else ''}."
        raise InputError(msg)
    fov_col = _find(columns, FOV_COLUMNS)
    meta_cols = [c for c in columns if c.strip().lower() in META_COLUMNS]
    skip = {id_col, x_col, y_col, fov_col, *meta_cols}
    # text columns (annotations: an ROI, a sample, a gate) go to obs; a column of numbers with a stray text value
    # stays a feature, so the value checks name the value and its row
    text_cols = [c for c in columns if c not in skip and not looks_numeric(frame[c])]
    if text_cols:
        meta_cols += text_cols
        skip.update(text_cols)
        logger.info("%s: text column(s) %s kept in obs, not read as features.", path.name, text_cols[:10])
    features = [c for c in columns if c not in skip]
    if not features:
        msg = f"{path}: no feature columns besides id / coordinates / metadata ({[c for c in columns if c]})."
        raise InputError(msg)

    if id_col is not None:
        ids = frame[id_col].astype(str)
        if _suffixes(path)[-1:] in ([".parquet"], [".pq"]):  # CSV text is already trimmed by the parser
            ids = ids.str.strip()
        ids = pd.Index(ids.to_numpy(), name=None)
        if not ids.is_unique:  # hashed once: AnnData reuses the cached answer
            dup = ids[ids.duplicated()]
            msg = f"{path}: {dup.size} duplicate ids in column {id_col!r} (e.g. {dup[0]!r}); ids must be unique."
            raise InputError(msg)
    else:
        ids = pd.Index([f"cell_{i}" for i in range(len(frame))])
        logger.info("%s: no id column found; cells are named cell_0 ... cell_%d by row.", path, len(frame) - 1)

    coords = np.column_stack([_as_numeric(frame, x_col, path), _as_numeric(frame, y_col, path)])
    if not np.isfinite(coords).all():
        n_bad = int((~np.isfinite(coords)).any(axis=1).sum())
        msg = f"{path}: {n_bad} rows have missing or infinite coordinates in {x_col!r} / {y_col!r}; every cell needs x and y."
        raise InputError(msg)

    default_px = PLATFORM_PIXEL_SIZE_UM.get(platform)
    hint = f" (if they are pixels: the {platform} default is pixel_size_um={default_px:g})" if default_px else ""
    if unit == "um" and pixel_size_um != 1.0:
        logger.warning(
            "%s: coordinate columns %r / %r are in µm by their names, yet pixel_size_um=%g multiplies them.",
            path.name,
            x_col,
            y_col,
            pixel_size_um,
        )
    elif unit == "px" and pixel_size_um == 1.0:
        logger.warning(
            "%s: coordinate columns %r / %r are in pixels by their names and pixel_size_um=1: coordinates stay in "
            "pixels; pass pixel_size_um (µm per pixel) to convert%s.",
            path.name,
            x_col,
            y_col,
            f", e.g. the {platform} default {default_px:g}" if default_px else "",
        )
    else:
        logger.info(
            "%s: coordinates %r / %r taken as %s x pixel_size_um=%g -> µm%s.",
            path.name,
            x_col,
            y_col,
            {"um": "µm", "px": "pixels"}.get(unit, "units (unstated)"),
            pixel_size_um,
            hint if unit == "" and pixel_size_um == 1.0 else "",
        )
    values = numeric_block(frame, features, path)
    names, channels, renamed = clean_marker_names(features)
    X: np.ndarray | sp.csr_matrix = values
    if modality == "rna" and np.count_nonzero(values) < 0.5 * values.size:
        X = sp.csr_matrix(values)
    obs = pd.DataFrame(index=ids)
    if fov_col is not None:
        obs[Keys.FOV] = pd.Categorical(frame[fov_col].astype(str).to_numpy())
    for c in meta_cols:
        obs[c] = pd.Categorical(frame[c].astype(str).to_numpy())
    var = pd.DataFrame(index=pd.Index(names))
    if renamed:
        var["original_name"] = features
        if any(channels):
            var["channel"] = channels
        logger.info(
            "%s: channel names cleaned to markers (e.g. %r -> %r); originals in var['original_name'].",
            path.name,
            *next((a, b) for a, b in zip(features, names, strict=True) if a != b),
        )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm[Keys.SPATIAL] = coords * float(pixel_size_um)
    adata.uns[Keys.PROVENANCE] = {
        "platform": platform,
        "reader": "spatialmultiomics.io.read_table",
        "path": str(path.resolve()),
        "pixel_size_um": float(pixel_size_um),
        "modality": modality,
        "id_column": id_col if id_col is not None else "",
        "columns": {"x": x_col, "y": y_col, "fov": fov_col or ""},
        "coordinate_unit": {"um": "µm", "px": "pixels"}.get(unit, "unstated"),
    }
    if stray:
        adata.uns[Keys.PROVENANCE]["ignored_columns"] = stray
    logger.info("%s: %d cells x %d features (%s, %s)", path.name, adata.n_obs, adata.n_vars, platform, modality)
    return adata
