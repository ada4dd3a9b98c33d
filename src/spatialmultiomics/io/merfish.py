"""MERFISH / MERSCOPE: ``cell_by_gene.csv`` + ``cell_metadata.csv`` (MERSCOPE and Vizgen's vpt), or the seed's
plain MERFISH table -> AnnData in µm.

Files read
----------
- ``cell_by_gene.csv``: first column the cell id (``cell``), one column per gene; ``Blank-*`` columns are the
  panel's blank (negative-control) barcodes: kept apart in ``obsm['control_counts']``, never used as genes.
- ``cell_metadata.csv``: cell id (``EntityID`` for vpt, an unnamed index column for MERSCOPE), ``center_x``,
  ``center_y`` (µm, global mosaic frame), ``fov`` (the imaging tile: kept as ``obs['tile_fov']``, because tiles are
  pieces of one stitched section, not separate frames), volume, bounds, ...
- a plain table (CSV / TSV / parquet: cell id, ``x``, ``y``, one column per gene), read like the standardized table.

Coordinates: already µm (``pixel_size_um`` multiplies them, default 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics.io._common import (
    attach_controls,
    build_anndata,
    check_unique_ids,
    existing_path,
    find_column,
    find_file,
    id_strings,
    numeric_block,
    numeric_column,
    read_frame,
    require_columns,
    stamp_provenance,
)
from spatialmultiomics.io._constants import MerfishColumns, MerfishFiles

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["merfish"]


def _is_blank(name: str) -> bool:
    return str(name).strip().lower().startswith(MerfishColumns.BLANK_PREFIXES)


def _id_first(i: int, name: str) -> bool:
    return i == 0 or name.strip().lower() in {c.lower() for c in MerfishColumns.CELL_ID if c}


def _split_blanks(adata: ad.AnnData) -> ad.AnnData:
    blank = np.array([_is_blank(v) for v in adata.var_names])
    if not blank.any():
        return adata
    controls = adata.X[:, np.flatnonzero(blank)]
    names = list(adata.var_names[blank])
    out = adata[:, ~blank].copy()
    attach_controls(out, controls, names, ["Blank"] * len(names))
    return out


def merfish(
    path: str | Path,
    *,
    pixel_size_um: float = 1.0,
    require_coordinates: bool = True,
    id_column: str | None = None,
) -> ad.AnnData:
    """Read MERSCOPE / vpt output or a plain MERFISH cell table into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        A MERSCOPE region folder (``cell_by_gene.csv`` + ``cell_metadata.csv``), the ``cell_by_gene.csv`` file
        itself (the metadata is looked for next to it), or a plain table (cell id, ``x``, ``y``, genes).
    pixel_size_um
        µm per coordinate unit (MERSCOPE coordinates are µm: keep 1).
    require_coordinates
        Without ``cell_metadata.csv``, raise (default) or return the counts without ``obsm['spatial']``.
    id_column
        Id column of a plain table when it cannot be detected.

    Returns
    -------
    AnnData: ``X`` CSR float32 counts (cells x genes, ``Blank-*`` excluded); ``obsm['control_counts']`` (CSR, the
    ``Blank-*`` columns) with their names in ``uns['control_features']``; ``obs`` the metadata columns
    (``volume``, ``tile_fov``, ...); ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']``.
    """
    from spatialmultiomics._validate import check_positive

    px = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    if path.is_dir():
        counts_path = find_file(path, MerfishFiles.COUNTS, kind="file")
        folder = path
    elif "cell_by_gene" in path.name.lower():
        counts_path, folder = path, path.parent
    else:
        from spatialmultiomics.io._table import read_table

        adata = _split_blanks(
            read_table(path, modality="rna", platform="merfish", pixel_size_um=px, id_column=id_column)
        )
        prov = dict(adata.uns[Keys.PROVENANCE])
        prov.update(reader="spatialmultiomics.io.merfish", version="plain MERFISH table", files=[prov["path"]])
        adata.uns[Keys.PROVENANCE] = prov
        return adata
    meta_path = find_file(folder, MerfishFiles.METADATA, kind="file")
    missing = []
    if counts_path is None:
        missing.append(" or ".join(MerfishFiles.COUNTS))
    if meta_path is None and require_coordinates:
        missing.append(" or ".join(MerfishFiles.METADATA))
    if missing:
        present = sorted(p.name for p in folder.iterdir())[:15]
        msg = f"{folder}: not a complete MERSCOPE output; missing {len(missing)} file(s): {'; '.join(missing)}. The folder has: {present}."
        raise InputError(msg)

    counts, _ = read_frame(counts_path, text_columns=_id_first)
    columns = list(counts.columns)
    id_col = id_column if id_column is not None else columns[0]
    if id_col not in counts:
        msg = f"{counts_path}: id_column={id_col!r} is not a column; columns: {columns[:12]}."
        raise InputError(msg)
    ids = check_unique_ids(id_strings(counts[id_col]), path=counts_path, column=id_col)
    features = [c for c in columns if c != id_col]
    if not features:
        msg = f"{counts_path}: no gene columns besides the cell id {id_col!r}."
        raise InputError(msg)
    values = numeric_block(counts, features, counts_path)
    blank = np.array([_is_blank(c) for c in features])
    genes = [c for c, b in zip(features, blank, strict=True) if not b]
    blanks = [c for c, b in zip(features, blank, strict=True) if b]

    obs = pd.DataFrame(index=ids)
    coords = None
    files = [counts_path]
    version = "MERSCOPE cell_by_gene.csv"
    if meta_path is not None:
        meta, _ = read_frame(meta_path, text_columns=_id_first)
        mcols = list(meta.columns)
        meta_id = find_column(mcols, [c for c in MerfishColumns.CELL_ID if c]) or mcols[0]
        resolved = require_columns(
            mcols, {"x": MerfishColumns.X, "y": MerfishColumns.Y}, path=meta_path, what="cell metadata"
        )
        meta_ids = check_unique_ids(id_strings(meta[meta_id]), path=meta_path, column=meta_id)
        meta.index = meta_ids
        absent = ~ids.isin(meta_ids)
        if absent.any():
            msg = (
                f"{meta_path}: {int(absent.sum())} of the {ids.size} cells of {counts_path.name} have no metadata "
                f"row (e.g. {ids[absent][0]!r}); the two files come from different runs."
            )
            raise InputError(msg)
        meta = meta.loc[ids]
        coords = (
            np.column_stack(
                [numeric_column(meta, resolved["x"], meta_path), numeric_column(meta, resolved["y"], meta_path)]
            )
            * px
        )
        if not np.isfinite(coords).all():
            n_bad = int((~np.isfinite(coords)).any(axis=1).sum())
            msg = f"{meta_path}: {n_bad} cells have missing or infinite {resolved['x']!r} / {resolved['y']!r}."
            raise InputError(msg)
        for col in mcols:
            if col in (meta_id, resolved["x"], resolved["y"]):
                continue
            name = "tile_fov" if col.strip().lower() == MerfishColumns.TILE_FOV else col
            obs[name] = meta[col].to_numpy()
        files.append(meta_path)
        version = "vpt (EntityID)" if meta_id.strip().lower() == "entityid" else "MERSCOPE cell_metadata.csv"
    gene_idx = np.flatnonzero(~blank)
    adata = build_anndata(
        values[:, gene_idx],
        obs_names=ids,
        var_names=genes,
        coords_um=coords,
        obs=obs.reset_index(drop=True),
        sparse=True,
    )
    attach_controls(adata, values[:, np.flatnonzero(blank)], blanks, ["Blank"] * len(blanks))
    return stamp_provenance(
        adata,
        platform="merfish",
        reader="spatialmultiomics.io.merfish",
        version=version,
        pixel_size_um=px,
        files=files,
        modality="rna",
        id_column=id_col,
        coordinates="center_x, center_y" if coords is not None else "none (no cell_metadata.csv)",
    )
