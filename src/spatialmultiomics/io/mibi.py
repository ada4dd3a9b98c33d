"""MIBI / MIBI-TOF: ark-analysis ``cell_table`` or the seed's tab-separated matrix -> AnnData in µm.

Files read
----------
- ark-analysis ``cell_table`` CSV (``cell_table_size_normalized.csv``, ``cell_table_arcsinh_transformed.csv``, or
  any table with the same columns): the markers are the columns between ``cell_size`` and ``label``;
  ``centroid-0`` is the row (y) and ``centroid-1`` the column (x) in pixels; ``fov`` names the image; ``label`` is
  the cell's label in its image (ids become ``<fov>_<label>`` when labels repeat across FOVs); stray pandas index
  columns (``Unnamed: 0``, ``Unnamed: 0.1``) are ignored; every other column (``lineage``, ``cell_meta_cluster``,
  ...) goes to ``obs``. A folder holding such a table is accepted (``cell_table_size_normalized.csv`` preferred).
- the seed's tab-separated single-cell matrix: ``CentroidX`` / ``CentroidY`` (pixels), an optional id and FOV
  column (``cellLabelInImage``, ``SampleID``, ``fov``, ``point``), numeric marker columns.

Coordinates: pixels times ``pixel_size_um`` (FOV width in µm / image width in pixels; default 800 / 2048 =
0.390625 µm, Keren et al. 2018).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spatialmultiomics._errors import InputError
from spatialmultiomics.io._celltable import protein_table, split_markers
from spatialmultiomics.io._common import existing_path, find_column, find_file, read_frame, require_columns
from spatialmultiomics.io._constants import MibiColumns

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["mibi"]

_CELL_TABLES = (
    "cell_table_size_normalized.csv",
    "cell_table_size_normalized.csv.gz",
    "cell_table_arcsinh_transformed.csv",
    "cell_table*.csv",
    "cell_table*.csv.gz",
    "*cell_table*.csv",
)


def is_ark_cell_table(columns: list[str]) -> bool:
    """Whether the header is an ark-analysis cell table (centroid-0 / centroid-1, cell_size, label)."""
    lower = {str(c).strip().lower() for c in columns}
    return {"centroid-0", "centroid-1", "label"} <= lower


def mibi(
    path: str | Path,
    *,
    pixel_size_um: float = MibiColumns.PIXEL_SIZE_UM,
    fov_column: str | None = None,
) -> ad.AnnData:
    """Read a MIBI per-cell table into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        An ark ``cell_table`` CSV, a folder holding one, or the seed's tab-separated matrix.
    pixel_size_um
        µm per pixel: FOV width (µm) / image width (pixels).
    fov_column
        The FOV column when it is not ``fov`` (ark) or ``SampleID`` / ``point`` (older exports).

    Returns
    -------
    AnnData: ``X`` dense float32 intensities (cells x markers); ``obs['fov']`` (the image); ``obs`` the other
    columns (``cell_size``, ``label`` ...); ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']``.
    """
    from spatialmultiomics._validate import check_positive

    px = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    if path.is_dir():
        hit = find_file(path, _CELL_TABLES, kind="file")
        if hit is None:
            msg = f"{path}: no ark cell table ({' or '.join(_CELL_TABLES[:3])}) in this folder."
            raise InputError(msg)
        path = hit
    label_names = {c.lower() for c in MibiColumns.LABEL}
    frame, _ = read_frame(path, text_columns=lambda i, n: n.strip().lower() in label_names)
    columns = [str(c) for c in frame.columns]
    ignored = [c for c in columns if c.startswith("Unnamed:")]
    if fov_column is not None and fov_column not in frame:
        msg = f"{path}: fov_column={fov_column!r} is not a column; columns: {columns[:12]}."
        raise InputError(msg)
    fov_col = fov_column or find_column(columns, MibiColumns.FOV)
    if is_ark_cell_table(columns):
        x_col, y_col = find_column(columns, ("centroid-1",)), find_column(columns, ("centroid-0",))
        id_col = find_column(columns, ("label",))
        first = find_column(columns, (MibiColumns.FIRST_MARKER_AFTER,))
        if first is not None and columns.index(first) < columns.index(id_col):  # type: ignore[arg-type]
            markers = columns[columns.index(first) + 1 : columns.index(id_col)]  # type: ignore[arg-type]
            markers = [m for m in markers if not m.startswith("Unnamed:")]
            obs_cols = [c for c in columns if c not in {*markers, x_col, y_col, id_col, fov_col, *ignored}]
        else:
            markers, obs_cols = split_markers(frame, [x_col, y_col, id_col, fov_col, *ignored])
        version = "ark-analysis cell_table"
    else:
        cols = require_columns(columns, {"x": MibiColumns.X, "y": MibiColumns.Y}, path=path, what="MIBI table")
        x_col, y_col = cols["x"], cols["y"]
        id_col = find_column(columns, MibiColumns.LABEL)
        markers, obs_cols = split_markers(frame, [x_col, y_col, id_col, fov_col, *ignored])
        version = "single-cell matrix (CentroidX / CentroidY)"
    return protein_table(
        frame,
        path=path,
        platform="mibi",
        reader="spatialmultiomics.io.mibi",
        version=version,
        pixel_size_um=px,
        files=[path],
        x_col=x_col,  # type: ignore[arg-type]
        y_col=y_col,  # type: ignore[arg-type]
        id_col=id_col,
        fov_col=fov_col,
        markers=markers,
        obs_cols=obs_cols,
        ignored_columns=ignored,
    )
