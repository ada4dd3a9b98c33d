"""Akoya inForm / PhenoCycler-Fusion (Vectra, PhenoImager) cell segmentation tables -> AnnData in µm.

Files read
----------
``*cell_seg_data.txt``: tab-separated, one row per cell, written by inForm 2.x (one field, a merged table or a
consolidated table); a folder of them (``*_cell_seg_data_summary.txt`` ignored), or the same table as CSV (as
phenoptr / PhenoCycler-Fusion exports write it). Columns:

- ``Cell X Position`` / ``Cell Y Position``: pixels, or µm when the file says so (a column name with ``micron``:
  ``Nucleus Area (sq microns)``, ``Distance from Tissue Category Edge (microns)``); pixels are multiplied by
  ``pixel_size_um`` (default 0.5 µm: 2 pixels per µm, the 20x multispectral field of Vectra 3 / Polaris and
  phenoptr's default);
- ``<Compartment> <marker> (<dye>) <statistic> (<unit>)``, e.g. ``Entire Cell CD8 (Opal 540) Mean (Normalized
  Counts, Total Weighting)``: one marker per column for the chosen compartment (``Entire Cell``, ``Nucleus``,
  ``Cytoplasm``, ``Membrane``) and statistic (``Mean``, ``Min``, ``Max``, ``Std Dev``, ``Total``); the variable is
  named after the marker (``CD8``), the column kept in ``var['original_name']``, the dye in ``var['channel']``;
  ``Autofluorescence`` is kept apart as a control;
- ``Sample Name`` (the field: each its own frame, ``obs['fov']``), ``Cell ID`` (ids ``<field>_<id>`` when they
  repeat across fields), ``Phenotype`` / ``Phenotype <marker>``, ``Tissue Category``, ``Confidence``, areas,
  distances and every other non-channel column go to ``obs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spatialmultiomics._log import logger
from spatialmultiomics.io._celltable import drop_stray_index, read_tables, table_files
from spatialmultiomics.io._common import existing_path, find_column, require_columns
from spatialmultiomics.io._constants import InformColumns
from spatialmultiomics.io._mif import mif_table

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["inform"]

_PATTERNS = ("*cell_seg_data.txt", "*cell_seg_data.txt.gz", "*cell_seg_data*.csv", "*cell_seg_data*.csv.gz")


def is_inform_header(columns: list[str]) -> bool:
    """Whether a header is an inForm cell segmentation table (``Cell X Position`` and compartment columns)."""
    names = {str(c).strip() for c in columns}
    return {"Cell X Position", "Cell Y Position"} <= names and any(
        str(c).startswith(tuple(f"{comp} " for comp in InformColumns.COMPARTMENTS)) for c in columns
    )


def _files(path: Path) -> list[Path]:
    return table_files(
        path,
        _PATTERNS,
        accept=lambda p: "_summary" not in p.name.lower(),
        missing="no inForm table (*cell_seg_data.txt) in this folder.",
    )


def inform(
    path: str | Path,
    *,
    compartment: str = "Entire Cell",
    statistic: str = "Mean",
    pixel_size_um: float | None = None,
) -> ad.AnnData:
    """Read an inForm / PhenoCycler-Fusion cell segmentation table into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        A ``cell_seg_data.txt`` file (or its CSV form), or a folder of them (one per field).
    compartment
        ``'Entire Cell'`` (default), ``'Nucleus'``, ``'Cytoplasm'`` or ``'Membrane'``.
    statistic
        ``'Mean'`` (default), ``'Min'``, ``'Max'``, ``'Std Dev'`` or ``'Total'``.
    pixel_size_um
        µm per pixel when the file is in pixels (default 0.5); ignored, with a warning, when it is in µm.

    Returns
    -------
    AnnData: ``X`` dense float32 intensities (cells x markers); ``var`` ``original_name``, ``channel`` (dye),
    ``compartment``, ``statistic``; ``obs`` phenotypes, tissue category and the other non-channel columns,
    ``obs['fov']`` the field; ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']`` with the unit found.

    Examples
    --------
    >>> adata = smo.io.inform("Set4_1-6plex_cell_seg_data.txt", compartment="Membrane")  # doctest: +SKIP
    """
    from spatialmultiomics._validate import check_positive

    path = existing_path(path)
    files = _files(path)
    text = {n.lower() for n in (*InformColumns.CELL_ID, *InformColumns.SAMPLE)}
    frame, file_fov = read_tables(
        files, text_columns=lambda i, n: n.strip().lower() in text, folder=path if path.is_dir() else None
    )
    frame, stray = drop_stray_index(frame, files[0])
    columns = [str(c) for c in frame.columns]
    cols = require_columns(columns, {"x": InformColumns.X, "y": InformColumns.Y}, path=files[0], what="inForm table")
    microns = any("micron" in c.lower() for c in columns)
    if microns:
        if pixel_size_um is not None and pixel_size_um != 1.0:
            logger.warning("%s: the table is in µm; pixel_size_um=%g ignored.", files[0].name, pixel_size_um)
        px, unit = 1.0, "µm (the file's column names say microns)"
    else:
        px = check_positive(
            pixel_size_um if pixel_size_um is not None else InformColumns.PIXEL_SIZE_UM, name="pixel_size_um"
        )
        unit = f"pixels x {px:g} µm" + (" (default: 2 pixels per µm)" if pixel_size_um is None else "")
    logger.info("%s: cell positions in %s.", files[0].name, unit)
    id_col = find_column(columns, InformColumns.CELL_ID)
    fov_col = find_column(columns, InformColumns.SAMPLE)
    return mif_table(
        frame,
        path=files[0],
        files=files,
        platform="inform",
        layouts=("inform",),
        compartment=compartment,
        statistic=statistic,
        x_col=cols["x"],
        y_col=cols["y"],
        pixel_size_um=px,
        id_col=id_col,
        fov_col=fov_col,
        version="inForm cell_seg_data",
        fov_values=file_fov if fov_col is None else None,
        coordinate_unit=unit,
        ignored_columns=stray or None,
    )
