"""Stereo-seq: SAW GEM files -> square bins or cell bins, AnnData in µm.

Files read
----------
A GEM file (``.gem``, ``.gem.gz``, also ``.txt`` / ``.tsv`` with or without ``.gz``), tab-separated, after optional
``#`` header lines (``#FileFormat=GEMv0.1``, ``#BinSize=1``, ``#OffsetX=...``, ``#OffsetY=...``, ...): one row per
(gene, DNB) with columns ``geneID`` (optionally ``geneName``), ``x``, ``y`` (DNB indices) and the count
(``MIDCount``; also spelt ``MIDCounts`` or ``UMICount``); ``ExonCount`` is ignored. A cell-bin GEM also has
``CellID`` (or ``label``): then each cell is one observation (cell id 0 = outside every cell, left out). A folder
holding one GEM file is accepted. GEF (HDF5) is not read: export a GEM with SAW or stereopy.

Square bins: DNBs are grouped into ``bin_size`` x ``bin_size`` squares anchored at DNB 0; a bin's position is the
centre of its DNBs, ``(bx * bin_size + (bin_size - 1) / 2) * 0.5 µm``. Cell bins: the mean position of the cell's
distinct DNBs. The DNB pitch is 0.5 µm, so the default ``bin_size=50`` gives 25 µm bins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics.io._common import (
    build_anndata,
    existing_path,
    find_column,
    make_unique,
    numeric_column,
    read_frame,
    require_columns,
    stamp_provenance,
)
from spatialmultiomics.io._constants import StereoseqColumns, StereoseqFiles

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["stereoseq"]


def _gem_path(path: Path) -> Path:
    existing_path(path)
    if path.is_dir():
        hits = sorted({p for pat in StereoseqFiles.GEM_PATTERNS for p in path.glob(pat) if p.is_file()})
        if len(hits) != 1:
            gefs = sorted(p.name for p in path.glob("*.gef"))
            what = f"{len(hits)} GEM files ({[p.name for p in hits][:6]})" if hits else "no GEM file (*.gem, *.gem.gz)"
            extra = f"; GEF files {gefs} are not read: export a GEM with SAW or stereopy" if gefs and not hits else ""
            msg = f"{path}: expected exactly one GEM file, found {what}{extra}; pass the file itself."
            raise InputError(msg)
        return hits[0]
    if path.suffix.lower() in StereoseqFiles.GEF_SUFFIXES:
        msg = f"{path}: GEF (HDF5) files are not read; export a GEM file with SAW (gefTools) or stereopy and pass it."
        raise InputError(msg)
    return path


def _header(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.lstrip("#").strip().partition("=")
        if sep and key:
            out[key.strip()] = value.strip()
    return out


def _integral(values: np.ndarray, column: str, path: Path) -> np.ndarray:
    if not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        msg = f"{path}: column {column!r} has {n_bad} missing (NaN) or infinite values."
        raise InputError(msg)
    return values


def _codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and the categories of a (categorical or text) column, categories in first-seen order."""
    col = frame[column]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        cats = np.asarray(col.cat.categories).astype(str)
        if (codes < 0).any():
            cats = np.append(cats, "")
            codes = np.where(codes < 0, cats.size - 1, codes)
        return codes.astype(np.int64), cats
    codes, uniq = pd.factorize(col.astype(str), sort=False)
    return codes.astype(np.int64), np.asarray(uniq).astype(str)


