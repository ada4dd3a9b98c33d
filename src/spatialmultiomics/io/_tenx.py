"""10x Genomics feature-barcode matrices: the HDF5 file and the MEX (MatrixMarket) folder.

Shared by the Visium (Space Ranger) and Xenium (Xenium Onboard Analysis) readers. Both return a
:class:`TenxMatrix`: a CSR matrix of barcodes x features plus the barcode and feature tables, with every
structural problem of a corrupt file turned into a one-line :class:`InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics.io._common import find_file, open_text, short
from spatialmultiomics.io._constants import TenxH5

__all__ = ["TenxMatrix", "feature_kinds", "read_10x_h5", "read_10x_mex"]


@dataclass
class TenxMatrix:
    """A 10x matrix: ``X`` CSR (n_barcodes, n_features), barcodes, features (``id``, ``name``, ``feature_type``,
    and any further per-feature dataset), per-barcode extras, file attributes and the files read."""

    X: sp.csr_matrix
    barcodes: np.ndarray
    features: pd.DataFrame
    barcode_extra: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def select(self, mask: np.ndarray) -> tuple[sp.csr_matrix, pd.DataFrame]:
        """Columns (features) where ``mask`` is True: the matrix block and its feature rows."""
        if mask.all():  # every feature: no copy (a full-slide Visium HD matrix holds ~10^8 values)
            return self.X, self.features.reset_index(drop=True)
        idx = np.flatnonzero(mask)
        return self.X[:, idx].tocsr(), self.features.iloc[idx].reset_index(drop=True)


def _decode(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "SO":
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr], dtype=object)
    return arr.astype(str).astype(object)


def _attr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value)


def _check_csc(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_features: int, n_barcodes: int, path: Path
) -> None:
    problems = []
    if indptr.size != n_barcodes + 1:
        problems.append(f"indptr has {indptr.size} entries, shape says {n_barcodes} barcodes (+1)")
    elif indptr[0] != 0 or indptr[-1] != data.size or np.any(np.diff(indptr) < 0):
        problems.append("indptr is not a non-decreasing 0..nnz offset array")
    if indices.size != data.size:
        problems.append(f"indices ({indices.size}) and data ({data.size}) differ in length")
    elif indices.size and (indices.min() < 0 or indices.max() >= n_features):
        problems.append(f"feature indices outside 0..{n_features - 1}")
    if problems:
        msg = f"{path}: corrupt 10x matrix: {'; '.join(problems)}."
        raise InputError(msg)


def read_10x_h5(path: str | Path) -> TenxMatrix:
    """Read a 10x feature-barcode matrix HDF5 file (Cell Ranger >= 3 / Space Ranger / Xenium layout, and the
    Cell Ranger 2 one-group-per-genome layout).

    Parameters
    ----------
    path
        ``filtered_feature_bc_matrix.h5``, ``raw_probe_bc_matrix.h5``, ``cell_feature_matrix.h5``, ...

    Returns
    -------
    TenxMatrix with ``X`` (n_barcodes, n_features) CSR as stored (counts), barcodes, the feature table (every
    1-D per-feature dataset under ``features/``; ``feature_type`` defaults to ``'Gene Expression'``), per-barcode
    flag datasets (e.g. ``filtered_barcodes``) and the file's attributes (``software_version``, ...).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such file."
        raise InputError(msg)
    if path.stat().st_size == 0:
        msg = f"{path}: the file is empty; expected a 10x HDF5 feature-barcode matrix."
        raise InputError(msg)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        msg = f"{path}: not a readable HDF5 file ({short(err)}); expected a 10x feature-barcode matrix."
        raise InputError(msg) from err
    with handle as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if TenxH5.GROUP in f:
            group, v2 = f[TenxH5.GROUP], False
        else:
            groups = [k for k in f if isinstance(f[k], h5py.Group)]
            if not groups:
                msg = f"{path}: no 'matrix' group; not a 10x feature-barcode matrix (top-level keys: {list(f)[:10]})."
                raise InputError(msg)
            group, v2 = f[groups[0]], True
        needed = list(TenxH5.DATASETS) + (
            [TenxH5.V2_GENE_ID, TenxH5.V2_GENE_NAME]
            if v2
            else [f"{TenxH5.FEATURES}/{TenxH5.FEATURE_ID}", f"{TenxH5.FEATURES}/{TenxH5.FEATURE_NAME}"]
        )
        missing = [k for k in needed if k not in group]
        if missing:
            msg = f"{path}: 10x matrix group {group.name!r} lacks dataset(s) {missing}; the file is incomplete or not a 10x matrix."
            raise InputError(msg)
        try:
            data = group["data"][()]
            indices = group["indices"][()].astype(np.int64, copy=False)
            indptr = group["indptr"][()].astype(np.int64, copy=False)
            shape = tuple(int(s) for s in group["shape"][()])
            barcodes = _decode(group["barcodes"][()])
            if v2:
                features = pd.DataFrame(
                    {
                        TenxH5.FEATURE_ID: _decode(group[TenxH5.V2_GENE_ID][()]),
                        TenxH5.FEATURE_NAME: _decode(group[TenxH5.V2_GENE_NAME][()]),
                        TenxH5.FEATURE_TYPE: TenxH5.GENE_EXPRESSION,
                    }
                )
                attrs.setdefault("version", "2")
            else:
                fg = group[TenxH5.FEATURES]
                n_feat = shape[0] if len(shape) == 2 else -1
                cols: dict[str, np.ndarray] = {}
                for key in fg:
                    ds = fg[key]
                    if (
                        not key.startswith("_")
                        and isinstance(ds, h5py.Dataset)
                        and ds.ndim == 1
                        and ds.shape[0] == n_feat
                    ):
                        values = ds[()]
                        cols[key] = _decode(values) if values.dtype.kind in "SO" else values
                features = pd.DataFrame(cols)
                if TenxH5.FEATURE_TYPE not in features:
                    features[TenxH5.FEATURE_TYPE] = TenxH5.GENE_EXPRESSION
            extra = {}
            for key in group:
                ds = group[key]
                if (
                    key not in TenxH5.DATASETS
                    and isinstance(ds, h5py.Dataset)
                    and ds.ndim == 1
                    and ds.shape[0] == barcodes.size
                ):
                    extra[key] = ds[()]
        except (OSError, KeyError, ValueError, TypeError) as err:
            msg = f"{path}: corrupt 10x HDF5 matrix ({type(err).__name__}: {short(err)})."
            raise InputError(msg) from err
    if len(shape) != 2 or shape[1] != barcodes.size or shape[0] != len(features):
        msg = (
            f"{path}: corrupt 10x matrix: shape {shape} does not match {barcodes.size} barcodes x "
            f"{len(features)} features."
        )
        raise InputError(msg)
    n_features, n_barcodes = shape
    _check_csc(data, indices, indptr, n_features, n_barcodes, path)
    X = sp.csr_matrix((data.astype(np.float32, copy=False), indices, indptr), shape=(n_barcodes, n_features))
    attrs.setdefault("format", "10x HDF5 v2" if v2 else "10x HDF5 v3")
    return TenxMatrix(X=X, barcodes=barcodes, features=features, barcode_extra=extra, attrs=attrs, files=[path])


