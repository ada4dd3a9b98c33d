"""10x Visium HD: Space Ranger >= 3 ``outs/`` (square bins) and Space Ranger >= 4 cell segmentation -> AnnData in µm.

Files read
----------
Bins (``binned_outputs/square_002um``, ``square_008um``, ``square_016um``; one folder per bin size, each laid out
like a Visium ``outs/``):

- ``filtered_feature_bc_matrix.h5`` (10x HDF5; or the ``filtered_feature_bc_matrix/`` MEX folder), barcodes
  ``s_008um_00301_00412-1``;
- ``spatial/tissue_positions.parquet``: ``barcode``, ``in_tissue``, ``array_row``, ``array_col``,
  ``pxl_row_in_fullres``, ``pxl_col_in_fullres`` (bin centres in full-resolution image pixels);
- ``spatial/scalefactors_json.json``: ``microns_per_pixel``, ``bin_size_um``, ``spot_diameter_fullres``, ...

Cells (``segmented_outputs/``, Space Ranger >= 4):

- ``filtered_feature_cell_matrix.h5`` (or the MEX folder), barcodes ``cellid_000000001-1``;
- ``cell_segmentations.geojson`` (or ``graphclust_annotated_cell_segmentations.geojson``): one polygon per cell in
  full-resolution pixels, property ``cell_id`` (the number in the barcode);
- ``spatial/scalefactors_json.json`` (``microns_per_pixel``).

Coordinates: bin centres (``x = pxl_col_in_fullres``, ``y = pxl_row_in_fullres``) or cell-polygon centroids, times
``microns_per_pixel``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.io._common import (
    attach_controls,
    build_anndata,
    check_unique_ids,
    existing_path,
    find_file,
    short,
    stamp_provenance,
)
from spatialmultiomics.io._constants import TenxH5, VisiumColumns, VisiumFiles, VisiumHdFiles
from spatialmultiomics.io._tenx import modality_block, read_10x_h5, read_10x_mex

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["visium_hd"]

_BIN_DIR = re.compile(r"^square_(\d{3})um$")
_CELL_BARCODE = re.compile(r"^cellid_0*(\d+)-\d+$")


# ---------------------------------------------------------------------------------------------------------- layout
def _bin_folders(binned: Path) -> dict[int, Path]:
    """bin size (µm) -> ``square_XXXum`` folder."""
    out = {}
    for sub in sorted(binned.glob(VisiumHdFiles.BIN_PATTERN)):
        match = _BIN_DIR.match(sub.name)
        if match and sub.is_dir():
            out[int(match.group(1))] = sub
    return out


def _layout(path: Path) -> tuple[dict[int, Path], Path | None]:
    """(bin size -> bin folder, segmented_outputs folder or None) for any folder of the output tree."""
    if path.is_file():
        path = path.parent
    match = _BIN_DIR.match(path.name)
    if match:
        seg = path.parent.parent / VisiumHdFiles.SEGMENTED
        return {int(match.group(1)): path}, seg if seg.is_dir() else None
    if path.name == VisiumHdFiles.SEGMENTED:
        return _bin_folders(path.parent / VisiumHdFiles.BINNED), path
    if path.name == VisiumHdFiles.BINNED:
        seg = path.parent / VisiumHdFiles.SEGMENTED
        return _bin_folders(path), seg if seg.is_dir() else None
    seg = path / VisiumHdFiles.SEGMENTED
    return _bin_folders(path / VisiumHdFiles.BINNED), seg if seg.is_dir() else None


def is_visium_hd(path: Path) -> bool:
    """Whether ``path`` is (part of) a Visium HD output: ``binned_outputs/square_*um``, a bin folder or
    ``segmented_outputs/`` with a cell matrix."""
    if not path.is_dir():
        return False
    bins, seg = _layout(path)
    if any(
        find_file(f, VisiumFiles.MATRIX_H5, kind="file") or (f / VisiumFiles.MATRIX_MEX[0]).is_dir()
        for f in bins.values()
    ):
        return True
    return (
        seg is not None and find_file(seg, (*VisiumHdFiles.CELL_MATRIX_H5, *VisiumHdFiles.CELL_MATRIX_MEX)) is not None
    )


def _scalefactors(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{path}: not a readable JSON file ({short(err)})."
        raise InputError(msg) from err
    mpp = data.get(VisiumColumns.MICRONS_PER_PIXEL) if isinstance(data, dict) else None
    if not isinstance(mpp, int | float) or isinstance(mpp, bool) or not np.isfinite(mpp) or mpp <= 0:
        msg = f"{path}: no positive {VisiumColumns.MICRONS_PER_PIXEL!r} (Visium HD scale factors); found {short(data, 120)}."
        raise InputError(msg)
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------------------------------ bins
def _read_bins(folder: Path, size: int, *, modality: str, in_tissue_only: bool) -> ad.AnnData:
    from spatialmultiomics.io.visium import visium

    scalef = folder / VisiumFiles.SPATIAL / VisiumFiles.SCALEFACTORS
    if not scalef.is_file():
        msg = f"{folder}: no spatial/{VisiumFiles.SCALEFACTORS}; Visium HD bins need its microns_per_pixel."
        raise InputError(msg)
    factors = _scalefactors(scalef)
    declared = factors.get(VisiumHdFiles.BIN_SIZE_KEY)
    if declared is not None and not np.isclose(declared, size):
        msg = f"{scalef}: bin_size_um={declared:g} but the folder is {folder.name}; the outputs are mixed up."
        raise InputError(msg)
    adata = visium(folder, modality=modality, in_tissue_only=in_tissue_only)
    prov = adata.uns[Keys.PROVENANCE]
    prov.update(
        platform="visium_hd",
        reader="spatialmultiomics.io.visium_hd",
        level="bins",
        bin_size_um=float(size),
    )
    return adata


# ----------------------------------------------------------------------------------------------------------- cells
def polygon_centroids(rings: list[np.ndarray], owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted centroids (n, 2) and areas (n,) of ``n`` shapes made of the polygons ``rings`` (each an
    (m, 2) vertex array, closed or not); ``owner[i]`` is the shape of ring i. A shape of zero area gets the mean of
    its vertices."""
    lengths = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    xy = np.concatenate(rings).astype(np.float64, copy=False)
    x, y = xy[:, 0], xy[:, 1]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    nxt = np.arange(len(xy)) + 1
    nxt[starts + lengths - 1] = starts  # each ring wraps to its first vertex
    cross = x * y[nxt] - x[nxt] * y
    a2 = np.add.reduceat(cross, starts)  # twice the signed area of each ring
    cx = np.add.reduceat((x + x[nxt]) * cross, starts)
    cy = np.add.reduceat((y + y[nxt]) * cross, starts)
    A2 = np.bincount(owner, a2, minlength=n)
    CX = np.bincount(owner, cx, minlength=n)
    CY = np.bincount(owner, cy, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = np.column_stack([CX / (3.0 * A2), CY / (3.0 * A2)])
    flat = ~np.isfinite(centroids).all(axis=1) | (A2 == 0)
    if flat.any():
        vertex_owner = np.repeat(owner, lengths)
        counts = np.bincount(vertex_owner, minlength=n)
        mean = (
            np.column_stack([np.bincount(vertex_owner, x, n), np.bincount(vertex_owner, y, n)])
            / np.maximum(counts, 1)[:, None]
        )
        centroids[flat] = mean[flat]
    return centroids, np.abs(A2) / 2.0


def _read_polygons(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell ids as text, centroids (n, 2) in pixels, areas in pixels²) of a GeoJSON FeatureCollection."""
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{path}: not a readable GeoJSON file ({short(err)})."
        raise InputError(msg) from err
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(features, list) or not features:
        msg = f"{path}: expected a GeoJSON FeatureCollection with one feature per cell; found none."
        raise InputError(msg)
    ids: list[str] = []
    rings: list[np.ndarray] = []
    owner: list[int] = []
    for k, feature in enumerate(features):
        props = feature.get("properties") or {}
        geom = feature.get("geometry") or {}
        cid = props.get(VisiumHdFiles.CELL_ID_PROPERTY, feature.get("id"))
        kind, coords = geom.get("type"), geom.get("coordinates")
        if cid is None or kind not in ("Polygon", "MultiPolygon") or not coords:
            msg = (
                f"{path}: feature {k} has no {VisiumHdFiles.CELL_ID_PROPERTY!r} property or no Polygon geometry "
                f"(type {kind!r}); every cell needs both."
            )
            raise InputError(msg)
        ids.append(str(cid))
        for poly in [coords] if kind == "Polygon" else coords:
            rings.append(np.asarray(poly[0], dtype=np.float64)[:, :2])
            owner.append(k)
    centroids, areas = polygon_centroids(rings, np.asarray(owner), len(ids))
    return np.asarray(ids, dtype=object), centroids, areas


def _cell_key(values: np.ndarray) -> np.ndarray:
    """Cell ids as compared across files: the number of ``cellid_000000042-1`` / ``42``, else the text."""
    out = []
    for v in values:
        text = str(v)
        match = _CELL_BARCODE.match(text)
        out.append(str(int(match.group(1))) if match else (str(int(text)) if text.isdigit() else text))
    return np.asarray(out, dtype=object)


def _read_cells(seg: Path, bins: dict[int, Path], *, modality: str) -> ad.AnnData:
    matrix = find_file(seg, VisiumHdFiles.CELL_MATRIX_H5, kind="file") or find_file(
        seg, VisiumHdFiles.CELL_MATRIX_MEX, kind="dir"
    )
    polygons = find_file(seg, VisiumHdFiles.CELL_POLYGONS, kind="file")
    scalef = seg / VisiumFiles.SPATIAL / VisiumFiles.SCALEFACTORS
    if not scalef.is_file():  # the bins share the image and its scale
        scalef = next((f / VisiumFiles.SPATIAL / VisiumFiles.SCALEFACTORS for f in bins.values()), scalef)
    missing = [
        name
        for name, hit in (
            (" or ".join(VisiumHdFiles.CELL_MATRIX_H5[:1] + VisiumHdFiles.CELL_MATRIX_MEX[:1]), matrix),
            (" or ".join(VisiumHdFiles.CELL_POLYGONS[:2]), polygons),
            (f"spatial/{VisiumFiles.SCALEFACTORS}", scalef if scalef.is_file() else None),
        )
        if hit is None
    ]
    if missing or matrix is None or polygons is None:
        msg = f"{seg}: not a complete Visium HD segmented output; missing {len(missing)} file(s): {'; '.join(missing)}."
        raise InputError(msg)
    tm = read_10x_h5(matrix) if matrix.is_file() else read_10x_mex(matrix)
    X, feats, Xc, ctrl = modality_block(tm, modality, path=matrix)
    barcodes = check_unique_ids(tm.barcodes, path=matrix, column="barcodes")
    mpp = _scalefactors(scalef)[VisiumColumns.MICRONS_PER_PIXEL]
    poly_ids, centroids, areas = _read_polygons(polygons)
    index = pd.Index(_cell_key(poly_ids))
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        msg = f"{polygons}: cell {dup!r} has several polygons; expected one per cell."
        raise InputError(msg)
    pos = index.get_indexer(_cell_key(barcodes.to_numpy()))
    absent = pos < 0
    if absent.any():
        msg = (
            f"{polygons}: {int(absent.sum())} of the matrix's {barcodes.size} cells have no polygon "
            f"(e.g. {barcodes[absent][0]!r}); the matrix and the segmentation come from different runs."
        )
        raise InputError(msg)
    obs = pd.DataFrame({"cell_area_um2": areas[pos] * mpp * mpp})
    var = pd.DataFrame(
        {"gene_ids": feats[TenxH5.FEATURE_ID].to_numpy(), "feature_types": feats[TenxH5.FEATURE_TYPE].to_numpy()}
    )
    adata = build_anndata(
        X,
        obs_names=barcodes,
        var_names=feats[TenxH5.FEATURE_NAME].tolist(),
        coords_um=centroids[pos] * mpp,
        obs=obs,
        var=var,
        sparse=True,
    )
    attach_controls(adata, Xc, ctrl[TenxH5.FEATURE_NAME].tolist(), ctrl[TenxH5.FEATURE_TYPE].tolist())
    return stamp_provenance(
        adata,
        platform="visium_hd",
        reader="spatialmultiomics.io.visium_hd",
        version=tm.attrs.get("software_version") or "Space Ranger >= 4 segmented outputs",
        pixel_size_um=mpp,
        files=[*tm.files, polygons, scalef],
        modality=modality,
        level="cells",
        coordinates="centroids of the cell polygons",
        matrix_format=tm.attrs.get("format", ""),
    )


# ---------------------------------------------------------------------------------------------------------- reader
def visium_hd(
    path: str | Path,
    *,
    bin_size: int | None = None,
    cells: bool | None = None,
    modality: str = "rna",
    in_tissue_only: bool = True,
) -> ad.AnnData:
    """Read a Visium HD Space Ranger output (square bins or segmented cells) into an AnnData in µm.

    Parameters
    ----------
    path
        The ``outs/`` folder, ``binned_outputs/``, one ``square_XXXum/`` folder or ``segmented_outputs/``.
    bin_size
        Bin size in µm: 2, 8 or 16 (the ``square_XXXum`` folders present). Default 8 when bins are read.
    cells
        ``True``: the segmented cells (``segmented_outputs/``); ``False``: square bins; ``None`` (default): the bins
        of a ``square_XXXum/`` folder given as ``path``, else the cells when ``segmented_outputs/`` is present and no
        ``bin_size`` is given, else the bins.
    modality
        ``'rna'`` (Gene Expression features) or ``'protein'`` (Antibody Capture features).
    in_tissue_only
        Bins: keep only bins with ``in_tissue == 1`` (the filtered matrix holds only those).

    Returns
    -------
    AnnData: ``X`` CSR float32 counts (bins or cells x features); ``var`` ``gene_ids``, ``feature_types``;
    ``obs`` ``array_row`` / ``array_col`` / ``in_tissue`` / pixel positions (bins) or ``cell_area_um2`` (cells);
    ``obsm['spatial']`` (x, y) in µm; control features in ``obsm['control_counts']``; ``uns['provenance']`` with
    ``level`` (``'bins'`` / ``'cells'``), ``bin_size_um`` and the scale factors.

    Examples
    --------
    >>> bins = smo.io.visium_hd("outs", bin_size=16)  # doctest: +SKIP
    >>> cells = smo.io.visium_hd("outs", cells=True)  # doctest: +SKIP
    """
    path = existing_path(path)
    bins, seg = _layout(path)
    if bin_size is not None and (isinstance(bin_size, bool) or not isinstance(bin_size, int | np.integer)):
        msg = f"bin_size={bin_size!r}: expected a whole number of µm, one of {sorted(bins) or list(VisiumHdFiles.BIN_SIZES_UM)}."
        raise InputError(msg)
    folder = path.parent if path.is_file() else path
    if cells is None:  # a bin folder (or a file in it) means its bins; segmented_outputs/ means the cells
        cells = folder.name == VisiumHdFiles.SEGMENTED or (
            seg is not None and bin_size is None and not _BIN_DIR.match(folder.name)
        )
    if cells:
        if seg is None:
            msg = f"{path}: cells=True but there is no {VisiumHdFiles.SEGMENTED}/ folder (Space Ranger >= 4 cell segmentation)."
            raise InputError(msg)
        if bin_size is not None:
            logger.info("bin_size=%s ignored: reading the segmented cells.", bin_size)
        return _read_cells(seg, bins, modality=modality)
    if not bins:
        msg = (
            f"{path}: no Visium HD bins ({VisiumHdFiles.BINNED}/square_002um|008um|016um/) here; pass the Space "
            "Ranger outs/ folder, binned_outputs/ or a square_XXXum/ folder."
        )
        raise InputError(msg)
    size = int(bin_size) if bin_size is not None else None
    if size is None:
        size = (
            VisiumHdFiles.DEFAULT_BIN_UM
            if VisiumHdFiles.DEFAULT_BIN_UM in bins
            else (next(iter(bins)) if len(bins) == 1 else None)
        )
        if size is None:
            msg = f"{path}: no square_008um/ folder; pass bin_size= one of {sorted(bins)}."
            raise InputError(msg)
    if size not in bins:
        msg = f"bin_size={size}: no square_{size:03d}um/ folder in {path}; available bin sizes (µm): {sorted(bins)}."
        raise InputError(msg)
    return _read_bins(bins[size], size, modality=modality, in_tissue_only=in_tissue_only)
