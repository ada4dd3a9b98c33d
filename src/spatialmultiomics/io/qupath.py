"""QuPath per-cell measurement exports (``Measure > Export measurements``) -> AnnData in µm.

Files read
----------
A tab- or comma-separated table (``.tsv``, ``.txt``, ``.csv``, optionally gzip-compressed), one row per detected cell,
or a folder of them (one per image). Columns:

- ``Centroid X µm`` / ``Centroid Y µm`` (a calibrated image; also spelt ``um``), or ``Centroid X px`` /
  ``Centroid Y px`` (uncalibrated: pixels times ``pixel_size_um``, default 0.5 µm);
- intensity features ``Cell: CD8: Mean`` (QuPath >= 0.2; also ``CD8: Cell: Mean`` and QuPath 0.1's
  ``Cell: CD8 mean``): one marker per column for the chosen compartment (``Cell``, ``Nucleus``, ``Cytoplasm``,
  ``Membrane``) and statistic (``Mean``, ``Median``, ``Min``, ``Max``, ``Std.Dev.``), named after the marker, the
  column in ``var['original_name']``;
- ``Image`` (each image its own frame, ``obs['fov']``), ``Object ID`` (ids; rows numbered when absent),
  ``Classification`` / ``Class``, ``Parent``, shape features and every other non-intensity column go to ``obs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics.io._celltable import drop_stray_index, read_tables, table_files
from spatialmultiomics.io._common import existing_path, find_column
from spatialmultiomics.io._constants import QupathColumns
from spatialmultiomics.io._names import coordinate_unit, unit_key

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["qupath"]

_PATTERNS = ("*.tsv", "*.tsv.gz", "*.txt", "*.txt.gz", "*.csv", "*.csv.gz")


def is_qupath_header(columns: list[str]) -> bool:
    """Whether a header is a QuPath measurement export: ``Centroid X µm`` / ``px`` and ``<Compartment>: ...``
    intensity columns."""
    keys = {unit_key(c) for c in columns}
    has_xy = bool({"centroid x um", "centroid x px"} & keys) and bool({"centroid y um", "centroid y px"} & keys)
    return has_xy and any(str(c).split(":")[0].strip() in QupathColumns.COMPARTMENTS for c in columns if ":" in str(c))


def _coords(columns: list[str], path: Path) -> tuple[str, str]:
    keys = {unit_key(c): c for c in columns}
    for xs, ys in zip(QupathColumns.X, QupathColumns.Y, strict=True):
        xk, yk = unit_key(xs), unit_key(ys)
        if xk in keys and yk in keys:
            return keys[xk], keys[yk]
    msg = f"{path}: no centroid columns ('Centroid X µm' / 'Centroid Y µm' or '... px'); its columns are {columns[:10]} ..."
    raise InputError(msg)


def qupath(
    path: str | Path,
    *,
    compartment: str = "Cell",
    statistic: str = "Mean",
    pixel_size_um: float | None = None,
) -> ad.AnnData:
    """Read a QuPath cell measurement export into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        The exported table, or a folder of them (one per image, same columns).
    compartment
        ``'Cell'`` (default), ``'Nucleus'``, ``'Cytoplasm'`` or ``'Membrane'``.
    statistic
        ``'Mean'`` (default), ``'Median'``, ``'Min'``, ``'Max'`` or ``'Std.Dev.'``.
    pixel_size_um
        µm per pixel for ``Centroid X px`` columns (default 0.5); ignored, with a warning, for ``µm`` columns.

    Returns
    -------
    AnnData: ``X`` dense float32 intensities (cells x markers); ``var`` ``original_name``, ``channel``,
    ``compartment``, ``statistic``; ``obs`` classification, parent, shape features, ``obs['fov']`` the image;
    ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']``.

    Examples
    --------
    >>> adata = smo.io.qupath("measurements.tsv", compartment="Nucleus")  # doctest: +SKIP
    """
    from spatialmultiomics._validate import check_positive
    from spatialmultiomics.io._mif import mif_table

    path = existing_path(path)
    from spatialmultiomics.io._detect import table_header

    files = table_files(
        path,
        _PATTERNS,
        accept=lambda f: is_qupath_header(table_header(f)),
        missing="no QuPath measurement table (with 'Centroid X µm' and 'Cell: <marker>: Mean' columns) here.",
    )
    text = {"image", "object id", "name", "classification", "class", "parent"}
    frame, file_fov = read_tables(
        files, text_columns=lambda i, n: n.strip().lower() in text, folder=path if path.is_dir() else None
    )
    frame, stray = drop_stray_index(frame, files[0])
    columns = [str(c) for c in frame.columns]
    x_col, y_col = _coords(columns, files[0])
    if coordinate_unit(x_col) == "um":
        if pixel_size_um is not None and pixel_size_um != 1.0:
            logger.warning("%s: centroids are in µm; pixel_size_um=%g ignored.", files[0].name, pixel_size_um)
        px, unit = 1.0, "µm"
    else:
        px = check_positive(
            pixel_size_um if pixel_size_um is not None else QupathColumns.PIXEL_SIZE_UM, name="pixel_size_um"
        )
        unit = f"pixels x {px:g} µm" + (" (default; pass pixel_size_um)" if pixel_size_um is None else "")
    logger.info("%s: centroids %r / %r in %s.", files[0].name, x_col, y_col, unit)
    id_col = find_column(columns, QupathColumns.ID[:1])
    fov_col = find_column(columns, QupathColumns.IMAGE)
    return mif_table(
        frame,
        path=files[0],
        files=files,
        platform="qupath",
        layouts=("qupath",),
        compartment=compartment,
        statistic=statistic,
        x_col=x_col,
        y_col=y_col,
        pixel_size_um=px,
        id_col=id_col,
        fov_col=fov_col,
        version="QuPath measurement export",
        fov_values=file_fov if fov_col is None else None,
        coordinate_unit=unit,
        ignored_columns=stray or None,
    )
