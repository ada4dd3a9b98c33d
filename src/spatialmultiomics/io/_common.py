"""Helpers shared by the platform readers: find files, read tables fast, check columns and values, build the
AnnData and stamp its provenance.

Every problem a user can fix becomes a one-line :class:`~spatialmultiomics._errors.InputError` that names the file,
what was found and what was expected; missing files and columns are all listed at once.
"""

from __future__ import annotations

import bz2
import csv
import difflib
import gzip
import lzma
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger

if TYPE_CHECKING:
    import anndata as ad
    import scipy.sparse as sp

__all__ = [
    "attach_controls",
    "build_anndata",
    "check_unique_ids",
    "column_key",
    "find_column",
    "find_file",
    "make_unique",
    "numeric_block",
    "numeric_column",
    "open_text",
    "read_frame",
    "require_columns",
    "require_files",
    "short",
    "stamp_provenance",
    "suffixes",
]

_COMPRESSIONS = (".gz", ".bz2", ".xz")
_PARQUET = (".parquet", ".pq")


# ----------------------------------------------------------------------------------------------------------- text
def short(text: object, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters (for error messages)."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def suffixes(path: str | Path) -> list[str]:
    """Lower-case suffixes of ``path`` without a trailing compression suffix (``a.csv.gz`` -> ``['.csv']``)."""
    sfx = [s.lower() for s in Path(path).suffixes]
    if sfx and sfx[-1] in _COMPRESSIONS:
        sfx = sfx[:-1]
    return sfx


def open_text(path: str | Path) -> TextIO:
    """Open a text file for reading, decompressing ``.gz`` / ``.bz2`` / ``.xz`` by suffix."""
    path = Path(path)
    last = path.suffix.lower()
    if last == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    if last == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    if last == ".xz":
        return lzma.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return path.open(encoding="utf-8-sig", errors="replace", newline="")


def _head(path: Path, comment_prefix: str | None) -> tuple[list[str], str | None]:
    """Leading comment lines (without newline) and the first other line (the header), or None when empty."""
    comments: list[str] = []
    try:
        with open_text(path) as handle:
            for line in handle:
                text = line.rstrip("\r\n")
                if comment_prefix is not None and text.startswith(comment_prefix):
                    comments.append(text)
                    continue
                if not text.strip():
                    continue
                return comments, text
    except (OSError, EOFError) as err:
        msg = f"{path}: cannot be read ({type(err).__name__}: {short(err)})."
        raise InputError(msg) from err
    return comments, None


def column_key(name: str) -> str:
    """Case- and spacing-insensitive key of a column name (``'Major Axis_Length'`` -> ``'majoraxislength'``)."""
    return re.sub(r"[\s_]+", "", str(name).strip().lower())


# ---------------------------------------------------------------------------------------------------------- files
def existing_path(path: str | Path, *, folder: bool = True) -> Path:
    """Return ``path`` as a Path, or raise a one-line InputError when nothing is there.

    With ``folder=False`` the path must be a file: a folder is refused with a message saying a table is expected.
    """
    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such file or folder." if folder else f"{path}: no such file."
        raise InputError(msg)
    if not folder and path.is_dir():
        msg = f"{path}: is a folder; expected a table file (CSV / TSV / parquet) or .h5ad."
        raise InputError(msg)
    return path


def find_file(folder: Path, candidates: Sequence[str], *, kind: str = "any") -> Path | None:
    """First entry of ``folder`` matching one of ``candidates`` (names or glob patterns, in order of preference).

    ``kind`` is ``'file'``, ``'dir'`` or ``'any'``.
    """
    for cand in candidates:
        hits = sorted(folder.glob(cand)) if any(ch in cand for ch in "*?[") else [folder / cand]
        for hit in hits:
            if (
                (kind == "file" and hit.is_file())
                or (kind == "dir" and hit.is_dir())
                or (kind == "any" and hit.exists())
            ):
                return hit
    return None


def require_files(
    folder: Path, layout: Mapping[str, tuple[Sequence[str], str]], *, platform: str
) -> dict[str, Path | None]:
    """Locate every file of a layout, raising one error that lists ALL the missing ones.

    Parameters
    ----------
    folder
        The output folder.
    layout
        role -> (candidate names or patterns relative to ``folder``, ``'file'`` / ``'dir'`` / ``'any'``). Roles whose
        name starts with ``'?'`` are optional: they map to None when absent instead of being reported.
    platform
        Human platform name for the message.
    """
    found: dict[str, Path | None] = {}
    missing = []
    for role, (candidates, kind) in layout.items():
        hit = find_file(folder, candidates, kind=kind)
        optional = role.startswith("?")
        found[role.lstrip("?")] = hit
        if hit is None and not optional:
            missing.append(" or ".join(candidates))
    if missing:
        present = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:15]
        msg = (
            f"{folder}: not a complete {platform} output; missing {len(missing)} file(s): {'; '.join(missing)}. "
            f"The folder has: {present}."
        )
        raise InputError(msg)
    return found


