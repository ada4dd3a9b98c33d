"""Stereo-seq: SAW GEM and GEF files -> square bins or cell bins, AnnData in µm.

Files read
----------
A GEM file (``.gem``, ``.gem.gz``, also ``.txt`` / ``.tsv`` with or without ``.gz``), tab-separated, after optional
``#`` header lines (``#FileFormat=GEMv0.1``, ``#BinSize=1``, ``#OffsetX=...``, ``#OffsetY=...``, ...): one row per
(gene, DNB) with columns ``geneID`` (optionally ``geneName``), ``x``, ``y`` (DNB indices) and the count
(``MIDCount``; also spelt ``MIDCounts`` or ``UMICount``); ``ExonCount`` is ignored. A cell-bin GEM also has
``CellID`` (or ``label``): then each cell is one observation (cell id 0 = outside every cell, left out).

A GEF file (``.gef``; geftools also writes ``.bgef`` / ``.cgef``), HDF5, read with h5py (no stereopy / gefpy):

* square-bin GEF (SAW ``*.raw.gef``, ``*.tissue.gef``, ``<SN>.gef``): ``/geneExp/bin1/gene``, a compound of the
  gene id (field ``gene``, 32- or 64-byte string, GEF < 4; ``geneID`` plus the symbol ``geneName`` from GEF 4),
  ``offset`` and ``count`` (uint32: the gene's records are ``expression[offset:offset + count]``), and
  ``/geneExp/bin1/expression``, a packed compound ``x``, ``y`` (int32 DNB coordinates) and ``count`` (uint8,
  uint16 or uint32 after the largest count) with attributes ``minX``, ``minY``, ``maxX``, ``maxY``, ``maxExp``,
  ``resolution`` (nm between DNBs, 500). Exon counts (dataset ``bin1/exon``) and the pre-binned ``binN`` levels,
  ``wholeExp`` and ``stat`` are not read: square bins are always built from ``bin1``, exactly as from a GEM.
  File attributes ``version``, ``geftool_ver``, ``omics``, ``bin_type`` (and ``sn``) go to the provenance.
* cell-bin GEF (SAW ``*.cellbin.gef``, ``*.adjusted.cellbin.gef``): ``/cellBin/cell``, a compound ``id``,
  ``x``, ``y`` (int32, the cell centre in DNB coordinates), ``offset`` (uint32), ``geneCount``, ``expCount``,
  ``dnbCount``, ``area``, ``cellTypeID``, ``clusterID`` (uint16); ``/cellBin/gene`` (``geneName``, 32-byte
  string before geftools 0.6, 64-byte after, plus ``geneID`` in newer files; ``offset``, ``cellCount``,
  ``expCount``, ``maxMIDcount``); ``/cellBin/cellExp``, cell-major records ``geneID`` (row index into ``gene``,
  uint16 before geftools 0.7.6, uint32 after) and ``count`` (uint16), a cell's records being
  ``cellExp[offset:offset + geneCount]``; ``/cellBin/geneExp`` (``cellID``, ``count``, the gene-major copy) and
  ``/cellBin/cellBorder`` (polygon offsets from the cell centre) are not needed. File attributes ``version``,
  ``resolution``, ``offsetX``, ``offsetY``, ``geftool_ver``, ``omics``. Each cell is one observation
  (geftools numbers cells from 0, so id 0 is a cell here).

Layouts taken from the STOmics sources (read, not copied): geftools ``gef.h`` / ``gef.cpp`` (compound types),
``bgef_writer.cpp`` (square-bin datasets and attributes, 32-byte gene names in BGIResearch/geftools, 64-byte in
STOmics/geftools 0.8), ``cgef_writer.cpp`` (cell-bin datasets and file attributes), ``geftogem.cpp`` (GEF -> GEM
export writes the GEF ``x``, ``y`` unchanged, so GEM and GEF share one coordinate frame); gefpy ``gef.pxd``
(``geneName`` / gene-id pair in newer cell-bin GEFs); Stereopy ``stereo/io`` and scripts reading GEF 4
(``geneID``, ``geneName``, ``offset``, ``count`` in ``/geneExp/bin1/gene``). The same data as a GEM and as a
square-bin GEF give the same AnnData (``X``, names, coordinates) when the GEM lists the genes in the GEF's order
(as SAW / geftools write it, gene by gene).

A folder holding exactly one GEM or GEF file is accepted.

Square bins: DNBs are grouped into ``bin_size`` x ``bin_size`` squares anchored at DNB 0; a bin's position is the
centre of its DNBs, ``(bx * bin_size + (bin_size - 1) / 2) * pitch``. Cell bins: GEM, the mean position of the
cell's distinct DNBs; GEF, the cell centre ``(x, y) * pitch``. The DNB pitch is 0.5 µm (a GEF's ``resolution``
attribute / 1000 when it has one), so the default ``bin_size=50`` gives 25 µm bins.
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
    check_unique_ids,
    existing_path,
    find_column,
    make_unique,
    numeric_column,
    read_frame,
    require_columns,
    short,
    stamp_provenance,
)
from spatialmultiomics.io._constants import StereoseqColumns, StereoseqFiles, StereoseqGef

if TYPE_CHECKING:
    import anndata as ad
    import h5py

__all__ = ["stereoseq"]

_READER = "spatialmultiomics.io.stereoseq"


def _found(files: list[Path], kind: str, patterns: tuple[str, ...]) -> str:
    if not files:
        return f"no {kind} file ({', '.join(patterns)})"
    return f"{len(files)} {kind} file{'s' if len(files) > 1 else ''} ({[p.name for p in files][:6]})"


def _input_path(path: Path) -> Path:
    """The GEM / GEF file itself, or the one GEM / GEF file of a folder."""
    existing_path(path)
    if not path.is_dir():
        return path
    gems = sorted({p for pat in StereoseqFiles.GEM_PATTERNS for p in path.glob(pat) if p.is_file()})
    gefs = sorted({p for pat in StereoseqFiles.GEF_PATTERNS for p in path.glob(pat) if p.is_file()})
    if len(gems) + len(gefs) != 1:
        msg = (
            f"{path}: expected exactly one GEM or GEF file, found "
            f"{_found(gems, 'GEM', StereoseqFiles.GEM_PATTERNS)} and {_found(gefs, 'GEF', StereoseqFiles.GEF_PATTERNS)}"
            "; pass the file itself."
        )
        raise InputError(msg)
    return (gems or gefs)[0]


def _is_gef(path: Path) -> bool:
    return path.suffix.lower() in StereoseqFiles.GEF_SUFFIXES


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


def _gene_var(gene_ids: np.ndarray, gene_names: np.ndarray | None) -> tuple[list[str], pd.DataFrame]:
    """var_names (the symbols, repeats made unique, else the ids) and ``var['gene_ids']``."""
    var = pd.DataFrame({"gene_ids": np.asarray(gene_ids).astype(str)})
    names = list(var["gene_ids"]) if gene_names is None else make_unique([str(n) for n in gene_names])
    return names, var


def _square_bins(
    xi: np.ndarray, yi: np.ndarray, b: int, pitch: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Row of each record, bin names, bin centres in µm and ``obs`` (``bin_x``, ``bin_y``) of square bins.

    Bins are sorted by (bin_x, bin_y), so the result depends on the set of DNBs only, not on the record order.
    """
    bx, by = xi // b, yi // b
    span = int(by.max()) + 1 if by.size else 1
    rows, uniq = _sorted_factorize(bx * span + by)
    ubx, uby = uniq // span, uniq % span
    names = np.array([f"bin{b}_{i}_{j}" for i, j in zip(ubx.tolist(), uby.tolist(), strict=True)], dtype=object)
    centre = (b - 1) / 2.0
    coords = np.column_stack([ubx * b + centre, uby * b + centre]) * pitch
    obs = pd.DataFrame({"bin_x": ubx.astype(np.int64), "bin_y": uby.astype(np.int64)})
    return rows, names, coords, obs