def _read_lines_table(path: Path, n_min: int) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, compression="infer")
    except pd.errors.EmptyDataError:
        msg = f"{path}: the file is empty."
        raise InputError(msg) from None
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as err:
        msg = f"{path}: cannot be read ({type(err).__name__}: {short(err)})."
        raise InputError(msg) from err
    if frame.shape[1] < n_min:
        msg = f"{path}: expected at least {n_min} tab-separated columns, found {frame.shape[1]}."
        raise InputError(msg)
    return frame


def _read_mtx(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Coordinate MatrixMarket: (rows, cols, values, shape), 0-based."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    n_header = 0
    size_line = None
    with open_text(path) as handle:
        first = handle.readline()
        if not first.startswith("%%MatrixMarket") or "coordinate" not in first.lower():
            msg = f"{path}: not a coordinate MatrixMarket file (first line {short(first, 80)!r})."
            raise InputError(msg)
        n_header = 1
        for line in handle:
            n_header += 1
            if not line.startswith("%"):
                size_line = line
                break
    try:
        n_rows, n_cols, nnz = (int(v) for v in (size_line or "").split())
    except ValueError:
        msg = f"{path}: MatrixMarket size line missing or malformed ({short(size_line or '', 80)!r})."
        raise InputError(msg) from None
    if nnz == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32), (n_rows, n_cols)
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(skip_rows=n_header, column_names=["r", "c", "v"]),
            parse_options=pacsv.ParseOptions(delimiter=" "),
            convert_options=pacsv.ConvertOptions(column_types={"r": pa.int64(), "c": pa.int64(), "v": pa.float64()}),
        )
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        msg = f"{path}: corrupt MatrixMarket entries ({short(err)})."
        raise InputError(msg) from err
    rows = table.column("r").to_numpy() - 1
    cols = table.column("c").to_numpy() - 1
    vals = table.column("v").to_numpy().astype(np.float32)
    if rows.size != nnz:
        msg = f"{path}: header announces {nnz} entries but the file has {rows.size}; the file is truncated or corrupt."
        raise InputError(msg)
    if rows.min() < 0 or rows.max() >= n_rows or cols.min() < 0 or cols.max() >= n_cols:
        msg = f"{path}: entries outside the announced {n_rows} x {n_cols} matrix."
        raise InputError(msg)
    return rows, cols, vals, (n_rows, n_cols)


