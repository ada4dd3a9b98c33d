"""NanoString / Bruker CosMx SMI: flat files (AtoMx export and the public releases) -> AnnData in µm.

Files read
----------
- ``<run>_exprMat_file.csv`` (optionally ``.gz``): ``fov``, ``cell_ID``, then one column per target: counts for RNA
  panels, mean intensities for protein panels. ``cell_ID`` 0 holds the transcripts outside every cell (dropped,
  with a note). Negative probes (``NegPrb*``, ``Negative*``), system controls (``SystemControl*``) and false codes
  (``FalseCode*``), and for protein panels the isotype controls (``*IgG*``), are kept apart from the targets.
- ``<run>_metadata_file.csv``: ``fov``, ``cell_ID``, ``CenterX_global_px`` / ``CenterY_global_px`` (or
  ``CenterX_global_mm`` / ``_um``), ``Area``, stain means, ... Every other column goes to ``obs``.
- ``<run>_fov_positions_file.csv`` (optional): recorded in the provenance.

Coordinates: ``CenterX_global_px`` x ``pixel_size_um`` (0.120280945 µm, the SMI camera pixel) or the µm / mm
columns when the file has them; the FOV is kept as ``obs['tile_fov']`` (FOVs are tiles of one global frame). A file
with only FOV-local coordinates (``CenterX_local_px``) puts each FOV in its own frame (``obs['fov']``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.io._common import (
    _header_names,
    attach_controls,
    build_anndata,
    existing_path,
    find_column,
    find_file,
    open_text,
    read_frame,
    short,
    stamp_provenance,
)
from spatialmultiomics.io._constants import CosmxColumns, CosmxFiles

if TYPE_CHECKING:
    import anndata as ad
    import scipy.sparse as sp

__all__ = ["cosmx"]

_CHUNK = 1 << 26  # 64 MiB of CSV text per parsed piece
_BLOCK = 1 << 21  # pyarrow block within a piece: 32 blocks parsed in parallel
_SNIFF = 1 << 20  # text looked at to choose integer or float parsing


def _files(path: Path) -> tuple[Path, Path, Path | None]:
    """(expression matrix, metadata, FOV positions or None); one error lists every missing file."""
    folder = path.parent if path.is_file() else path
    prefix = ""
    if path.is_file():
        match = re.match(r"^(.*?)(exprMat|metadata|fov_positions)_file\.csv(\.gz)?$", path.name)
        if match is None:
            msg = f"{path}: not a CosMx flat file (expected *_exprMat_file.csv, *_metadata_file.csv or the folder)."
            raise InputError(msg)
        prefix = match.group(1)

    def pick(patterns: tuple[str, ...]) -> Path | None:
        return find_file(folder, tuple(prefix + p.lstrip("*") for p in patterns) if prefix else patterns, kind="file")

    expr, meta, fovs = pick(CosmxFiles.EXPRESSION), pick(CosmxFiles.METADATA), pick(CosmxFiles.FOV_POSITIONS)
    missing = [name for name, hit in (("*_exprMat_file.csv", expr), ("*_metadata_file.csv", meta)) if hit is None]
    if missing or expr is None or meta is None:
        present = sorted(p.name for p in folder.iterdir())[:15]
        msg = (
            f"{folder}: not a complete CosMx flat-file export; missing {'; '.join(missing)}. The folder has: {present}."
        )
        raise InputError(msg)
    return expr, meta, fovs


def _control_type(name: str, *, protein: bool) -> str | None:
    key = name.strip().lower()
    for prefix, kind in CosmxColumns.CONTROL_PREFIXES:
        if key.startswith(prefix):
            return kind
    if protein and CosmxColumns.ISOTYPE in key:
        return "Isotype Control"
    return None


def _read_expression(path: Path) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, list[str]]:
    """(fov, cell_ID, values CSR float32 (rows x targets), target names), parsed in 64 MiB pieces so a
    1M-cell x 1,000-target file never exists as one dense table."""
    import pyarrow as pa

    with open_text(path) as handle:
        header = handle.readline().rstrip("\r\n")
    if not header.strip():
        msg = f"{path}: the file is empty; expected fov, cell_ID and one column per target."
        raise InputError(msg)
    names = _header_names(header, ",")
    fov_col = find_column(names, CosmxColumns.FOV)
    id_col = find_column(names, CosmxColumns.CELL_ID)
    if fov_col is None or id_col is None:
        msg = f"{path}: expression matrix lacks column(s) {[n for n, c in (('fov', fov_col), ('cell_ID', id_col)) if c is None]}; its columns are {names[:8]} ..."
        raise InputError(msg)
    text_cols = {c for c in names if c in (fov_col, id_col) or c.strip().lower() in CosmxColumns.CELL}
    targets = [c for c in names if c not in text_cols]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        msg = f"{path}: duplicate column name {dup!r} in the header; every column needs its own name."
        raise InputError(msg)
    # counts (RNA panels) parse ~1.4x faster as 16-bit integers than as floats (less to write per value): chosen
    # from the first MiB of values; a fraction or a count above 32,767 further down re-reads the file as floats
    with open_text(path) as handle:
        handle.readline()
        sample = handle.read(_SNIFF)
    whole = re.search(r"[^0-9,\s-]", sample) is None
    value_type = pa.int16() if whole else pa.float32()
    types = dict.fromkeys(targets, value_type)
    types[fov_col] = pa.int64()
    types[id_col] = pa.int64()
    for c in text_cols - {fov_col, id_col}:
        types[c] = pa.string()
    try:
        return _parse_expression(path, names, types, fov_col, id_col, targets)
    except pa.ArrowInvalid as err:
        if not whole:
            raise _parse_error(path, names, err) from err
        logger.info("%s: values past the first MiB that are not 16-bit counts; parsing them as floats.", path.name)
    types.update({c: pa.float32() for c in targets})
    try:
        return _parse_expression(path, names, types, fov_col, id_col, targets)
    except pa.ArrowInvalid as err:
        raise _parse_error(path, names, err) from err


def _parse_error(path: Path, names: list[str], err: Exception) -> InputError:
    text = str(err)
    match = re.search(r"In CSV column #(\d+)", text)
    where = f"column {names[int(match.group(1))]!r}: " if match and int(match.group(1)) < len(names) else ""
    return InputError(f"{path}: cannot be parsed as a CosMx expression matrix ({where}{short(text, 160)}).")


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's data lines (header skipped) in pieces of about ``_CHUNK`` bytes that end at a line break; gzip,
    bz2 and xz files are decompressed on the fly."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    with opener(path, "rb") as handle:
        handle.readline()
        while True:
            piece = handle.read(_CHUNK)
            if not piece:
                return
            if not piece.endswith(b"\n"):
                piece += handle.readline()
            yield piece


def _parse_expression(
    path: Path, names: list[str], types: dict, fov_col: str, id_col: str, targets: list[str]
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, list[str]]:
    """Parse the matrix piece by piece (each piece with pyarrow's multi-threaded reader: the streaming reader uses
    one core), keeping only the non-zero values of each piece; memory stays ~ one dense piece + the sparse result."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import scipy.sparse as sp

    fovs, ids, blocks = [], [], []
    read_opts = pacsv.ReadOptions(column_names=names, block_size=_BLOCK)
    convert = pacsv.ConvertOptions(column_types=types)
    for piece in _chunks(path):
        table = pacsv.read_csv(pa.BufferReader(piece), read_options=read_opts, convert_options=convert)
        fovs.append(table.column(fov_col).to_numpy())
        ids.append(table.column(id_col).to_numpy())
        values = np.empty((len(targets), table.num_rows), dtype=np.float32)  # one target per row: contiguous fills
        for j, c in enumerate(targets):
            values[j] = table.column(c).to_numpy()
        del table
        if not np.isfinite(values).all():
            j = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            msg = (
                f"{path}: column {targets[j]!r} has missing or infinite values; counts and intensities must be numbers."
            )
            raise InputError(msg)
        if (values < 0).any():
            j = int(np.flatnonzero((values < 0).any(axis=1))[0])
            msg = f"{path}: column {targets[j]!r} has negative values; counts and intensities must be >= 0."
            raise InputError(msg)
        target, cell = np.nonzero(values)
        blocks.append(  # CSR of the cells x targets piece (a counting sort by cell, in scipy's C code)
            sp.csr_matrix((values[target, cell], (cell, target)), shape=(values.shape[1], len(targets)))
        )
    if not blocks:
        msg = f"{path}: has a header but no rows; at least one cell is needed."
        raise InputError(msg)
    X = sp.vstack(blocks, format="csr", dtype=np.float32)
    return np.concatenate(fovs), np.concatenate(ids), X, targets


