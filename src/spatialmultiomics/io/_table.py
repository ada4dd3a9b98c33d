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
from spatialmultiomics.io._common import existing_path, numeric_block, numeric_column, read_frame

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

    x_col, y_col = _find(columns, X_COLUMNS), _find(columns, Y_COLUMNS)
    missing = [n for n, c in (("x", x_col), ("y", y_col)) if c is None]
    if missing:
        msg = f"{path}: no {' / '.join(repr(m) for m in missing)} coordinate column; columns are {columns[:12]}{' ...' if len(columns) > 12 else ''}."
        raise InputError(msg)
    fov_col = _find(columns, FOV_COLUMNS)
    meta_cols = [c for c in columns if c.strip().lower() in META_COLUMNS]
    skip = {id_col, x_col, y_col, fov_col, *meta_cols}
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

    values = numeric_block(frame, features, path)
    X: np.ndarray | sp.csr_matrix = values
    if modality == "rna" and np.count_nonzero(values) < 0.5 * values.size:
        X = sp.csr_matrix(values)
    obs = pd.DataFrame(index=ids)
    if fov_col is not None:
        obs[Keys.FOV] = pd.Categorical(frame[fov_col].astype(str).to_numpy())
    for c in meta_cols:
        obs[c] = pd.Categorical(frame[c].astype(str).to_numpy())
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(features)))
    adata.obsm[Keys.SPATIAL] = coords * float(pixel_size_um)
    adata.uns[Keys.PROVENANCE] = {
        "platform": platform,
        "reader": "spatialmultiomics.io.read_table",
        "path": str(path.resolve()),
        "pixel_size_um": float(pixel_size_um),
        "modality": modality,
        "id_column": id_col if id_col is not None else "",
        "columns": {"x": x_col, "y": y_col, "fov": fov_col or ""},
    }
    logger.info("%s: %d cells x %d features (%s, %s)", path.name, adata.n_obs, adata.n_vars, platform, modality)
    return adata