def _sorted_factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, sorted unique keys), hashing instead of sorting the whole array."""
    codes, uniq = pd.factorize(keys, sort=False)
    order = np.argsort(uniq, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[codes], np.asarray(uniq)[order]


def stereoseq(path: str | Path, *, bin_size: int = 50, cell_bins: bool | None = None) -> ad.AnnData:
    """Read a Stereo-seq GEM file into an AnnData of square bins (or cell bins) with coordinates in µm.

    Parameters
    ----------
    path
        A GEM file or a folder holding one.
    bin_size
        Side of the square bins in DNBs (0.5 µm each); 50 gives 25 µm bins, 1 keeps every DNB.
    cell_bins
        Aggregate by the ``CellID`` / ``label`` column into cells. Default: when the column exists.

    Returns
    -------
    AnnData: ``X`` CSR float32 counts (bins or cells x genes); ``var_names`` ``geneName`` when the GEM has it
    (repeats made unique) else ``geneID``, ``var['gene_ids']``; ``obs`` ``bin_x``, ``bin_y`` (bin indices) for
    square bins, ``n_dnb`` (distinct DNBs) for cells; ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']`` with
    the GEM header (``FileFormat``, offsets, chip), the bin size and the DNB pitch.
    """
    import pyarrow as pa

    from spatialmultiomics._validate import check_positive_int

    b = check_positive_int(bin_size, name="bin_size")
    gem = _gem_path(Path(path))
    dict_type = pa.dictionary(pa.int32(), pa.string())
    dtypes: dict[str, Any] = {}
    for name in (*StereoseqColumns.GENE, *StereoseqColumns.GENE_NAME, *StereoseqColumns.CELL):
        dtypes[name] = dict_type
    for name in (*StereoseqColumns.X, *StereoseqColumns.Y):
        dtypes[name] = pa.int64()
    frame, comments = read_frame(gem, sep="\t", comment_prefix="#", dtypes=dtypes)
    header = _header(comments)
    columns = list(frame.columns)
    cols = require_columns(
        columns,
        {
            "gene": StereoseqColumns.GENE,
            "x": StereoseqColumns.X,
            "y": StereoseqColumns.Y,
            "count": StereoseqColumns.COUNT,
        },
        path=gem,
        what="GEM file",
    )
    cell_col = find_column(columns, StereoseqColumns.CELL)
    name_col = find_column(columns, StereoseqColumns.GENE_NAME)
    if cell_bins is None:
        cell_bins = cell_col is not None
    elif cell_bins and cell_col is None:
        msg = f"{gem}: cell_bins=True needs a cell id column ({' / '.join(StereoseqColumns.CELL)}); columns are {columns}."
        raise InputError(msg)

    x = _integral(numeric_column(frame, cols["x"], gem), cols["x"], gem)
    y = _integral(numeric_column(frame, cols["y"], gem), cols["y"], gem)
    counts = _integral(numeric_column(frame, cols["count"], gem), cols["count"], gem)
    if (counts < 0).any():
        msg = f"{gem}: column {cols['count']!r} has {int((counts < 0).sum())} negative counts; counts must be >= 0."
        raise InputError(msg)
    if (x < 0).any() or (y < 0).any():
        msg = f"{gem}: negative DNB coordinates in {cols['x']!r} / {cols['y']!r}; GEM coordinates are >= 0."
        raise InputError(msg)
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    gene_codes, gene_ids = _codes(frame, cols["gene"])
    var = pd.DataFrame({"gene_ids": gene_ids})
    var_names = list(gene_ids)
    if name_col is not None:
        name_codes, name_cats = _codes(frame, name_col)
        first = np.full(gene_ids.size, -1, dtype=np.int64)
        # the name of each gene id: its first row's name
        order = np.arange(gene_codes.size)[::-1]
        first[gene_codes[order]] = name_codes[order]
        var_names = make_unique(list(name_cats[first]))
    pitch = StereoseqColumns.DNB_PITCH_UM
    extra: dict[str, Any] = {"gem_header": header, "dnb_pitch_um": pitch, "count_column": cols["count"]}
    if cell_bins:
        cell_codes, cell_cats = _codes(frame, cell_col)  # type: ignore[arg-type]
        background = np.isin(cell_cats, ["0", "", "0.0"])
        keep = ~background[cell_codes]
        if not keep.all():
            logger.info("%s: %d rows outside every cell (cell id 0) left out.", gem.name, int((~keep).sum()))
        cell_codes, gc, xi_k, yi_k, cnt = cell_codes[keep], gene_codes[keep], xi[keep], yi[keep], counts[keep]
        obs_codes, obs_cells = _sorted_factorize(cell_codes)
        names = cell_cats[obs_cells]
        # distinct DNBs per cell: mean position and number
        span = int(yi_k.max()) + 1 if yi_k.size else 1
        dnb = xi_k * span + yi_k
        pair = obs_codes * (int(dnb.max()) + 1 if dnb.size else 1) + dnb
        _, first_idx = np.unique(pair, return_index=True)
        owner = obs_codes[first_idx]
        n = names.size
        n_dnb = np.bincount(owner, minlength=n)
        cx = np.bincount(owner, weights=xi_k[first_idx], minlength=n) / n_dnb
        cy = np.bincount(owner, weights=yi_k[first_idx], minlength=n) / n_dnb
        coords = np.column_stack([cx, cy]) * pitch
        obs = pd.DataFrame({"n_dnb": n_dnb.astype(np.int64)})
        rows, genes_k, values = obs_codes, gc, cnt
        extra["binning"] = f"cell bins ({cell_col})"
    else:
        bx, by = xi // b, yi // b
        key = bx * (int(by.max()) + 1 if by.size else 1) + by
        rows, uniq = _sorted_factorize(key)
        span = int(by.max()) + 1 if by.size else 1
        ubx, uby = uniq // span, uniq % span
        names = np.array([f"bin{b}_{i}_{j}" for i, j in zip(ubx.tolist(), uby.tolist(), strict=True)], dtype=object)
        centre = (b - 1) / 2.0
        coords = np.column_stack([ubx * b + centre, uby * b + centre]) * pitch
        obs = pd.DataFrame({"bin_x": ubx.astype(np.int64), "bin_y": uby.astype(np.int64)})
        genes_k, values = gene_codes, counts
        extra["binning"] = f"square bins of {b} x {b} DNB ({b * pitch:g} µm)"
    X = sp.csr_matrix((values.astype(np.float32), (rows, genes_k)), shape=(names.size, gene_ids.size), dtype=np.float32)
    X.sum_duplicates()
    adata = build_anndata(X, obs_names=names, var_names=var_names, coords_um=coords, obs=obs, var=var, sparse=True)
    return stamp_provenance(
        adata,
        platform="stereoseq",
        reader="spatialmultiomics.io.stereoseq",
        version=header.get("FileFormat", "GEM (no FileFormat header)"),
        pixel_size_um=pitch,
        files=[gem],
        modality="rna",
        bin_size=b,
        **extra,
    )