def _coordinates(meta: pd.DataFrame, px: float, path: Path) -> tuple[np.ndarray, str, list[str], bool]:
    """(coordinates (n, 2) in µm, description, columns used, global frame?) from the metadata."""
    from spatialmultiomics.io._common import numeric_column

    cols = list(meta.columns)
    for xs, ys, scale, what in (
        (CosmxColumns.X_PX, CosmxColumns.Y_PX, px, f"global pixels x {px:g} µm"),
        (CosmxColumns.X_UM, CosmxColumns.Y_UM, 1.0, "global µm"),
        (CosmxColumns.X_MM, CosmxColumns.Y_MM, 1000.0, "global mm x 1000"),
        (
            CosmxColumns.X_LOCAL_PX,
            CosmxColumns.Y_LOCAL_PX,
            px,
            f"FOV-local pixels x {px:g} µm (each FOV its own frame)",
        ),
    ):
        xc, yc = find_column(cols, xs), find_column(cols, ys)
        if xc is not None and yc is not None:
            xy = np.column_stack([numeric_column(meta, xc, path), numeric_column(meta, yc, path)]) * scale
            return xy, what, [xc, yc], xs is not CosmxColumns.X_LOCAL_PX
    msg = (
        f"{path}: no cell coordinates: expected CenterX_global_px / CenterY_global_px (or CenterX_global_mm, "
        f"CenterX_local_px); its columns are {cols[:12]} ..."
    )
    raise InputError(msg)


