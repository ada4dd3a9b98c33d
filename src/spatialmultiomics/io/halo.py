"""Indica Labs HALO object data (per-cell CSV of the HighPlex FL / Multiplex IHC modules) -> AnnData in µm.

Files read
----------
The object data CSV (optionally gzip-compressed), or a folder of them (one per image). Columns:

- ``XMin``, ``XMax``, ``YMin``, ``YMax``: the cell's bounding box in image pixels; the cell sits at the box centre,
  times ``pixel_size_um`` (default 0.5 µm, a 20x scan; pass your scanner's value);
- ``<marker> <Compartment> Intensity`` (``CD8 Cell Intensity``, ``Opal 540 Nucleus Intensity``,
  ``CD8 (Opal 540) Cytoplasm Intensity``): one marker per column for the chosen compartment (``Cell``,
  ``Nucleus``, ``Cytoplasm``, ``Membrane``), named after the marker, the column in ``var['original_name']``;
- ``Image Location`` (each image its own frame, ``obs['fov']``), ``Object Id`` (ids, ``<image>_<id>`` when they
  repeat across images), ``Analysis Region``, the ``... Positive Classification`` columns, areas and every other
  non-intensity column go to ``obs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spatialmultiomics._log import logger
from spatialmultiomics.io._celltable import drop_stray_index, read_tables, table_files
from spatialmultiomics.io._common import existing_path, find_column, numeric_column, require_columns
from spatialmultiomics.io._constants import HaloColumns

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["halo"]

_PATTERNS = ("*.csv", "*.csv.gz")
_X, _Y = "x_center_px", "y_center_px"


def is_halo_header(columns: list[str]) -> bool:
    """Whether a header is HALO object data: the ``XMin`` / ``XMax`` / ``YMin`` / ``YMax`` box and intensities."""
    names = {str(c).strip() for c in columns}
    return set(HaloColumns.BOX) <= names and any(str(c).strip().endswith(" Intensity") for c in columns)


def halo(
    path: str | Path,
    *,
    compartment: str = "Cell",
    pixel_size_um: float = HaloColumns.PIXEL_SIZE_UM,
) -> ad.AnnData:
    """Read HALO object data into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        The object data CSV, or a folder of them (one per image, same columns).
    compartment
        ``'Cell'`` (default), ``'Nucleus'``, ``'Cytoplasm'`` or ``'Membrane'``.
    pixel_size_um
        µm per image pixel of the bounding boxes (default 0.5).

    Returns
    -------
    AnnData: ``X`` dense float32 intensities (cells x markers); ``var`` ``original_name``, ``channel``,
    ``compartment``; ``obs`` classifications, region, areas, ``obs['fov']`` the image; ``obsm['spatial']`` (x, y)
    in µm (box centres); ``uns['provenance']``.

    Examples
    --------
    >>> adata = smo.io.halo("object_results.csv", pixel_size_um=0.4977)  # doctest: +SKIP
    """
    from spatialmultiomics._validate import check_positive
    from spatialmultiomics.io._detect import table_header
    from spatialmultiomics.io._mif import mif_table

    px = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    files = table_files(
        path,
        _PATTERNS,
        accept=lambda f: is_halo_header(table_header(f)),
        missing="no HALO object data (a CSV with XMin, XMax, YMin, YMax and '<marker> Cell Intensity') here.",
    )
    text = {"image location", "image file name", "image", "analysis region", "algorithm name", "object id"}
    frame, file_fov = read_tables(
        files, text_columns=lambda i, n: n.strip().lower() in text, folder=path if path.is_dir() else None
    )
    frame, stray = drop_stray_index(frame, files[0])
    columns = [str(c) for c in frame.columns]
    box = require_columns(columns, {c: (c,) for c in HaloColumns.BOX}, path=files[0], what="HALO object data")
    frame = frame.assign(
        **{
            _X: (numeric_column(frame, box["XMin"], files[0]) + numeric_column(frame, box["XMax"], files[0])) / 2,
            _Y: (numeric_column(frame, box["YMin"], files[0]) + numeric_column(frame, box["YMax"], files[0])) / 2,
        }
    )
    logger.info("%s: cells at their bounding-box centres, pixels x %g µm.", files[0].name, px)
    fov_col = find_column(columns, HaloColumns.IMAGE)
    return mif_table(
        frame,
        path=files[0],
        files=files,
        platform="halo",
        layouts=("halo",),
        compartment=compartment,
        statistic="Mean",
        x_col=_X,
        y_col=_Y,
        pixel_size_um=px,
        id_col=find_column(columns, HaloColumns.ID),
        fov_col=fov_col,
        version="HALO object data",
        drop=list(box.values()),
        fov_values=file_fov if fov_col is None else None,
        coordinate_unit="pixels (bounding-box centres)",
        ignored_columns=stray or None,
    )
