"""Stream a vendor expression matrix into a zarr-backed AnnData, a block of cells at a time (whole slides, 10^7 cells).

:func:`stream_to_zarr` never holds the whole matrix: it reads ``chunk_cells`` cells, writes them as CSR rows of
anndata's on-disk ``csr_matrix`` encoding (the first block with :func:`anndata.io.write_elem`, the others appended
with :func:`anndata.io.sparse_dataset`), and goes on. The store is an ordinary AnnData zarr store:
:func:`anndata.read_zarr` reads it whole, and :func:`anndata.experimental.read_elem_lazy` opens ``X`` as a Dask
array of CSR chunks for the out-of-core factorization (``JointNMF(backend="dask")``, see ``docs/scale.md``).

Sources streamed:

- 10x feature-barcode HDF5 (Xenium ``cell_feature_matrix.h5``, Visium HD / Space Ranger / Cell Ranger
  ``*_feature_bc_matrix.h5``): barcodes are columns of a CSC matrix, so a block of cells is one contiguous slice
  of ``data`` / ``indices``; the features of one ``feature_type`` are kept (``'Gene Expression'`` by default).
- Cell-by-feature tables (``.csv``, ``.tsv``, optionally gzipped: MERSCOPE ``cell_by_gene.csv`` and the like):
  the first column is the cell id, every other column a feature count; read with pandas in blocks of rows.

Memory is O(chunk_cells x features) plus the cell ids (kept to write ``obs`` at the end) and, for 10x files, the
``indptr`` array (8 bytes a cell).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_positive, check_positive_int
from spatialmultiomics.io._common import make_unique
from spatialmultiomics.io._constants import TenxH5

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["StreamedStore", "stream_to_zarr"]

_TABLE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt", ".txt.gz")


@dataclass(frozen=True)
class StreamedStore:
    """What :func:`stream_to_zarr` wrote.

    Attributes
    ----------
    path
        The zarr store (an AnnData store).
    n_obs, n_vars, nnz
        Cells, features and stored values of ``X``.
    source
        The file read and its format.
    seconds
        Wall time.
    """

    path: Path
    n_obs: int
    n_vars: int
    nnz: int
    source: str
    seconds: float


def _tenx_blocks(path: Path, feature_type: str, chunk: int) -> tuple[pd.DataFrame, Iterator[tuple[Any, np.ndarray]]]:
    """The kept features and an iterator of (CSR block, barcodes) of a 10x HDF5 matrix, ``chunk`` barcodes each."""
    import h5py

    from spatialmultiomics.io._tenx import _decode

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        msg = f"{path}: not a readable HDF5 file ({err}); expected a 10x feature-barcode matrix."
        raise InputError(msg) from err
    if TenxH5.GROUP not in f or TenxH5.FEATURES not in f[TenxH5.GROUP]:
        f.close()
        msg = f"{path}: no 'matrix/features' group; stream_to_zarr reads 10x HDF5 files of Cell Ranger >= 3 layout."
        raise InputError(msg)
    group = f[TenxH5.GROUP]
    n_features, n_cells = (int(s) for s in group["shape"][()])
    fg = group[TenxH5.FEATURES]
    features = pd.DataFrame(
        {
            key: _decode(fg[key][()]) if fg[key].dtype.kind in "SO" else fg[key][()]
            for key in fg
            if not key.startswith("_") and isinstance(fg[key], h5py.Dataset) and fg[key].shape == (n_features,)
        }
    )
    if TenxH5.FEATURE_TYPE not in features:
        features[TenxH5.FEATURE_TYPE] = TenxH5.GENE_EXPRESSION
    keep = (features[TenxH5.FEATURE_TYPE].astype(str) == feature_type).to_numpy()
    if not keep.any():
        f.close()
        present = sorted(set(features[TenxH5.FEATURE_TYPE].astype(str)))
        msg = f"{path}: no feature of feature_type={feature_type!r} (feature types in the file: {present})."
        raise InputError(msg)
    columns = None if keep.all() else np.flatnonzero(keep)
    indptr = group["indptr"][()].astype(np.int64)
    if indptr.size != n_cells + 1:
        f.close()
        msg = f"{path}: corrupt 10x matrix: indptr has {indptr.size} entries for {n_cells} barcodes (+1)."
        raise InputError(msg)

    def blocks() -> Iterator[tuple[Any, np.ndarray]]:
        with f:
            for start in range(0, n_cells, chunk):
                stop = min(start + chunk, n_cells)
                lo, hi = int(indptr[start]), int(indptr[stop])
                X = sp.csr_matrix(
                    (
                        group["data"][lo:hi].astype(np.float32, copy=False),
                        group["indices"][lo:hi].astype(np.int64, copy=False),
                        indptr[start : stop + 1] - lo,
                    ),
                    shape=(stop - start, n_features),
                )
                if columns is not None:
                    X = X[:, columns].tocsr()
                X.sort_indices()
                yield X, _decode(group["barcodes"][start:stop])

    return features.loc[keep].reset_index(drop=True), blocks()


def _table_blocks(path: Path, chunk: int) -> tuple[pd.DataFrame, Iterator[tuple[Any, np.ndarray]]]:
    """The features and an iterator of (CSR block, cell ids) of a cell-by-feature table, ``chunk`` rows each."""
    sep = "\t" if ".tsv" in path.name else ","
    try:
        header = pd.read_csv(path, sep=sep, nrows=0)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        msg = f"{path}: not a readable {sep!r}-separated table ({err})."
        raise InputError(msg) from err
    columns = [str(c) for c in header.columns]
    if len(columns) < 2:
        msg = f"{path}: a cell-by-feature table needs a cell id column and at least one feature column, got {columns}."
        raise InputError(msg)
    features = pd.DataFrame({TenxH5.FEATURE_NAME: columns[1:]})

    def blocks() -> Iterator[tuple[Any, np.ndarray]]:
        with pd.read_csv(
            path, sep=sep, chunksize=chunk, index_col=0, dtype={columns[0]: str}, float_precision="round_trip"
        ) as reader:
            for n, frame in enumerate(reader):
                values = frame.to_numpy()
                if values.dtype.kind not in "iuf":
                    bad = [c for c in frame.columns if frame[c].dtype.kind not in "iuf"][:5]
                    rows = f"{n * chunk}-{n * chunk + len(frame)}"
                    msg = f"{path}: feature columns must be numbers; non-numeric {bad} in rows {rows}."
                    raise InputError(msg)
                yield sp.csr_matrix(values.astype(np.float32)), frame.index.astype(str).to_numpy(dtype=object)

    return features, blocks()


def _coordinates(path: Path, cells: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """The (x, y) of ``cells`` (µm) from a table with an id column and coordinate columns, in the cells' order."""
    from spatialmultiomics.io._common import find_column, read_frame
    from spatialmultiomics.io._table import ID_COLUMNS, X_COLUMNS, Y_COLUMNS

    if not path.is_file():
        msg = f"{path}: no such file (coordinates)."
        raise InputError(msg)
    frame, _ = read_frame(path, text_columns=lambda i, name: i == 0 or name.strip().lower() in ID_COLUMNS)
    columns = [str(c) for c in frame.columns]
    xcol, ycol = find_column(columns, X_COLUMNS), find_column(columns, Y_COLUMNS)
    idcol = find_column(columns, ID_COLUMNS) or columns[0]
    if xcol is None or ycol is None:
        msg = (
            f"{path}: no coordinate columns (x: one of {X_COLUMNS[:6]}..., y: {Y_COLUMNS[:6]}...); got {columns[:10]}."
        )
        raise InputError(msg)
    ids = pd.Index(frame[idcol].astype(str).to_numpy())
    if not ids.is_unique:
        msg = f"{path}: column {idcol!r} repeats cell ids; each cell needs one position."
        raise InputError(msg)
    where = ids.get_indexer(pd.Index(cells))
    if (where < 0).any():
        missing = cells[where < 0]
        msg = (
            f"{path}: {missing.size:,} of {cells.size:,} cells of the matrix have no row in column {idcol!r} "
            f"(e.g. {[str(c) for c in missing[:3]]})."
        )
        raise InputError(msg)
    xy = np.stack([frame[xcol].to_numpy(np.float64)[where], frame[ycol].to_numpy(np.float64)[where]], axis=1)
    return xy * float(pixel_size_um)