def _check_dnb(x: np.ndarray, y: np.ndarray, counts: np.ndarray, path: Path, what: tuple[str, str, str]) -> None:
    if (counts < 0).any():
        msg = f"{path}: {what[2]} has {int((counts < 0).sum())} negative counts; counts must be >= 0."
        raise InputError(msg)
    if (x < 0).any() or (y < 0).any():
        msg = f"{path}: negative DNB coordinates in {what[0]} / {what[1]}; Stereo-seq coordinates are >= 0."
        raise InputError(msg)


def _matrix(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    X = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape, dtype=np.float32)
    X.sum_duplicates()
    return X


def stereoseq(path: str | Path, *, bin_size: int = 50, cell_bins: bool | None = None) -> ad.AnnData:
    """Read a Stereo-seq GEM or GEF file into an AnnData of square bins (or cell bins) with coordinates in µm.

    Parameters
    ----------
    path
        A GEM file (``.gem``, ``.gem.gz``, ``.txt``, ``.tsv``), a GEF file (``.gef``, ``.bgef``, ``.cgef``:
        square-bin or cell-bin) or a folder holding exactly one of them.
    bin_size
        Side of the square bins in DNBs (0.5 µm each); 50 gives 25 µm bins, 1 keeps every DNB. Ignored for cell
        bins.
    cell_bins
        One observation per cell: a GEM's ``CellID`` / ``label`` column, a cell-bin GEF's ``/cellBin`` group.
        Default: when the file has them. ``True`` on a file without cells and ``False`` on a cell-bin GEF (which
        holds no DNB-level records) are errors.

    Returns
    -------
    AnnData: ``X`` CSR float32 counts (bins or cells x genes); ``var_names`` the gene symbols (GEM ``geneName``,
    GEF ``geneName``; repeats made unique) when the file has them, else the gene ids; ``var['gene_ids']``;
    ``obs`` ``bin_x``, ``bin_y`` (bin indices) for square bins, ``n_dnb`` (DNBs of the cell) for cells, plus
    ``area`` (polygon area in DNB², x pitch² for µm²) for GEF cells; ``obsm['spatial']`` (x, y) in µm;
    ``uns['provenance']`` with the GEM header or the GEF attributes, the bin size and the DNB pitch.
    """
    from spatialmultiomics._validate import check_positive_int

    b = check_positive_int(bin_size, name="bin_size")
    src = _input_path(Path(path))
    if _is_gef(src):
        return _read_gef(src, b, cell_bins)
    return _read_gem(src, b, cell_bins)