# -------------------------------------------------------------------------------------------------------- columns
def find_column(columns: Iterable[str], candidates: Sequence[str]) -> str | None:
    """The first column matching one of ``candidates`` (case-insensitive, surrounding spaces ignored)."""
    lower: dict[str, str] = {}
    for c in columns:
        lower.setdefault(str(c).strip().lower(), c)
    for cand in candidates:
        hit = lower.get(cand.strip().lower())
        if hit is not None:
            return hit
    return None


def require_columns(
    columns: Sequence[str], spec: Mapping[str, Sequence[str]], *, path: Path | str, what: str = "table"
) -> dict[str, str]:
    """Resolve role -> column for every role of ``spec``; one error names every missing role, the accepted
    spellings, the columns that exist and close matches (a misspelt header)."""
    resolved: dict[str, str] = {}
    for role, candidates in spec.items():
        hit = find_column(columns, candidates)
        if hit is not None:
            resolved[role] = hit
    missing: list[str] = []
    hints: list[str] = []
    free = [c for c in columns if c not in resolved.values()]
    lowered = [str(c).strip().lower() for c in free]
    for role, candidates in spec.items():
        if role in resolved:
            continue
        missing.append(f"{role} ({' / '.join(repr(c) for c in candidates[:6])})")
        for cand in candidates:
            close = difflib.get_close_matches(cand.lower(), lowered, n=1, cutoff=0.75)
            if close:
                hints.append(f"{free[lowered.index(close[0])]!r} for {cand!r}")
                break
    if missing:
        shown = [str(c) for c in columns[:15]]
        more = f" ... ({len(columns)} in all)" if len(columns) > 15 else ""
        hint = f"; did you mean {', '.join(hints)}?" if hints else "."
        msg = f"{path}: {what} lacks column(s) {', '.join(missing)}; its columns are {shown}{more}{hint}"
        raise InputError(msg)
    return resolved


# --------------------------------------------------------------------------------------------------------- tables
def _header_names(header: str, sep: str) -> list[str]:
    """Column names of a header line; empty cells become ``Unnamed: <i>`` and a repeated unnamed name gets a
    ``.1``, ``.2`` ... suffix, as pandas names them (ark cell tables carry ``,Unnamed: 0,`` from two round trips)."""
    names = next(csv.reader([header], delimiter=sep))
    if len(names) <= 1:
        return names
    names = [n if n.strip() else f"Unnamed: {i}" for i, n in enumerate(names)]
    taken = set(names)
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen and re.match(r"^Unnamed: \d+(\.\d+)*$", name):
            k = 1
            while f"{name}.{k}" in taken:
                k += 1
            names[i] = f"{name}.{k}"
            taken.add(names[i])
        seen.add(names[i])
    return names


