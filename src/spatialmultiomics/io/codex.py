"""CODEX / PhenoCycler: per-cell marker intensity tables -> AnnData in µm.

Files read
----------
One CSV / TSV / parquet table per run, or a folder of them (one per region: each file becomes one FOV). Column
spellings accepted (case-insensitive):

- centroid: ``x`` / ``y``, ``X:X`` / ``Y:Y`` and ``x:x`` / ``y:y`` (CODEX processor / CellSeg), ``X_centroid`` /
  ``Y_centroid`` (MCMICRO), ``centroid_x``, ``x_um``, ...;
- id: ``cell_id``, ``cell_id:cell_id``, ``CellID``, ``id``, or none (rows numbered);
- region / FOV: ``region``, ``region:region``, ``fov``, ``sample``, ``image`` (each region is its own frame);
- markers: every other numeric column; CellSeg's ``name:Cyc_2_ch_3`` headers become ``name`` with the channel in
  ``var['channel']``; the CODEX toolkits' ``CD8 - cytotoxic T cells:Cyc_3_ch_2`` becomes ``CD8`` (the original in
  ``var['original_name']``). Stray pandas index columns (``Unnamed: 0`` ...) are dropped. Shape and bookkeeping columns (``size``, ``Area``, ``Eccentricity``, ``z``, ``tile_num``,
  ...) and text columns go to ``obs``.

Coordinates: pixels times ``pixel_size_um`` (default 0.377 µm, the CODEX instrument's 20x pixel).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics.io._celltable import drop_stray_index, protein_table, read_tables, split_markers
from spatialmultiomics.io._common import existing_path, find_column, require_columns
from spatialmultiomics.io._constants import CodexColumns
from spatialmultiomics.io._names import parse_channel

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["codex"]

_CYCLE = re.compile(r"^(cyc|cycle)[_\s]?\d+", re.IGNORECASE)
_TABLE_PATTERNS = ("*.csv", "*.csv.gz", "*.tsv", "*.tsv.gz", "*.txt", "*.parquet")


def _clean_header(columns: list[str]) -> tuple[list[str], dict[str, str]]:
    """CellSeg ``a:a`` -> ``a``; channel columns of the CODEX toolkits -> their marker
    (``CD8:Cyc_1_ch_2`` and ``CD8 - cytotoxic T cells:Cyc_3_ch_2`` -> ``CD8``, the channel kept); other names
    unchanged."""
    out, channels = [], {}
    for col in columns:
        left, sep, right = col.partition(":")
        new = col
        if sep and left.strip() and left.strip().lower() == right.strip().lower():
            new = left.strip()
        else:
            parsed = parse_channel(col)
            if parsed is not None and parsed.layout == "codex":
                new = parsed.marker
                channels[new] = parsed.channel
        out.append(new)
    if len(set(out)) != len(out):  # cleaning would merge two columns: keep the original headers
        return list(columns), {}
    return out, channels


def _table_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted({p for pat in _TABLE_PATTERNS for p in path.glob(pat) if p.is_file()})
    if not files:
        msg = f"{path}: no per-cell table (*.csv, *.tsv, *.parquet) in this folder."
        raise InputError(msg)
    return files


def codex(
    path: str | Path,
    *,
    pixel_size_um: float = CodexColumns.PIXEL_SIZE_UM,
    id_column: str | None = None,
    fov_column: str | None = None,
) -> ad.AnnData:
    """Read a CODEX / PhenoCycler per-cell table (or a folder of per-region tables) into an AnnData in µm.

    Parameters
    ----------
    path
        A table file, or a folder whose tables (one per region) share their columns.
    pixel_size_um
        µm per pixel of the centroid columns (default 0.377; 1 when the table is already in µm).
    id_column
        The cell id column when it is not one of the usual names.
    fov_column
        The region / FOV column when it is not one of the usual names.

    Returns
    -------
    AnnData: ``X`` dense float32 intensities (cells x markers), ``var['channel']`` for CellSeg headers;
    ``obs['fov']`` (region, or file name for a folder of tables) when there are several; morphology and text
    columns in ``obs``; ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']``.
    """
    from spatialmultiomics._validate import check_positive

    px = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    files = _table_files(path)
    ids_lower = {c.lower() for c in CodexColumns.CELL_ID if c}
    frame, file_fov = read_tables(
        files,
        text_columns=lambda i, n: n.strip().lower() in ids_lower or n == id_column,
        folder=path if path.is_dir() else None,
    )
    frame, stray = drop_stray_index(frame, files[0])
    original = [str(c) for c in frame.columns]
    cleaned, channels = _clean_header(original)
    frame.columns = cleaned
    renamed = dict(zip(cleaned, original, strict=True))
    columns = list(frame.columns)
    cols = require_columns(columns, {"x": CodexColumns.X, "y": CodexColumns.Y}, path=files[0], what="CODEX table")
    if id_column is not None and id_column not in frame:
        msg = f"{files[0]}: id_column={id_column!r} is not a column; columns: {columns[:12]}."
        raise InputError(msg)
    if fov_column is not None and fov_column not in frame:
        msg = f"{files[0]}: fov_column={fov_column!r} is not a column; columns: {columns[:12]}."
        raise InputError(msg)
    id_col = id_column or find_column(columns, [c for c in CodexColumns.CELL_ID if c])
    fov_col = fov_column or find_column(columns, CodexColumns.FOV)
    fov_values = None
    if file_fov is not None:
        fov_values = (
            (pd.Series(file_fov) + "_" + frame[fov_col].astype(str)).to_numpy() if fov_col is not None else file_fov
        )
    markers, obs_cols = split_markers(frame, [cols["x"], cols["y"], id_col, fov_col])
    var = None
    if channels:
        var = pd.DataFrame(
            {"channel": [channels.get(m, "") for m in markers], "original_name": [renamed[m] for m in markers]}
        )
    layout = "CellSeg / CODEX processor (name:name headers)" if cleaned != original else "per-cell table"
    return protein_table(
        frame,
        path=files[0],
        platform="codex",
        reader="spatialmultiomics.io.codex",
        version=layout,
        pixel_size_um=px,
        files=files,
        x_col=cols["x"],
        y_col=cols["y"],
        id_col=id_col,
        fov_col=fov_col,
        markers=markers,
        obs_cols=obs_cols,
        var=var,
        fov_values=fov_values,
        ignored_columns=stray or None,
    )