# ---------------------------------------------------------------------------------------------------------- GEM
def _read_gem(gem: Path, b: int, cell_bins: bool | None) -> ad.AnnData:
    import pyarrow as pa

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
    _check_dnb(x, y, counts, gem, (repr(cols["x"]), repr(cols["y"]), f"column {cols['count']!r}"))
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    gene_codes, gene_ids = _codes(frame, cols["gene"])
    gene_names = None
    if name_col is not None:
        name_codes, name_cats = _codes(frame, name_col)
        first = np.full(gene_ids.size, -1, dtype=np.int64)
        # the name of each gene id: its first row's name
        order = np.arange(gene_codes.size)[::-1]
        first[gene_codes[order]] = name_codes[order]
        gene_names = name_cats[first]
    var_names, var = _gene_var(gene_ids, gene_names)
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
        rows, names, coords, obs = _square_bins(xi, yi, b, pitch)
        genes_k, values = gene_codes, counts
        extra["binning"] = f"square bins of {b} x {b} DNB ({b * pitch:g} µm)"
    X = _matrix(rows, genes_k, values, (names.size, gene_ids.size))
    adata = build_anndata(X, obs_names=names, var_names=var_names, coords_um=coords, obs=obs, var=var, sparse=True)
    return stamp_provenance(
        adata,
        platform="stereoseq",
        reader=_READER,
        version=header.get("FileFormat", "GEM (no FileFormat header)"),
        pixel_size_um=pitch,
        files=[gem],
        modality="rna",
        bin_size=b,
        **extra,
    )


