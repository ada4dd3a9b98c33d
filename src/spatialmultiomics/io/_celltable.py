"""Per-cell marker tables (CODEX, MIBI, IMC, CyCIF): resolved columns -> AnnData of intensities in µm."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics.io._common import (
    build_anndata,
    check_unique_ids,
    column_key,
    id_strings,
    numeric_block,
    numeric_column,
    stamp_provenance,
)
from spatialmultiomics.io._constants import MORPHOLOGY_COLUMNS

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["drop_stray_index", "looks_numeric", "protein_table", "split_markers", "table_files"]


def drop_stray_index(frame: pd.DataFrame, path: Path | str) -> tuple[pd.DataFrame, list[str]]:
    """Drop unnamed columns of whole numbers (row indices pandas wrote, one per round trip; ark cell tables carry
    two), with a note in the log; returns the frame and the dropped names."""
    from spatialmultiomics._log import logger
    from spatialmultiomics.io._names import unnamed_index_columns

    stray = unnamed_index_columns(frame)
    if len(stray) == len(frame.columns):  # nothing else: leave it to the column checks to say what is missing
        stray = []
    if stray:
        frame = frame.drop(columns=stray)
        logger.info(
            "%s: dropped %d stray index column(s) %s (row numbers written by pandas).",
            Path(path).name,
            len(stray),
            stray,
        )
    return frame, stray


def looks_numeric(series: pd.Series) -> bool:
    """Numeric dtype, or text whose non-empty values are mostly numbers (a marker column with a stray value)."""
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    sample = series.iloc[:1000].astype(str).str.strip()
    sample = sample[sample != ""]
    if sample.empty:
        return False
    return bool(pd.to_numeric(sample, errors="coerce").notna().mean() >= 0.5)


def split_markers(frame: pd.DataFrame, exclude: Sequence[str | None]) -> tuple[list[str], list[str]]:
    """(marker columns, obs columns): markers are the numeric columns that are neither excluded nor a known
    morphology / bookkeeping field (area, eccentricity, label, tile, ...); everything else goes to ``obs``."""
    skip = {c for c in exclude if c is not None}
    markers, obs = [], []
    for col in frame.columns:
        if col in skip:
            continue
        if column_key(col) in MORPHOLOGY_COLUMNS or col.startswith("Unnamed:") or not looks_numeric(frame[col]):
            obs.append(col)
        else:
            markers.append(col)
    return markers, obs


def protein_table(
    frame: pd.DataFrame,
    *,
    path: Path,
    platform: str,
    reader: str,
    version: str,
    pixel_size_um: float,
    files: Sequence[Path],
    x_col: str,
    y_col: str,
    id_col: str | None,
    fov_col: str | None,
    markers: Sequence[str],
    obs_cols: Sequence[str],
    var: pd.DataFrame | None = None,
    var_names: Sequence[str] | None = None,
    fov_values: np.ndarray | None = None,
    **extra: Any,
) -> ad.AnnData:
    """Build the AnnData of a per-cell intensity table.

    Ids come from ``id_col`` (else ``cell_<row>``); when a FOV column is given and ids repeat across FOVs
    (per-image labels), ids become ``<fov>_<id>``. Coordinates are ``x_col`` / ``y_col`` times ``pixel_size_um``.
    """
    if not markers:
        msg = f"{path}: no marker columns found besides ids, coordinates and metadata ({list(frame.columns)[:12]})."
        raise InputError(msg)
    coords = np.column_stack([numeric_column(frame, x_col, path), numeric_column(frame, y_col, path)])
    if not np.isfinite(coords).all():
        n_bad = int((~np.isfinite(coords)).any(axis=1).sum())
        msg = f"{path}: {n_bad} rows have missing or infinite coordinates in {x_col!r} / {y_col!r}; every cell needs x and y."
        raise InputError(msg)
    from spatialmultiomics._log import logger
    from spatialmultiomics.io._constants import PLATFORM_PIXEL_SIZE_UM

    default = PLATFORM_PIXEL_SIZE_UM.get(platform)
    logger.info(
        "%s: coordinates %r / %r x %g µm per unit%s.",
        Path(path).name,
        x_col,
        y_col,
        pixel_size_um,
        "" if default is None else f" ({platform} pixels: {default:g} µm by default; pixel_size_um= to change)",
    )
    values = numeric_block(frame, list(markers), path)
    fov = fov_values
    if fov is None and fov_col is not None:
        fov = id_strings(frame[fov_col])
    if id_col is not None:
        ids = pd.Index(id_strings(frame[id_col]))
    else:
        ids = pd.Index([f"cell_{i}" for i in range(len(frame))])
    obs = pd.DataFrame({c: frame[c].to_numpy() for c in obs_cols if c != fov_col}, index=range(len(frame)))
    if fov is not None and not ids.is_unique:
        # per-image labels: make them unique with the FOV, keep the original id in obs
        obs.insert(0, "cell_id", ids.to_numpy())
        ids = pd.Index([f"{f}_{i}" for f, i in zip(np.asarray(fov, dtype=object), ids, strict=True)])
    ids = check_unique_ids(ids, path=path, column=id_col or "(row number)")
    adata = build_anndata(
        values,
        obs_names=ids,
        var_names=list(var_names) if var_names is not None else list(markers),
        coords_um=coords * float(pixel_size_um),
        obs=obs,
        var=var,
        fov=fov,
        sparse=False,
    )
    return stamp_provenance(
        adata,
        platform=platform,
        reader=reader,
        version=version,
        pixel_size_um=pixel_size_um,
        files=files,
        modality="protein",
        columns={"id": id_col or "", "x": x_col, "y": y_col, "fov": fov_col or ""},
        **extra,
    )


def table_files(path: Path, patterns: Sequence[str], *, accept: Any = None, missing: str) -> list[Path]:
    """``[path]`` for a file; for a folder, its files matching any of ``patterns`` (sorted) that ``accept(file)``
    keeps (None: all), or an :class:`InputError` ``"<path>: <missing>"`` when none is left."""
    if path.is_file():
        return [path]
    files = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file()})
    files = [f for f in files if accept is None or accept(f)]
    if not files:
        msg = f"{path}: {missing}"
        raise InputError(msg)
    return files


def read_tables(
    files: Sequence[Path], *, text_columns: Any = None, folder: Path | None = None
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Read one table, or several with identical columns stacked; with several files every row also gets its
    file's stem as FOV (returned separately)."""
    from spatialmultiomics.io._common import read_frame, short

    if len(files) == 1:
        return read_frame(files[0], text_columns=text_columns)[0], None
    frames, fovs = [], []
    first_cols: list[str] | None = None
    for f in files:
        frame, _ = read_frame(f, text_columns=text_columns)
        if first_cols is None:
            first_cols = list(frame.columns)
        elif set(frame.columns) != set(first_cols):
            diff = sorted(set(frame.columns) ^ set(first_cols))
            msg = f"{folder or f.parent}: {f.name} and {files[0].name} have different columns ({short(diff, 120)}); one table layout per folder."
            raise InputError(msg)
        frames.append(frame[first_cols])
        stem = f.name.split(".")[0]
        fovs.append(np.full(len(frame), stem, dtype=object))
    return pd.concat(frames, ignore_index=True), np.concatenate(fovs)