def _read_csv(
    path: Path,
    *,
    sep: str | None,
    comment_prefix: str | None,
    text_columns: Callable[[int, str], bool] | None,
    dtypes: Mapping[str, Any] | None,
) -> tuple[pd.DataFrame, list[str]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    comments, header = _head(path, comment_prefix)
    if header is None:
        msg = f"{path}: the file is empty; expected a header line and one row per cell."
        raise InputError(msg)
    if sep is None:
        sep = "\t" if ("\t" in header or (suffixes(path) or [""])[-1] in (".tsv", ".tab")) else ","
    names = _header_names(header, sep)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            msg = f"{path}: duplicate column name {name!r} in the header; every column needs its own name."
            raise InputError(msg)
        seen.add(name)
    # skip every line before the first data row: comment lines, blank lines and the header
    n_skip = 0
    with open_text(path) as handle:
        for line in handle:
            n_skip += 1
            if line.rstrip("\r\n") == header:
                break
    read_opts = {"skip_rows": n_skip, "column_names": names}
    parse = pacsv.ParseOptions(delimiter=sep, newlines_in_values=False)
    kind = "TSV" if sep == "\t" else "CSV"
    block = 1 << 20
    table = None
    try:
        if path.suffix.lower() not in _COMPRESSIONS and path.stat().st_size <= block:
            # small file: one parse; its inferred types are those of the first block anyway
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(**read_opts),
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            )
            schema = table.schema
        else:
            with pacsv.open_csv(
                path, read_options=pacsv.ReadOptions(block_size=block, **read_opts), parse_options=parse
            ) as reader:
                schema = reader.schema
    except pa.ArrowInvalid as err:
        if "Empty CSV" not in str(err):
            msg = f"{path}: cannot be parsed as a {kind} table ({short(err)})."
            raise InputError(msg) from err
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in names}), comments
    except (OSError, EOFError) as err:
        msg = f"{path}: cannot be read ({type(err).__name__}: {short(err)})."
        raise InputError(msg) from err
    types: dict[str, Any] = {}
    for i, field in enumerate(schema):
        t = field.type
        if dtypes is not None and field.name in dtypes:
            types[field.name] = dtypes[field.name]
        elif (text_columns is not None and text_columns(i, field.name)) or not (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t) or pa.types.is_boolean(t)
        ):
            types[field.name] = pa.string()
        elif pa.types.is_integer(t):
            types[field.name] = pa.int64()
        elif not pa.types.is_boolean(t):
            types[field.name] = pa.float64()
    if table is not None:
        # reuse the single parse unless a column must be re-read as text (numbers cast to text lose formatting)
        for i, field in enumerate(table.schema):
            want = types.get(field.name)
            if want is None or want == field.type:
                continue
            if pa.types.is_floating(want) and (pa.types.is_integer(field.type) or pa.types.is_null(field.type)):
                table = table.set_column(i, field.name, table.column(i).cast(want))
            else:
                table = None
                break
    for _ in range(len(names) + 1):
        if table is not None:
            break
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=True, **read_opts),
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
            )
        except pa.ArrowInvalid as err:
            text = str(err)
            match = re.search(r"In CSV column #(\d+): CSV conversion error", text)
            if match and int(match.group(1)) < len(names):
                # a value later in the file does not fit the type guessed from its first rows: read it as text
                # and let the numeric checks name the offending value and row
                types[names[int(match.group(1))]] = pa.string()
                continue
            if "Empty CSV" in text:
                return pd.DataFrame({n: pd.Series([], dtype=object) for n in names}), comments
            msg = f"{path}: cannot be parsed as a {kind} table ({short(text)})."
            raise InputError(msg) from err
        except (OSError, EOFError) as err:
            msg = f"{path}: cannot be read ({type(err).__name__}: {short(err)})."
            raise InputError(msg) from err
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):  # surrounding spaces of text values (ids, labels) are not data
        if pa.types.is_string(field.type):
            table = table.set_column(i, field.name, pc.utf8_trim_whitespace(table.column(i)))
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    return frame, comments