# ---------------------------------------------------------------------------------------------------------- GEF
def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain scalar / string / short list (storable in ``uns``), or None."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00").strip()
    if isinstance(value, str):
        return value.strip()
    arr = np.asarray(value)
    if arr.dtype.kind in "SOU":
        items = [_attr_value(v) for v in arr.ravel().tolist()]
        items = [v for v in items if v is not None]
        return items[0] if len(items) == 1 else items
    if arr.dtype.kind not in "biuf" or arr.size == 0 or arr.size > 16:
        return None
    items = arr.ravel().tolist()
    return items[0] if len(items) == 1 else items


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    out = {}
    for key in obj.attrs:
        try:
            value = _attr_value(obj.attrs[key])
        except (OSError, TypeError, ValueError):  # an attribute type h5py cannot read: not needed
            continue
        if value is not None:
            out[str(key)] = value
    return out


def _decode(values: np.ndarray) -> np.ndarray:
    """Fixed- or variable-length HDF5 strings as a str array, surrounding spaces removed (as in a GEM)."""
    if values.dtype.kind == "S":
        return np.char.strip(np.char.decode(values, "utf-8", errors="replace")).astype(object)
    return np.array(
        [(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)).strip() for v in values.tolist()],
        dtype=object,
    )


def _datasets(group: h5py.Group, names: tuple[str, ...], *, gef: Path) -> list[h5py.Dataset]:
    import h5py

    missing = [n for n in names if not isinstance(group.get(n, getlink=False), h5py.Dataset)]
    if missing:
        msg = f"{gef}: {group.name} lacks dataset(s) {missing}; it has {sorted(group.keys())}."
        raise InputError(msg)
    return [group[n] for n in names]


def _fields(
    ds: h5py.Dataset, spec: dict[str, tuple[str, ...]], *, gef: Path, optional: tuple[str, ...] = ()
) -> dict[str, str | None]:
    """Resolve role -> field of a compound dataset; one error names every missing role and the fields present."""
    present = tuple(ds.dtype.names or ())
    if not present:
        want = sorted({spellings[0] for spellings in spec.values()})
        msg = f"{gef}: {ds.name} is not a compound dataset (dtype {ds.dtype}); expected fields {want}."
        raise InputError(msg)
    out: dict[str, str | None] = {}
    missing = []
    for role, spellings in spec.items():
        hit = next((f for f in spellings if f in present), None)
        if hit is None and role not in optional:
            missing.append(f"{role} ({' / '.join(repr(f) for f in spellings)})")
        out[role] = hit
    if missing:
        msg = f"{gef}: {ds.name} lacks field(s) {', '.join(missing)}; its fields are {list(present)}."
        raise InputError(msg)
    return out


def _column(ds: h5py.Dataset, field: str) -> np.ndarray:
    return np.asarray(ds.fields(field)[()])


def _segments(
    offset: np.ndarray, length: np.ndarray, total: int, *, gef: Path, what: str, of: str
) -> tuple[np.ndarray | None, np.ndarray]:
    """Records ``[offset, offset + length)`` of every owner: (record index, owner index), checked in range and
    not overlapping; records no owner claims are left out (and logged). The record index is None when it is
    ``0, 1, 2, ...`` (owners stored one after the other)."""
    offset = offset.astype(np.int64)
    length = length.astype(np.int64)
    end = offset + length
    bad = (offset < 0) | (length < 0) | (end > total)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        msg = (
            f"{gef}: {what} points outside {of} ({int(bad.sum())} entries, e.g. row {i}: offset {int(offset[i])}, "
            f"count {int(length[i])}, but {of} has {total} records); the file is corrupt or truncated."
        )
        raise InputError(msg)
    used = length > 0
    starts, ends = offset[used], end[used]
    order = np.argsort(starts, kind="stable")
    if (starts[order][1:] < ends[order][:-1]).any():
        msg = f"{gef}: {what} has overlapping offset ranges into {of}; the file is corrupt."
        raise InputError(msg)
    owner = np.repeat(np.arange(offset.size, dtype=np.int64), length)
    first = np.cumsum(length) - length
    if owner.size == total and np.array_equal(offset[used], first[used]):
        return None, owner  # the usual layout: owner after owner, record order unchanged
    record = np.arange(owner.size, dtype=np.int64) - np.repeat(first, length) + offset[owner]
    if owner.size < total:
        logger.info("%s: %d records of %s belong to no entry of %s; left out.", gef.name, total - owner.size, of, what)
    return record, owner