def read_10x_mex(folder: str | Path) -> TenxMatrix:
    """Read a 10x MEX folder: ``matrix.mtx(.gz)`` (features x barcodes), ``barcodes.tsv(.gz)`` and
    ``features.tsv(.gz)`` (id, name, feature_type; Cell Ranger >= 3) or ``genes.tsv`` (id, name; Cell Ranger 2).

    Returns
    -------
    TenxMatrix with ``X`` (n_barcodes, n_features) CSR.
    """
    folder = Path(folder)
    found = {
        "matrix": find_file(folder, TenxH5.MEX_MATRIX, kind="file"),
        "barcodes": find_file(folder, TenxH5.MEX_BARCODES, kind="file"),
        "features": find_file(folder, TenxH5.MEX_FEATURES, kind="file"),
    }
    missing = [
        " or ".join(c)
        for c, k in (
            (TenxH5.MEX_MATRIX, "matrix"),
            (TenxH5.MEX_BARCODES, "barcodes"),
            (TenxH5.MEX_FEATURES, "features"),
        )
        if found[k] is None
    ]
    if missing:
        msg = f"{folder}: not a complete 10x MEX matrix folder; missing {'; '.join(missing)}."
        raise InputError(msg)
    mtx, bc_path, feat_path = found["matrix"], found["barcodes"], found["features"]
    rows, cols, vals, (n_features, n_barcodes) = _read_mtx(mtx)
    barcodes = _read_lines_table(bc_path, 1).iloc[:, 0].to_numpy(dtype=object)
    feat = _read_lines_table(feat_path, 1)
    features = pd.DataFrame({TenxH5.FEATURE_ID: feat.iloc[:, 0].to_numpy(dtype=object)})
    features[TenxH5.FEATURE_NAME] = (
        feat.iloc[:, 1].to_numpy(dtype=object) if feat.shape[1] > 1 else features[TenxH5.FEATURE_ID]
    )
    features[TenxH5.FEATURE_TYPE] = (
        feat.iloc[:, 2].to_numpy(dtype=object) if feat.shape[1] > 2 else TenxH5.GENE_EXPRESSION
    )
    if barcodes.size != n_barcodes or len(features) != n_features:
        msg = (
            f"{folder}: matrix.mtx is {n_features} features x {n_barcodes} barcodes but {feat_path.name} has "
            f"{len(features)} rows and {bc_path.name} has {barcodes.size}."
        )
        raise InputError(msg)
    X = sp.csr_matrix((vals, (cols, rows)), shape=(n_barcodes, n_features), dtype=np.float32)
    X.sum_duplicates()
    fmt = "10x MEX (features.tsv)" if "features" in feat_path.name else "10x MEX (genes.tsv, Cell Ranger 2)"
    return TenxMatrix(X=X, barcodes=barcodes, features=features, attrs={"format": fmt}, files=[mtx, bc_path, feat_path])


def feature_kinds(feature_types: np.ndarray | pd.Series) -> np.ndarray:
    """Kind of each feature from its 10x ``feature_type``: ``'rna'`` (Gene Expression), ``'protein'`` (Protein
    Expression, Antibody Capture) or ``'control'`` (negative-control probes and codewords, unassigned / blank /
    deprecated codewords, genomic controls, anything else)."""
    types = np.asarray(feature_types, dtype=object).astype(str)
    kinds = np.full(types.shape, "control", dtype=object)
    kinds[types == TenxH5.GENE_EXPRESSION] = "rna"
    kinds[np.isin(types, TenxH5.PROTEIN_TYPES)] = "protein"
    return kinds


def modality_block(
    tm: TenxMatrix, modality: str, *, path: Path | str
) -> tuple[sp.csr_matrix, pd.DataFrame, sp.csr_matrix, pd.DataFrame]:
    """The features of one ``modality`` (``'rna'`` or ``'protein'``) and the control features, as
    (X, features, X_controls, controls)."""
    kinds = feature_kinds(tm.features[TenxH5.FEATURE_TYPE])
    if modality not in ("rna", "protein"):
        msg = f"modality={modality!r}: a 10x matrix holds 'rna' (Gene Expression) and 'protein' features only."
        raise InputError(msg)
    mask = kinds == modality
    if not mask.any():
        present = sorted(set(tm.features[TenxH5.FEATURE_TYPE].astype(str)))
        msg = f"{path}: no {modality} features (feature types in the matrix: {present})."
        raise InputError(msg)
    X, feats = tm.select(mask)
    Xc, ctrl = tm.select(kinds == "control")
    return X, feats, Xc, ctrl
