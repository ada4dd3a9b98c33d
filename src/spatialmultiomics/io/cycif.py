"""CyCIF: MCMICRO quantification table(s) (+ ``markers.csv``) -> AnnData in µm.

Files read
----------
- the MCMICRO (mcquant) quantification CSV: ``CellID``, one mean-intensity column per marker, ``X_centroid``,
  ``Y_centroid`` (pixels), then morphology columns (``Area``, ``MajorAxisLength``, ``MinorAxisLength``,
  ``Eccentricity``, ``Solidity``, ``Extent``, ``Orientation``) kept in ``obs``. The markers are the columns between
  ``CellID`` and ``X_centroid``. A folder is accepted: its ``quantification/*.csv`` (an MCMICRO project) or its
  own quantification CSVs; several tables are several images (``obs['fov']`` = file name).
- ``markers.csv`` (optional; next to the table, in the folder, or in the project folder above
  ``quantification/``): ``marker_name`` plus ``channel_number``, ``cycle_number``, ``Filter``, ``remove``, ...
  go to ``var`` for the matching markers (a mask suffix such as ``CD45_cellMask`` matches ``CD45``).

Coordinates: pixels times ``pixel_size_um`` (default 0.65 µm, a 20x CyCIF image).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics.io._celltable import protein_table, read_tables, split_markers
from spatialmultiomics.io._common import (
    column_key,
    existing_path,
    open_text,
    read_frame,
    require_columns,
)
from spatialmultiomics.io._constants import CycifColumns, CycifFiles

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["cycif"]


def is_mcmicro_header(columns: list[str]) -> bool:
    """Whether a header is an MCMICRO quantification table: CellID, X_centroid, Y_centroid and morphology."""
    keys = {column_key(c) for c in columns}
    has_core = {"cellid", "xcentroid", "ycentroid"} <= keys
    return has_core and any(column_key(m) in keys for m in CycifColumns.MORPHOLOGY)


def _header(path: Path) -> list[str]:
    try:
        with open_text(path) as handle:
            line = handle.readline().rstrip("\r\n")
    except (OSError, EOFError):
        return []
    return line.split("\t" if "\t" in line else ",")


def _quant_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    quant = path / CycifFiles.QUANTIFICATION
    folder = quant if quant.is_dir() else path
    files = sorted(p for pat in ("*.csv", "*.csv.gz") for p in folder.glob(pat) if p.is_file())
    files = [p for p in files if is_mcmicro_header(_header(p))]
    if not files:
        msg = (
            f"{path}: no MCMICRO quantification table (a CSV with CellID, marker columns, X_centroid, Y_centroid and "
            f"morphology columns) in {folder}."
        )
        raise InputError(msg)
    return files


def _markers_file(path: Path, given: str | Path | None) -> Path | None:
    if given is not None:
        p = Path(given)
        if not p.is_file():
            msg = f"markers_file={str(p)!r}: no such file."
            raise InputError(msg)
        return p
    base = path if path.is_dir() else path.parent
    for folder in (base, base.parent):
        cand = folder / CycifFiles.MARKERS
        if cand.is_file():
            return cand
    return None


def cycif(
    path: str | Path,
    *,
    pixel_size_um: float = CycifColumns.PIXEL_SIZE_UM,
    markers_file: str | Path | None = None,
) -> ad.AnnData:
    """Read an MCMICRO CyCIF quantification into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        The quantification CSV, or an MCMICRO project / output folder.
    pixel_size_um
        µm per pixel of ``X_centroid`` / ``Y_centroid``.
    markers_file
        ``markers.csv``; by default looked for next to the table and one folder up.

    Returns
    -------
    AnnData: ``X`` dense float32 mean intensities (cells x markers); ``var`` the ``markers.csv`` fields;
    ``obs`` the morphology columns; ``obs['fov']`` when several tables are read; ``obsm['spatial']`` (x, y) in µm;
    ``uns['provenance']``.
    """
    from spatialmultiomics._validate import check_positive

    px = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    files = _quant_files(path)
    frame, fov = read_tables(
        files, text_columns=lambda i, n: n.strip().lower() == "cellid", folder=path if path.is_dir() else None
    )
    columns = list(frame.columns)
    cols = require_columns(
        columns,
        {"CellID": CycifColumns.CELL_ID, "X_centroid": CycifColumns.X, "Y_centroid": CycifColumns.Y},
        path=files[0],
        what="MCMICRO quantification table",
    )
    i0, i1 = columns.index(cols["CellID"]), columns.index(cols["X_centroid"])
    if i1 - i0 > 1:
        markers = columns[i0 + 1 : i1]
        obs_cols = [c for c in columns if c not in (*markers, cols["CellID"], cols["X_centroid"], cols["Y_centroid"])]
    else:
        markers, obs_cols = split_markers(frame, [cols["CellID"], cols["X_centroid"], cols["Y_centroid"]])
    mpath = _markers_file(path, markers_file)
    var = None
    files_read = list(files)
    if mpath is not None:
        table, _ = read_frame(mpath, text_columns=lambda i, n: n.strip().lower() == CycifColumns.MARKER_NAME)
        mcol = require_columns(
            list(table.columns), {"marker_name": (CycifColumns.MARKER_NAME,)}, path=mpath, what="markers.csv"
        )["marker_name"]
        table = table.drop_duplicates(subset=[mcol]).set_index(table[mcol].astype(str).str.strip())
        rows = []
        for m in markers:
            hit = m if m in table.index else next((n for n in table.index if m.startswith(f"{n}_")), None)
            rows.append(table.loc[hit].drop(labels=[mcol]) if hit is not None else pd.Series(dtype=object))
        var = pd.DataFrame(rows).reset_index(drop=True)
        for col in var.columns:
            if var[col].dtype == object:
                var[col] = var[col].astype(str).replace({"nan": ""})
        unmatched = sorted(set(table.index) - set(markers) - {m.split("_")[0] for m in markers})
        if unmatched:
            logger.info("%s: markers not in the quantification table: %s", mpath.name, unmatched[:10])
        files_read.append(mpath)
    return protein_table(
        frame,
        path=files[0],
        platform="cycif",
        reader="spatialmultiomics.io.cycif",
        version="MCMICRO quantification (mcquant)",
        pixel_size_um=px,
        files=files_read,
        x_col=cols["X_centroid"],
        y_col=cols["Y_centroid"],
        id_col=cols["CellID"],
        fov_col=None,
        markers=markers,
        obs_cols=obs_cols,
        var=var,
        fov_values=fov,
    )