def _take(values: np.ndarray, record: np.ndarray | None) -> np.ndarray:
    return values if record is None else values[record]


def _gef_version(attrs: dict[str, Any]) -> str:
    version = attrs.get("version")
    text = f"GEF {version}" if version is not None else "GEF (no version attribute)"
    tool = attrs.get("geftool_ver")
    if isinstance(tool, list) and tool:
        text += f" (geftools {'.'.join(str(v) for v in tool)})"
    return text


def _pitch_um(*candidates: dict[str, Any], gef: Path) -> float:
    """µm per DNB from the first positive ``resolution`` attribute (nm), else the 500 nm default."""
    for attrs in candidates:
        value = attrs.get(StereoseqGef.RESOLUTION)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value) / 1000.0
    logger.info("%s: no resolution attribute; DNB pitch %g nm assumed.", gef.name, StereoseqGef.DNB_PITCH_NM_DEFAULT)
    return StereoseqGef.DNB_PITCH_NM_DEFAULT / 1000.0


def _gene_fields(ds: h5py.Dataset, extra: dict[str, tuple[str, ...]], *, gef: Path) -> tuple[dict[str, Any], str]:
    """Fields of a gene dataset and the field giving the gene ids (``geneID`` / ``gene``, else ``geneName``)."""
    g = StereoseqGef
    fields = _fields(
        ds,
        {"gene": (*g.GENE_ID_FIELDS, *g.GENE_NAME_FIELDS), "name": g.GENE_NAME_FIELDS, **extra},
        gef=gef,
        optional=("name",),
    )
    present = tuple(ds.dtype.names or ())
    id_field = next((f for f in g.GENE_ID_FIELDS if f in present and ds.dtype[f].kind in "SUO"), None)
    return fields, id_field or str(fields["gene"])


def _read_gef(gef: Path, b: int, cell_bins: bool | None) -> ad.AnnData:
    import h5py

    try:
        handle = h5py.File(gef, "r")
    except OSError as err:
        msg = (
            f"{gef}: not a readable HDF5 file ({short(err)}); expected a Stereo-seq GEF (HDF5 with a /geneExp or "
            "/cellBin group) written by SAW or geftools."
        )
        raise InputError(msg) from err
    g = StereoseqGef
    with handle as h5:
        groups = sorted(h5.keys())
        has_square = isinstance(h5.get(g.SQUARE_GROUP, getlink=False), h5py.Group)
        has_cell = isinstance(h5.get(g.CELL_GROUP, getlink=False), h5py.Group)
        if not has_square and not has_cell:
            msg = (
                f"{gef}: no /{g.SQUARE_GROUP} (square-bin GEF) or /{g.CELL_GROUP} (cell-bin GEF) group; "
                f"the file has {groups}."
            )
            raise InputError(msg)
        if cell_bins is None:
            cell_bins = has_cell
        elif cell_bins and not has_cell:
            msg = (
                f"{gef}: cell_bins=True needs a cell-bin GEF (group /{g.CELL_GROUP}, SAW *.cellbin.gef); this is a "
                f"square-bin GEF (groups {groups})."
            )
            raise InputError(msg)
        elif not cell_bins and not has_square:
            msg = (
                f"{gef}: cell_bins=False needs a square-bin GEF (group /{g.SQUARE_GROUP}/{g.BIN1}); this is a "
                f"cell-bin GEF (groups {groups}) without DNB records: pass the chip's *.tissue.gef or *.raw.gef."
            )
            raise InputError(msg)
        try:
            parts = _gef_cells(h5, gef) if cell_bins else _gef_square(h5, gef, b)
        except OSError as err:
            msg = f"{gef}: could not read the GEF data ({short(err)}); the file is corrupt or truncated."
            raise InputError(msg) from err
    X, names, var_names, var, coords, obs, pitch, extra = parts
    adata = build_anndata(X, obs_names=names, var_names=var_names, coords_um=coords, obs=obs, var=var, sparse=True)
    return stamp_provenance(
        adata,
        platform="stereoseq",
        reader=_READER,
        version=_gef_version(extra["gef_attributes"]),
        pixel_size_um=pitch,
        files=[gef],
        modality="rna",
        bin_size=b,
        **extra,
    )