def cosmx(
    path: str | Path,
    *,
    modality: str | None = None,
    pixel_size_um: float = CosmxColumns.PIXEL_SIZE_UM,
) -> ad.AnnData:
    """Read a CosMx SMI flat-file export (RNA or protein panel) into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        The folder holding the flat files, or one of them (its siblings with the same run prefix are used).
    modality
        ``'rna'`` or ``'protein'``; default from the values: whole numbers (counts) are an RNA panel, anything
        else (mean intensities) a protein panel.
    pixel_size_um
        µm per pixel of the ``*_px`` columns (0.120280945, the SMI camera pixel).

    Returns
    -------
    AnnData: ``X`` CSR float32 counts (RNA) or dense float32 intensities (protein), cells x targets; controls in
    ``obsm['control_counts']`` with ``uns['control_features']``; ``obs`` the metadata columns, ``fov`` as
    ``obs['tile_fov']`` (``obs['fov']`` with local coordinates), ``cell_ID``; ids ``<fov>_<cell_ID>``;
    ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']``.

    Examples
    --------
    >>> adata = smo.io.cosmx("Lung5_Rep1-Flat_files_and_images")  # doctest: +SKIP
    """
    from spatialmultiomics._validate import check_positive

    px = check_positive(pixel_size_um, name="pixel_size_um")
    if modality is not None and modality not in (Keys.RNA, Keys.PROTEIN):
        msg = f"modality={modality!r}: a CosMx panel is 'rna' or 'protein'."
        raise InputError(msg)
    path = existing_path(path)
    expr_path, meta_path, fov_path = _files(path)
    fov, cell_id, values, targets = _read_expression(expr_path)
    inside = cell_id != 0
    n_background = int((~inside).sum())
    if n_background:
        logger.info("%s: %d row(s) with cell_ID 0 (transcripts outside cells) dropped.", expr_path.name, n_background)
        fov, cell_id, values = fov[inside], cell_id[inside], values[inside]
    if modality is None:
        data = values.data
        modality = Keys.RNA if data.size == 0 or np.array_equal(data, np.round(data)) else Keys.PROTEIN
        logger.info(
            "%s: %s panel (values %s).",
            expr_path.name,
            modality.upper(),
            "are counts" if modality == Keys.RNA else "are intensities",
        )
    kinds = [_control_type(t, protein=modality == Keys.PROTEIN) for t in targets]
    is_control = np.array([k is not None for k in kinds], dtype=bool)
    if is_control.all():
        msg = f"{expr_path}: every column is a control ({targets[:5]} ...); no targets to read."
        raise InputError(msg)
    X = values[:, np.flatnonzero(~is_control)] if is_control.any() else values
    Xc = values[:, np.flatnonzero(is_control)]

    meta, _ = read_frame(meta_path, text_columns=lambda i, n: n.strip().lower() in CosmxColumns.CELL)
    mfov, mid = find_column(list(meta.columns), CosmxColumns.FOV), find_column(list(meta.columns), CosmxColumns.CELL_ID)
    if mfov is None or mid is None:
        msg = f"{meta_path}: metadata lacks column(s) {[n for n, c in (('fov', mfov), ('cell_ID', mid)) if c is None]}; its columns are {list(meta.columns)[:10]} ..."
        raise InputError(msg)
    meta_key = pd.Index(meta[mfov].to_numpy(np.int64) * (1 << 32) + meta[mid].to_numpy(np.int64))
    if not meta_key.is_unique:
        msg = f"{meta_path}: a (fov, cell_ID) pair appears twice; each cell needs one row."
        raise InputError(msg)
    rows = meta_key.get_indexer(fov.astype(np.int64) * (1 << 32) + cell_id.astype(np.int64))
    if (rows < 0).any():
        k = int(np.flatnonzero(rows < 0)[0])
        msg = (
            f"{meta_path}: {int((rows < 0).sum())} cells of the expression matrix are not in the metadata "
            f"(e.g. fov {fov[k]}, cell_ID {cell_id[k]}); the two files come from different exports."
        )
        raise InputError(msg)
    meta = meta.iloc[rows].reset_index(drop=True)
    coords, source, used, global_frame = _coordinates(meta, px, meta_path)
    obs = meta.drop(columns=[c for c in (*used, mfov, mid) if c in meta.columns])
    obs.insert(0, "cell_ID", cell_id)
    fov_text = fov.astype(str)
    obs.insert(0, "tile_fov" if global_frame else "fov_number", fov_text)
    ids = pd.Series(fov_text, dtype=object) + "_" + pd.Series(cell_id.astype(str), dtype=object)
    adata = build_anndata(
        X,
        obs_names=ids.to_numpy(),
        var_names=[t for t, c in zip(targets, is_control, strict=True) if not c],
        coords_um=coords,
        obs=obs,
        fov=None if global_frame else fov_text,
        sparse=modality == Keys.RNA,
    )
    attach_controls(
        adata, Xc, [t for t, c in zip(targets, is_control, strict=True) if c], [k for k in kinds if k is not None]
    )
    files = [expr_path, meta_path] + ([fov_path] if fov_path is not None else [])
    return stamp_provenance(
        adata,
        platform="cosmx",
        reader="spatialmultiomics.io.cosmx",
        version="CosMx SMI flat files",
        pixel_size_um=px,
        files=files,
        modality=modality,
        coordinates=source,
        columns={"x": used[0], "y": used[1], "fov": mfov, "cell_id": mid},
        background_rows_dropped=n_background,
    )