def read_frame(
    path: str | Path,
    *,
    sep: str | None = None,
    comment_prefix: str | None = None,
    text_columns: Callable[[int, str], bool] | None = None,
    dtypes: Mapping[str, Any] | None = None,
    allow_empty: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV / TSV (optionally compressed) or parquet table with pyarrow's multi-threaded parser.

    Parameters
    ----------
    path
        The file. The separator is a tab when the header has one (or the suffix is ``.tsv``), else a comma.
    sep
        Force the separator.
    comment_prefix
        Leading lines starting with it (a GEM's ``#`` header) are skipped and returned.
    text_columns
        ``(index, name) -> bool``: columns to keep as text whatever they look like (ids: 19-digit cell ids must
        not go through float64). Other columns that look numeric in the first megabyte are parsed as numbers;
        a later value that is not a number turns that column into text, so the value checks can name it.
        Integer columns stay int64 (float64 when they have missing values); empty, ``NA``, ``NaN``, ``null`` are
        missing values, as in pandas.
    dtypes
        name -> pyarrow type, overriding the rules above.
    allow_empty
        Return a frame with no rows instead of raising for a header-only file.

    Returns
    -------
    The frame (string columns as ``object``, surrounding spaces removed) and the skipped comment lines.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{path}: no such file."
        raise InputError(msg)
    if path.stat().st_size == 0:
        msg = f"{path}: the file is empty; expected a header line and one row per cell."
        raise InputError(msg)
    sfx = suffixes(path)
    if sfx and sfx[-1] in _PARQUET:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:
            msg = f"{path}: not a readable parquet file ({type(err).__name__}: {short(err)})."
            raise InputError(msg) from err
        for i, field in enumerate(table.schema):
            if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
                table = table.set_column(i, field.name, pc.utf8_trim_whitespace(table.column(i)))
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
        frame.columns = [str(c) for c in frame.columns]
        comments: list[str] = []
    else:
        frame, comments = _read_csv(
            path, sep=sep, comment_prefix=comment_prefix, text_columns=text_columns, dtypes=dtypes
        )
    if len(frame) == 0 and not allow_empty:
        msg = f"{path}: has a header but no rows; at least one cell is needed."
        raise InputError(msg)
    return frame, comments


# --------------------------------------------------------------------------------------------------------- values
def numeric_column(frame: pd.DataFrame, column: str, path: Path | str) -> np.ndarray:
    """Column ``column`` as float64; a value that is not a number gives an error naming it and its row."""
    col = frame[column]
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.float64)
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(col.replace("", np.nan) if col.dtype == object else col, errors="coerce")
    bad = converted.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        msg = (
            f"{path}: column {column!r} has non-numeric values (e.g. {col.iloc[row]!r} in data row {row + 1}); "
            "feature and coordinate columns must be numbers."
        )
        raise InputError(msg)
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def numeric_block(
    frame: pd.DataFrame, columns: Sequence[str], path: Path | str, *, nonnegative: bool = True
) -> np.ndarray:
    """Columns ``columns`` as one float32 array (n_rows, n_columns), checked: numbers, finite, >= 0.

    The first column with a non-numeric, missing / infinite or negative value is named in a one-line error.
    """
    arrays = []
    for col in columns:
        series = frame[col]
        if pd.api.types.is_float_dtype(series) or pd.api.types.is_integer_dtype(series):
            arrays.append(series.to_numpy())
        else:
            arrays.append(numeric_column(frame, col, path))
    n = len(frame)
    out = np.empty((n, len(columns)), dtype=np.float32)
    step = 1 << 16  # fill row blocks that stay in cache: 3-4x faster than whole strided columns
    for start in range(0, n, step):
        stop = min(start + step, n)
        for j, values in enumerate(arrays):
            out[start:stop, j] = values[start:stop]
    finite = np.isfinite(out).all(axis=0)
    if not finite.all():
        j = int(np.flatnonzero(~finite)[0])
        n_bad = int((~np.isfinite(out[:, j])).sum())
        msg = f"{path}: column {columns[j]!r} has {n_bad} missing (NaN) or infinite values; fill or drop them first."
        raise InputError(msg)
    if nonnegative:
        neg = (out < 0).any(axis=0)
        if neg.any():
            j = int(np.flatnonzero(neg)[0])
            v = out[:, j]
            msg = (
                f"{path}: column {columns[j]!r} has {int((v < 0).sum())} negative values (min {v.min():.4g}); "
                "counts and intensities must be >= 0."
            )
            raise InputError(msg)
    return out


def check_unique_ids(ids: pd.Index | Sequence[str], *, path: Path | str, column: str) -> pd.Index:
    """``ids`` as a string Index; duplicates give an error with their number and an example."""
    index = pd.Index(np.asarray(ids, dtype=object).astype(str))
    if not index.is_unique:
        dup = index[index.duplicated()]
        msg = f"{path}: {dup.size} duplicate ids in column {column!r} (e.g. {dup[0]!r}); ids must be unique."
        raise InputError(msg)
    return index


def id_strings(values: pd.Series | np.ndarray) -> np.ndarray:
    """Ids as strings: bytes decoded, integral floats without ``.0`` (text from :func:`read_frame` is already
    trimmed)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64).astype(str)
    if arr.dtype.kind in "iu":
        return arr.astype(str)
    if arr.dtype.kind == "S" or (arr.size and isinstance(arr.flat[0], bytes)):
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr], dtype=object)
    return pd.Series(arr, dtype=object).astype(str).to_numpy(dtype=object)


def make_unique(names: Sequence[str]) -> list[str]:
    """Names made unique by suffixing repeats with ``-1``, ``-2``, ... (first occurrence unchanged)."""
    out = [str(n) for n in names]
    taken = set(out)
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for i, n in enumerate(out):
        if n not in seen:
            seen.add(n)
            continue
        k = counts.get(n, 0)
        while True:
            k += 1
            cand = f"{n}-{k}"
            if cand not in taken:
                break
        counts[n] = k
        taken.add(cand)
        out[i] = cand
    return out


# -------------------------------------------------------------------------------------------------------- anndata
def _clean_obs(obs: pd.DataFrame) -> pd.DataFrame:
    """Columns storable in .h5ad: strings as categoricals when repeated, everything else numeric or bool."""
    for col in list(obs.columns):
        series = obs[col]
        if series.dtype == object or pd.api.types.is_string_dtype(series):
            values = series.astype(str)
            obs[col] = pd.Categorical(values) if values.nunique() < max(2, 0.5 * len(values)) else values
    return obs


def build_anndata(
    X: np.ndarray | sp.spmatrix,
    *,
    obs_names: Sequence[str] | pd.Index,
    var_names: Sequence[str],
    coords_um: np.ndarray | None,
    obs: pd.DataFrame | None = None,
    var: pd.DataFrame | None = None,
    fov: Sequence[str] | np.ndarray | None = None,
    sparse: bool = False,
) -> ad.AnnData:
    """Assemble an AnnData: ``X`` float32 (CSR when ``sparse``), coordinates in ``obsm['spatial']`` (µm, (x, y)),
    ``obs['fov']`` (categorical) when given; repeated feature names are made unique (``-1`` suffix) and logged."""
    import anndata as ad
    import scipy.sparse as sp

    index = pd.Index(np.asarray(obs_names, dtype=object).astype(str))
    names = [str(v) for v in var_names]
    unique = make_unique(names)
    if unique != names:
        logger.info(
            "%d repeated feature names were made unique with a -1, -2 ... suffix.",
            sum(a != b for a, b in zip(unique, names, strict=True)),
        )
    obs = pd.DataFrame(index=index) if obs is None else _clean_obs(obs.set_axis(index, axis=0))
    if fov is not None:
        obs[Keys.FOV] = pd.Categorical(np.asarray(fov).astype(str))
    var = pd.DataFrame(index=pd.Index(unique)) if var is None else _clean_obs(var.set_axis(pd.Index(unique), axis=0))
    if sparse:
        X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32, copy=False)
        X.sort_indices()
    else:
        X = X.toarray() if sp.issparse(X) else X
        X = np.ascontiguousarray(X, dtype=np.float32)
    obs.index.name = None
    var.index.name = None
    adata = ad.AnnData(X=X, obs=obs, var=var)
    if coords_um is not None:
        coords = np.asarray(coords_um, dtype=np.float64)
        if not np.isfinite(coords).all():
            n_bad = int((~np.isfinite(coords)).any(axis=1).sum())
            msg = f"{n_bad} cells have missing or infinite coordinates; every cell needs x and y."
            raise InputError(msg)
        adata.obsm[Keys.SPATIAL] = coords
    return adata


def attach_controls(adata: ad.AnnData, X: np.ndarray | sp.spmatrix, names: Sequence[str], types: Sequence[str]) -> None:
    """Store control features apart from the measured ones: ``obsm['control_counts']`` (CSR float32, one column per
    control) and ``uns['control_features']`` (``name`` and ``feature_type`` lists); nothing when there are none."""
    import scipy.sparse as sp

    from spatialmultiomics.io._constants import CONTROL_FEATURES_KEY, CONTROL_KEY

    if len(names) == 0:
        return
    adata.obsm[CONTROL_KEY] = sp.csr_matrix(X, dtype=np.float32)
    adata.uns[CONTROL_FEATURES_KEY] = {"name": [str(n) for n in names], "feature_type": [str(t) for t in types]}


def package_version() -> str:
    """Installed version of spatialmultiomics."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spatialmultiomics")
    except PackageNotFoundError:  # pragma: no cover
        return "0.0.0+unknown"


def stamp_provenance(
    adata: ad.AnnData,
    *,
    platform: str,
    reader: str,
    version: str,
    pixel_size_um: float,
    files: Iterable[str | Path],
    modality: str,
    **extra: Any,
) -> ad.AnnData:
    """Write ``uns['provenance']``: platform, reader, vendor format / software version read, pixel size (µm per
    coordinate unit of the file), absolute file paths, modality, package version and reader-specific ``extra``."""
    prov: dict[str, Any] = {
        "platform": platform,
        "reader": reader,
        "version": str(version),
        "pixel_size_um": float(pixel_size_um),
        "files": [str(Path(f).resolve()) for f in files],
        "modality": modality,
        "spatialmultiomics_version": package_version(),
    }
    prov["path"] = prov["files"][0] if prov["files"] else ""
    for key, value in extra.items():
        if value is None:
            continue
        prov[key] = value
    adata.uns[Keys.PROVENANCE] = prov
    logger.info(
        "%s: %d %s x %d features (%s, %s)",
        Path(prov["path"]).name,
        adata.n_obs,
        "cells/spots",
        adata.n_vars,
        platform,
        modality,
    )
    return adata