_Parts = tuple[sp.csr_matrix, np.ndarray, list[str], pd.DataFrame, np.ndarray, pd.DataFrame, float, dict[str, Any]]


def _gef_square(h5: h5py.File, gef: Path, b: int) -> _Parts:
    g = StereoseqGef
    group = h5[g.SQUARE_GROUP]
    if g.BIN1 not in group:
        msg = (
            f"{gef}: /{g.SQUARE_GROUP} has no {g.BIN1} level (it has {sorted(group.keys())}); square bins are built "
            f"from {g.BIN1}: export the GEF with bin 1 (SAW, or geftools bgef -b 1)."
        )
        raise InputError(msg)
    gene_ds, exp_ds = _datasets(group[g.BIN1], (g.GENE, g.EXPRESSION), gef=gef)
    gf, id_field = _gene_fields(gene_ds, {"offset": (g.OFFSET,), "count": (g.GENE_RECORDS,)}, gef=gef)
    ef = _fields(exp_ds, {"x": (g.X,), "y": (g.Y,), "count": (g.COUNT,)}, gef=gef)
    n_exp = int(exp_ds.shape[0]) if exp_ds.shape else 0
    if n_exp == 0 or gene_ds.shape in ((), (0,)):
        msg = f"{gef}: {exp_ds.name} has no expression records; at least one is needed."
        raise InputError(msg)
    gene_ids = _decode(_column(gene_ds, id_field))
    gene_names = _decode(_column(gene_ds, gf["name"])) if gf["name"] and gf["name"] != id_field else None
    record, gene_codes = _segments(
        _column(gene_ds, str(gf["offset"])),
        _column(gene_ds, str(gf["count"])),
        n_exp,
        gef=gef,
        what=f"{gene_ds.name} (offset, count)",
        of=exp_ds.name,
    )
    x = _take(_column(exp_ds, str(ef["x"])), record).astype(np.int64)
    y = _take(_column(exp_ds, str(ef["y"])), record).astype(np.int64)
    counts = _take(_column(exp_ds, str(ef["count"])), record)
    _check_dnb(x, y, counts, gef, (f"{exp_ds.name} 'x'", "'y'", f"{exp_ds.name} field 'count'"))
    exp_attrs = _attrs(exp_ds)
    file_attrs = _attrs(h5)
    pitch = _pitch_um(exp_attrs, file_attrs, gef=gef)
    rows, names, coords, obs = _square_bins(x, y, b, pitch)
    var_names, var = _gene_var(gene_ids, gene_names)
    X = _matrix(rows, gene_codes, counts, (names.size, gene_ids.size))
    extra = {
        "gef_attributes": file_attrs,
        "expression_attributes": exp_attrs,
        "gef_layout": f"square-bin GEF (/{g.SQUARE_GROUP}/{g.BIN1}: gene field {id_field!r})",
        "dnb_pitch_um": pitch,
        "binning": f"square bins of {b} x {b} DNB ({b * pitch:g} µm)",
    }
    return X, names, var_names, var, coords, obs, pitch, extra


