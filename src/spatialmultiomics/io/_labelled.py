"""Cell tables that already carry a label per cell: coordinates, a label column and an optional FOV column.

Many users have segmented and annotated cells already (a phenotype table from MIBI, IMC, CODEX or a clustering)
and want only the spatial statistics. :func:`read_labelled_table` reads such a table (CSV / TSV, also gzip, or
parquet) or an ``.h5ad`` file into an AnnData with the label in ``obs[label_key]``, the FOV in ``obs['fov']`` and
coordinates in micrometres in ``obsm['spatial']``; nothing else of a table is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_positive
from spatialmultiomics.io._common import existing_path
from spatialmultiomics.io._table import FOV_COLUMNS, ID_COLUMNS, X_COLUMNS, Y_COLUMNS, _as_numeric, _find, _load_frame

if TYPE_CHECKING:
    import anndata as ad
    import pandas as pd

__all__ = ["read_labelled_table"]

SINGLE_FOV = "all"  # obs['fov'] value when the input has no FOV column
MAX_INTEGER_LABELS = 200  # most distinct integer codes (or labels of any kind, if also > half the rows)
MIN_INTEGER_LIMIT = 20  # tiny tables may have up to this many distinct integer codes whatever their size


def _columns_text(columns: list[str]) -> str:
    shown = [str(c) for c in columns[:15]]
    return f"{shown}{' ...' if len(columns) > 15 else ''}"


def _pick(
    columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, missing: list[str]
) -> str | None:
    """Return the column named ``given`` (exact) or the first of ``candidates`` (case-insensitive)."""
    if given is not None:
        if given in columns:
            return given
        missing.append(f"{what}={given!r}")
        return None
    found = _find(columns, candidates)
    if found is None:
        missing.append(f"{what} (none of {list(candidates[:4])} ...)")
    return found


def _labels(values: pd.Series, label_key: str, where: str) -> pd.Categorical:
    """Labels as a categorical of strings; missing values stay missing.

    Allowed: categories, text, booleans, and integer codes (also integer-valued floats, as a CSV reader gives an
    integer column with gaps, and text that is all numbers) with few distinct values; a float column or an integer
    column with more distinct values than :func:`_max_integer_labels` allows is a measurement or an id, not a
    label, and raises.
    """
    import pandas as pd
    from pandas.api.types import (
        is_bool_dtype,
        is_float_dtype,
        is_numeric_dtype,
        is_object_dtype,
        is_string_dtype,
    )

    dtype = values.dtype
    if is_object_dtype(dtype) or is_string_dtype(dtype):  # text that is all numbers: numeric codes
        text = values.where(values.astype(str).str.strip() != "")
        numbers = pd.to_numeric(text, errors="coerce")
        if text.notna().any() and numbers.notna().sum() == text.notna().sum():
            values, dtype = numbers, numbers.dtype
    present = values.dropna()
    n_rows, n_distinct = len(values), int(present.nunique())
    if isinstance(dtype, pd.CategoricalDtype):  # keep the user's category order
        used = values.cat.remove_unused_categories()
        labels = pd.Categorical.from_codes(used.cat.codes.to_numpy(), categories=[str(c) for c in used.cat.categories])
    elif is_numeric_dtype(dtype) and not is_bool_dtype(dtype):
        numbers = present.to_numpy(dtype=np.float64)
        integral = bool(np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)))
        if is_float_dtype(dtype) and not integral:
            example = next(v for v in numbers if not (np.isfinite(v) and v == round(v)))
            msg = (
                f"{where}: label_key={label_key!r} (dtype {dtype}) has {n_distinct} distinct values, not all "
                f"whole numbers (e.g. {example:g}); a label column must hold text or categories, or integer codes "
                "with few distinct values (a cell type or cluster id per cell), not measurements."
            )
            raise InputError(msg)
        limit = _max_integer_labels(n_rows)
        if n_distinct > limit:
            msg = (
                f"{where}: label_key={label_key!r} (dtype {dtype}) has {n_distinct} distinct values in "
                f"{n_rows} rows; an integer label column must hold codes (cell type or cluster ids) with at most "
                f"{limit} distinct values for {n_rows} rows, not a measurement or an id per cell."
            )
            raise InputError(msg)
        codes = np.unique(numbers.astype(np.int64))
        text = np.full(n_rows, None, dtype=object)
        text[values.notna().to_numpy()] = [str(v) for v in numbers.astype(np.int64)]
        labels = pd.Categorical(text, categories=[str(c) for c in codes])  # numeric order: 2 before 10
    else:
        labels = pd.Categorical(values.astype(str).where(values.notna()))
    if len(labels.categories) > MAX_INTEGER_LABELS and len(labels.categories) > n_rows / 2:
        msg = (
            f"{where}: label_key={label_key!r} (dtype {dtype}) has {len(labels.categories)} distinct values in "
            f"{n_rows} rows; a label column must have labels shared by many cells (at most "
            f"{MAX_INTEGER_LABELS} distinct values, or at most half the rows), not an id per cell."
        )
        raise InputError(msg)
    return labels


def _max_integer_labels(n_rows: int) -> int:
    """Most distinct integer codes a label column of ``n_rows`` rows may have: 200, or half the rows if fewer
    (but never below 20, so a tiny table with a few clusters is accepted)."""
    return min(MAX_INTEGER_LABELS, max(MIN_INTEGER_LIMIT, n_rows // 2))


def read_labelled_table(
    path: str | Path,
    *,
    label_key: str,
    x: str | None = None,
    y: str | None = None,
    fov_key: str | None = None,
    pixel_size_um: float = 1.0,
) -> ad.AnnData:
    """Read a table of labelled cells (coordinates, label, optional FOV) into an AnnData.

    Parameters
    ----------
    path
        CSV / TSV (also ``.gz``) or parquet file with one row per cell, or an ``.h5ad`` file (labels in ``obs``,
        coordinates in ``obsm['spatial']`` or in ``obs`` columns).
    label_key
        Column with the cell type (or any label) of each cell; missing values leave a cell unlabelled. Text,
        categorical and boolean columns are taken as they are; integer columns (also integer-valued floats, as
        a CSV column of integers with gaps is read) are taken as codes when they have at most 200 distinct
        values and at most half as many as rows (at least 20 allowed); a float column with fractional values is
        refused, being a measurement rather than a label.
    x, y
        Coordinate columns; default: the first of ``x``, ``x_centroid``, ``CentroidX``, ``center_x``, ... (and the
        same for y), case-insensitive. For ``.h5ad`` the default is ``obsm['spatial']``.
    fov_key
        Column with the field of view / sample of each cell; graphs never join different FOVs. Default: the first
        of ``fov``, ``region``, ``library_id``, ``sample``, ``sample_id``, ``image``, ``field_of_view`` if present,
        else all cells form one FOV.
    pixel_size_um
        Micrometres per coordinate unit (> 0); coordinates are multiplied by it.

    Returns
    -------
    AnnData (no ``X`` for tables) with ``obs[label_key]`` (categorical of strings), ``obs['fov']`` (categorical;
    ``"all"`` when there is no FOV column), ``obsm['spatial']`` (n_cells, 2) float64 in micrometres, cell ids
    from an id column (``cell_id``, ``id``, ...) when one exists and is unique, else ``cell_0, cell_1, ...``,
    and ``uns['provenance']``.

    Raises
    ------
    InputError
        Missing file, empty file, missing columns (the message lists the columns that exist), non-numeric or
        missing coordinates, a label column that is not a label (fractional floats, too many distinct integer
        codes, or one distinct value per cell of any type).
    """
    import anndata as ad
    import pandas as pd

    pixel_size_um = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path, folder=False)
    is_h5ad = path.suffix.lower() == ".h5ad"
    if is_h5ad:
        try:
            adata = ad.read_h5ad(path)
        except (OSError, KeyError, ValueError) as err:
            msg = f"{path}: not a readable .h5ad file ({type(err).__name__}: {str(err).splitlines()[0][:200]})."
            raise InputError(msg) from err
        frame = adata.obs
    else:
        frame = _load_frame(path)
        frame.columns = [str(c) for c in frame.columns]
    columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        msg = f"{path}: has no rows; at least one cell is needed."
        raise InputError(msg)

    missing: list[str] = []
    if label_key not in columns:
        missing.append(f"label_key={label_key!r}")
    use_obsm = is_h5ad and x is None and y is None and Keys.SPATIAL in adata.obsm
    x_col = y_col = None
    if not use_obsm:
        x_col = _pick(columns, x, X_COLUMNS, "x", missing)
        y_col = _pick(columns, y, Y_COLUMNS, "y", missing)
    fov_col = fov_key if fov_key is not None else _find(columns, FOV_COLUMNS)
    if fov_key is not None and fov_key not in columns:
        missing.append(f"fov_key={fov_key!r}")
    if missing:
        where = "obs columns" if is_h5ad else "columns"
        msg = f"{path}: missing {', '.join(missing)}; the {where} are {_columns_text(columns)}."
        raise InputError(msg)

    if use_obsm:
        coords = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] < 2:
            msg = f"{path}: obsm['spatial'] must have shape (n_cells, 2), got {coords.shape}."
            raise InputError(msg)
        coords = coords[:, :2].copy()
    else:
        coords = np.column_stack([_as_numeric(frame, x_col, path), _as_numeric(frame, y_col, path)])
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        what = "obsm['spatial']" if use_obsm else f"{x_col!r} / {y_col!r}"
        msg = f"{path}: {int(bad.sum())} cells have missing or infinite coordinates in {what} (first: row {row + 1}); every cell needs x and y."
        raise InputError(msg)
    coords *= pixel_size_um

    if is_h5ad:
        ids = pd.Index(adata.obs_names.astype(str))
        id_col = None
    else:
        id_col = _find(columns, ID_COLUMNS)
        if id_col is not None and id_col in (label_key, x_col, y_col, fov_col):
            id_col = None
        ids = None
        if id_col is not None:
            candidate = frame[id_col].astype(str).str.strip()
            if candidate.is_unique:
                ids = pd.Index(candidate.to_numpy())
            else:
                logger.info("%s: id column %r has duplicates; cells are named by row.", path, id_col)
                id_col = None
        if ids is None:
            ids = pd.Index([f"cell_{i}" for i in range(len(frame))])
    if not ids.is_unique:
        dup = ids[ids.duplicated()][0]
        msg = f"{path}: duplicate cell ids (e.g. {dup!r}); ids must be unique."
        raise InputError(msg)

    labels = _labels(frame[label_key], label_key, str(path))
    n_unlabelled = int(pd.isna(labels).sum())
    if n_unlabelled == len(frame):
        msg = f"{path}: column {label_key!r} has no value in any row; nothing to analyse."
        raise InputError(msg)
    if fov_col is not None:
        fov_values = frame[fov_col]
        if fov_values.isna().any():
            msg = f"{path}: FOV column {fov_col!r} has {int(fov_values.isna().sum())} missing values; every cell needs a FOV."
            raise InputError(msg)
        fov = pd.Categorical(fov_values.astype(str).to_numpy())
    else:
        fov = pd.Categorical(np.full(len(frame), SINGLE_FOV, dtype=object))

    obs = pd.DataFrame({label_key: labels, Keys.FOV: fov}, index=ids)
    if is_h5ad:
        adata.obs[label_key] = labels
        adata.obs[Keys.FOV] = fov
        out = adata
    else:
        out = ad.AnnData(obs=obs)
    out.obsm[Keys.SPATIAL] = coords
    out.uns[Keys.PROVENANCE] = {
        "reader": "spatialmultiomics.io.read_labelled_table",
        "path": str(path.resolve()),
        "pixel_size_um": float(pixel_size_um),
        "columns": {
            "label": label_key,
            "x": x_col or "obsm['spatial']",
            "y": y_col or "obsm['spatial']",
            "fov": fov_col or "",
            "id": id_col or "",
        },
    }
    logger.info(
        "%s: %d cells, %d labels%s, %d FOVs",
        path.name,
        out.n_obs,
        len(labels.categories),
        f" ({n_unlabelled} unlabelled)" if n_unlabelled else "",
        len(fov.categories),
    )
    return out