def stream_to_zarr(
    source: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    coordinates: str | os.PathLike[str] | None = None,
    pixel_size_um: float = 1.0,
    feature_type: str = TenxH5.GENE_EXPRESSION,
    chunk_cells: int = 65_536,
    overwrite: bool = False,
) -> StreamedStore:
    """Copy a vendor expression matrix into a zarr-backed AnnData, ``chunk_cells`` cells at a time.

    Parameters
    ----------
    source
        A 10x feature-barcode HDF5 file (``.h5``: Xenium, Visium HD, Space Ranger, Cell Ranger >= 3) or a
        cell-by-feature table (``.csv`` / ``.tsv``, gzipped or not; first column the cell id).
    store
        The zarr store to write (a folder ending in ``.zarr``). It is written under a temporary name and moved
        into place at the end, so an interrupted run leaves no half store.
    coordinates
        A table with the cells' positions, written to ``obsm['spatial']`` in the matrix's cell order: an id column
        (``cell_id``, ``cell``, ``barcode``, ... or the first column) and x / y columns under any of the names the
        table reader knows (``x_centroid`` / ``y_centroid`` of Xenium ``cells.csv.gz``, ``center_x`` /
        ``center_y`` of MERSCOPE ``cell_metadata.csv``, ...). Every cell of the matrix needs a row.
    pixel_size_um
        Multiplies the coordinates (1: they are in µm already).
    feature_type
        10x files: the features kept (``'Gene Expression'``; ``'Protein Expression'`` for the antibodies of a
        Xenium protein run, ``'Antibody Capture'`` for CITE-seq).
    chunk_cells
        Cells read and written at a time (memory O(chunk_cells x features)).
    overwrite
        Replace an existing ``store``; False (default) refuses.

    Returns
    -------
    :class:`StreamedStore`: the path and the counts written. ``X`` holds the values as stored (counts,
    float32), ``obs`` the cell ids, ``var`` the feature table (``var_names`` the feature names, made unique),
    ``obsm['spatial']`` the positions when ``coordinates`` is given, ``uns['provenance']`` the source.

    Examples
    --------
    >>> import anndata as ad, pathlib, tempfile
    >>> import spatialmultiomics as smo
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "cell_by_gene.csv").write_text("cell,CD3E,CD8A\\nc1,3,0\\nc2,0,5\\nc3,1,1\\n")
    >>> out = smo.io.stream_to_zarr(tmp / "cell_by_gene.csv", tmp / "cells.zarr", chunk_cells=2)
    >>> out.n_obs, out.nnz, ad.read_zarr(out.path).X.toarray().tolist()
    (3, 4, [[3.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    """
    import zarr
    from anndata.io import sparse_dataset, write_elem

    t0 = time.perf_counter()
    src = Path(source)
    out = Path(store)
    chunk = check_positive_int(chunk_cells, name="chunk_cells")
    check_positive(pixel_size_um, name="pixel_size_um")
    if not src.is_file():
        msg = f"{src}: no such file."
        raise InputError(msg)
    if coordinates is not None and not Path(coordinates).is_file():
        msg = f"{coordinates}: no such file (coordinates)."
        raise InputError(msg)
    if out.exists() and not overwrite:
        msg = f"{out}: the store exists; pass overwrite=True (--overwrite) to replace it."
        raise InputError(msg)
    name = src.name.lower()
    if name.endswith(".h5"):
        features, blocks = _tenx_blocks(src, feature_type, chunk)
        fmt = "10x HDF5"
    elif name.endswith(_TABLE_SUFFIXES):
        features, blocks = _table_blocks(src, chunk)
        fmt = "cell-by-feature table"
    else:
        msg = f"{src}: stream_to_zarr reads 10x HDF5 (.h5) and cell-by-feature tables ({', '.join(_TABLE_SUFFIXES)})."
        raise InputError(msg)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    ids: list[np.ndarray] = []
    n_obs = nnz = 0
    try:
        root = zarr.open_group(tmp, mode="w")
        for X, cells in blocks:
            if n_obs == 0:
                write_elem(root, "X", X, dataset_kwargs={"chunks": (1 << 20,), "shards": None})
                matrix = sparse_dataset(root["X"])
            else:
                matrix.append(X)
            ids.append(cells)
            n_obs += X.shape[0]
            nnz += X.nnz
            if n_obs % (chunk * 16) < chunk:
                logger.info("stream_to_zarr: %s cells written (%.0f s)", f"{n_obs:,}", time.perf_counter() - t0)
        if n_obs == 0:
            msg = f"{src}: no cell to write."
            raise InputError(msg)
        cell_ids = np.concatenate(ids).astype(str)
        var_names = make_unique([str(v) for v in features[TenxH5.FEATURE_NAME]])
        var = features.astype({c: str for c in features.columns if features[c].dtype == object})
        var.index = pd.Index(var_names)
        plain = {"shards": None}  # zarr v3 without shards (anndata warns unless told)
        write_elem(root, "obs", pd.DataFrame(index=pd.Index(cell_ids)), dataset_kwargs=plain)
        write_elem(root, "var", var, dataset_kwargs=plain)
        obsm = {} if coordinates is None else {"spatial": _coordinates(Path(coordinates), cell_ids, pixel_size_um)}
        write_elem(root, "obsm", obsm, dataset_kwargs=plain)
        for key in ("varm", "obsp", "varp", "layers"):
            write_elem(root, key, {}, dataset_kwargs=plain)
        provenance = {"source": str(src), "format": fmt, "feature_type": feature_type}
        write_elem(root, "uns", {"provenance": provenance}, dataset_kwargs=plain)
        root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    logger.info("stream_to_zarr: %s -> %s, %s cells x %d features, %.1f s", src, out, f"{n_obs:,}", len(var), seconds)
    return StreamedStore(out, n_obs, len(var), int(nnz), f"{src} ({fmt})", seconds)