def _gef_cells(h5: h5py.File, gef: Path) -> _Parts:
    g = StereoseqGef
    group = h5[g.CELL_GROUP]
    cell_ds, gene_ds, cexp_ds = _datasets(group, (g.CELL, g.GENE, g.CELL_EXP), gef=gef)
    cf = _fields(
        cell_ds,
        {
            "x": (g.X,),
            "y": (g.Y,),
            "offset": (g.OFFSET,),
            "gene count": (g.CELL_GENES,),
            "id": (g.CELL_ID,),
            "dnb count": (g.CELL_DNB,),
            "area": (g.CELL_AREA,),
        },
        gef=gef,
        optional=("id", "dnb count", "area"),
    )
    gf, id_field = _gene_fields(gene_ds, {}, gef=gef)
    xf = _fields(cexp_ds, {"gene index": (g.CELL_EXP_GENE,), "count": (g.COUNT,)}, gef=gef)
    n_cells = int(cell_ds.shape[0]) if cell_ds.shape else 0
    n_genes = int(gene_ds.shape[0]) if gene_ds.shape else 0
    n_rec = int(cexp_ds.shape[0]) if cexp_ds.shape else 0
    if n_cells == 0:
        msg = f"{gef}: {cell_ds.name} has no cells; at least one is needed."
        raise InputError(msg)
    gene_ids = _decode(_column(gene_ds, id_field))
    gene_names = _decode(_column(gene_ds, gf["name"])) if gf["name"] and gf["name"] != id_field else None
    record, rows = _segments(
        _column(cell_ds, str(cf["offset"])),
        _column(cell_ds, str(cf["gene count"])),
        n_rec,
        gef=gef,
        what=f"{cell_ds.name} (offset, geneCount)",
        of=cexp_ds.name,
    )
    gene_index = _take(_column(cexp_ds, str(xf["gene index"])), record).astype(np.int64)
    counts = _take(_column(cexp_ds, str(xf["count"])), record)
    if gene_index.size and (gene_index.min() < 0 or gene_index.max() >= n_genes):
        bad = int(((gene_index < 0) | (gene_index >= n_genes)).sum())
        msg = (
            f"{gef}: {cexp_ds.name} field 'geneID' has {bad} gene indices outside {gene_ds.name} "
            f"(0..{n_genes - 1}); the file is corrupt."
        )
        raise InputError(msg)
    if (counts < 0).any():
        msg = f"{gef}: {cexp_ds.name} field 'count' has {int((counts < 0).sum())} negative counts; counts must be >= 0."
        raise InputError(msg)
    ids = _column(cell_ds, str(cf["id"])) if cf["id"] else np.arange(n_cells)
    names = np.asarray(check_unique_ids(ids.astype(str), path=gef, column=f"{cell_ds.name} {cf['id'] or 'row'}"))
    file_attrs = _attrs(h5)
    pitch = _pitch_um(file_attrs, _attrs(cell_ds), gef=gef)
    xy = np.column_stack([_column(cell_ds, str(cf["x"])), _column(cell_ds, str(cf["y"]))]).astype(np.float64)
    obs = pd.DataFrame(index=pd.RangeIndex(n_cells))
    if cf["dnb count"]:
        obs["n_dnb"] = _column(cell_ds, str(cf["dnb count"])).astype(np.int64)
    if cf["area"]:
        obs["area"] = _column(cell_ds, str(cf["area"])).astype(np.float64)
    var_names, var = _gene_var(gene_ids, gene_names)
    X = _matrix(rows, gene_index, counts, (n_cells, n_genes))
    extra = {
        "gef_attributes": file_attrs,
        "gef_layout": f"cell-bin GEF (/{g.CELL_GROUP}: {g.CELL}, {g.GENE} field {id_field!r}, {g.CELL_EXP})",
        "dnb_pitch_um": pitch,
        "binning": f"cell bins (/{g.CELL_GROUP}/{g.CELL})",
    }
    return X, names, var_names, var, xy * pitch, obs, pitch, extra
