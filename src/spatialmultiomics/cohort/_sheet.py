"""The sample sheet of a cohort: one row per sample, its condition, patient, input files and covariates.

A sheet is a CSV / TSV table, a YAML file (a list of mappings, or a mapping with a ``samples:`` list) or a TOML
file (``[[samples]]`` tables). Column names are case-insensitive; spaces and dashes count as underscores.

=========================  =================================================================================
column                     meaning
=========================  =================================================================================
``sample``                 sample (image / section) name, unique (also ``sample_id``)
``condition``              the group compared (also ``group``)
``patient``                optional: the patient the sample comes from (also ``patient_id``, ``subject``);
                           several samples of one patient make the patient the unit of evidence
``transcripts``            RNA input: table, ``.h5ad`` or ``.h5mu`` (also the run command's ``tx``,
                           ``transcript_path``, ``rna``)
``transcripts_platform``   RNA platform (also ``tx_platform``, ``platform_tx``); default ``generic``
``proteins``               protein input (also ``prot``, ``protein_path``, ``protein``)
``proteins_platform``      protein platform (also ``prot_platform``, ``platform_prot``); default ``generic``
``pixel_size_um``          µm per coordinate unit of every input of the row (default 1); per modality:
                           ``transcripts_pixel_size_um``, ``proteins_pixel_size_um``
anything else              a sample covariate (numeric when every value parses as a number)
=========================  =================================================================================

Relative paths are resolved against the sheet's folder. Every problem is reported as one line naming the sheet,
the row (1-based, counting data rows: row 1 is the first sample) and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys

__all__ = ["SampleEntry", "SampleSheet", "is_sample_sheet", "read_sample_sheet"]

#: canonical column -> accepted spellings (after lower-casing and replacing spaces / dashes by underscores)
_ALIASES: dict[str, tuple[str, ...]] = {
    "sample": ("sample", "sample_id", "sample_name"),
    "condition": ("condition", "group"),
    "patient": ("patient", "patient_id", "subject"),
    "transcripts": ("transcripts", "tx", "transcript_path", "transcripts_path", "rna"),
    "transcripts_platform": ("transcripts_platform", "tx_platform", "platform_tx", "rna_platform"),
    "proteins": ("proteins", "prot", "protein_path", "proteins_path", "protein"),
    "proteins_platform": ("proteins_platform", "prot_platform", "platform_prot", "protein_platform"),
    "pixel_size_um": ("pixel_size_um", "pixel_size"),
    "transcripts_pixel_size_um": ("transcripts_pixel_size_um", "tx_pixel_size_um", "rna_pixel_size_um"),
    "proteins_pixel_size_um": ("proteins_pixel_size_um", "prot_pixel_size_um", "protein_pixel_size_um"),
}
#: modality name -> (file column, platform column, pixel-size column, platform kind)
_MODALITIES: dict[str, tuple[str, str, str, str]] = {
    Keys.RNA: ("transcripts", "transcripts_platform", "transcripts_pixel_size_um", "rna"),
    Keys.PROTEIN: ("proteins", "proteins_platform", "proteins_pixel_size_um", "protein"),
}
_SHEET_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
_STRUCTURED_SUFFIXES = (".yaml", ".yml", ".toml")
#: columns of a labelled cell table that a sample sheet never has
_CELL_TABLE_COLUMNS = {"x", "y", "x_um", "y_um", "centroid_x", "centroid_y", "cell_id"}


@dataclass(frozen=True)
class SampleEntry:
    """One sample of a sheet.

    Attributes
    ----------
    sample, condition
        Names.
    patient
        Patient name, or None when the sheet has no patient column.
    inputs
        Modality name (``'rna'``, ``'protein'``) -> absolute path, or an AnnData / MuData given in a DataFrame sheet.
    platforms
        Modality name -> canonical platform name.
    pixel_size_um
        Modality name -> µm per coordinate unit.
    covariates
        Further columns of the row.
    row
        1-based data row in the sheet.
    """

    sample: str
    condition: str
    patient: str | None
    inputs: dict[str, Any]
    platforms: dict[str, str]
    pixel_size_um: dict[str, float]
    covariates: dict[str, Any] = field(default_factory=dict)
    row: int = 0


@dataclass(frozen=True)
class SampleSheet:
    """A validated sample sheet (see the module notes for its columns).

    Attributes
    ----------
    samples
        The samples, in sheet order.
    covariates
        Names of the covariate columns.
    source
        The sheet file, or None for a DataFrame.
    """

    samples: tuple[SampleEntry, ...]
    covariates: tuple[str, ...] = ()
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[SampleEntry]:
        return iter(self.samples)

    @property
    def names(self) -> list[str]:
        """Sample names in sheet order."""
        return [s.sample for s in self.samples]

    @property
    def conditions(self) -> list[str]:
        """Distinct conditions, in order of first appearance."""
        return list(dict.fromkeys(s.condition for s in self.samples))

    @property
    def has_patient(self) -> bool:
        """Whether the sheet names the patient of each sample."""
        return any(s.patient is not None for s in self.samples)

    @property
    def modalities(self) -> list[str]:
        """Modalities given for at least one sample."""
        return [m for m in _MODALITIES if any(m in s.inputs for s in self.samples)]

    def table(self) -> pd.DataFrame:
        """One row per sample: ``sample, condition[, patient]``, the covariates, then input, platform and pixel
        size per modality (paths as strings)."""
        rows = []
        for s in self.samples:
            row: dict[str, Any] = {"sample": s.sample, "condition": s.condition}
            if self.has_patient:
                row["patient"] = s.patient
            row.update({c: s.covariates.get(c) for c in self.covariates})
            for m, (col, pcol, scol, _) in _MODALITIES.items():
                if m in s.inputs:
                    src = s.inputs[m]
                    row[col] = str(src) if isinstance(src, str | Path) else type(src).__name__
                    row[pcol] = s.platforms[m]
                    row[scol] = s.pixel_size_um[m]
            rows.append(row)
        return pd.DataFrame(rows)


def _canonical(name: Any) -> str:
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    for canon, spellings in _ALIASES.items():
        if key in spellings:
            return canon
    return key


def _records_from_file(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names (as written) and row dicts of a sheet file."""
    suffix = path.suffix.lower()
    if suffix in _SHEET_SUFFIXES:
        try:
            frame = pd.read_csv(
                path,
                sep=_SHEET_SUFFIXES[suffix] if suffix != ".txt" else None,
                dtype=str,
                keep_default_na=False,
                engine="python",
                skipinitialspace=True,
            )
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            msg = f"{path}: not a readable sample sheet ({type(err).__name__}: {str(err).splitlines()[0]})."
            raise InputError(msg) from err
        return [str(c) for c in frame.columns], frame.to_dict(orient="records")
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            msg = f"{path}: not valid YAML ({type(err).__name__}: {str(err).splitlines()[0]})."
            raise InputError(msg) from err
    elif suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            msg = f"{path}: not valid TOML ({type(err).__name__}: {err})."
            raise InputError(msg) from err
    else:
        msg = f"{path}: unknown sample sheet format {suffix!r}; use .csv, .tsv, .yaml, .yml or .toml."
        raise InputError(msg)
    if isinstance(data, Mapping) and "samples" in data:
        data = data["samples"]
    if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
        msg = f"{path}: a sample sheet is a list of samples (YAML: a list of mappings or 'samples:' with one; TOML: [[samples]] tables)."
        raise InputError(msg)
    columns: list[str] = []
    for r in data:
        columns.extend(str(k) for k in r if str(k) not in columns)
    return columns, [dict(r) for r in data]


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _numeric(values: list[Any]) -> list[Any]:
    """The values as numbers when every non-blank one parses as a number, else as stripped strings."""
    present = [v for v in values if not _blank(v)]
    try:
        nums = [float(v) for v in present]
    except (TypeError, ValueError):
        return [None if _blank(v) else str(v).strip() for v in values]
    as_int = all(float(n).is_integer() for n in nums) and not any(isinstance(v, float) for v in present)
    out: list[Any] = []
    for v in values:
        if _blank(v):
            out.append(None)
        else:
            out.append(int(float(v)) if as_int else float(v))
    return out


def read_sample_sheet(
    sheet: str | Path | pd.DataFrame, *, min_conditions: int = 2, base_dir: str | Path | None = None
) -> SampleSheet:
    """Read and validate a sample sheet.

    Parameters
    ----------
    sheet
        A ``.csv`` / ``.tsv`` / ``.yaml`` / ``.yml`` / ``.toml`` file, or a DataFrame with the same columns (its
        input cells may also hold AnnData / MuData objects).
    min_conditions
        Distinct conditions the sheet must have (2 for a comparison; 1 to only fit a joint model).
    base_dir
        Folder that relative paths are resolved against; default the sheet's folder (the working directory for a
        DataFrame).

    Returns
    -------
    :class:`SampleSheet`.

    Raises
    ------
    InputError
        One line naming the sheet, row and column: unreadable file, missing ``sample`` / ``condition`` column, no
        input column, a column given twice under two names, an empty or duplicate sample, an empty condition or
        patient, a sample without input, a missing input file, an unknown platform or one of the wrong kind, a
        pixel size that is not a positive number, or fewer than ``min_conditions`` conditions.

    Examples
    --------
    >>> import pandas as pd, spatialmultiomics as smo
    >>> mdata = smo.datasets.paper_benchmark(seed=0)
    >>> frame = pd.DataFrame({"sample": ["a", "b"], "condition": ["x", "y"], "proteins": [mdata["protein"]] * 2})
    >>> sheet = smo.cohort.read_sample_sheet(frame)
    >>> sheet.names, sheet.conditions
    (['a', 'b'], ['x', 'y'])
    """
    from spatialmultiomics._validate import check_positive_int

    min_conditions = check_positive_int(min_conditions, name="min_conditions")
    if isinstance(sheet, pd.DataFrame):
        where = "sample sheet (DataFrame)"
        source = None
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        columns = [str(c) for c in sheet.columns]
        records = [dict(zip(columns, row, strict=True)) for row in sheet.itertuples(index=False, name=None)]
    elif isinstance(sheet, str | Path):
        source = Path(sheet)
        where = str(source)
        if not source.is_file():
            msg = f"sample sheet {str(source)!r} not found (or not a file)."
            raise InputError(msg)
        base = Path(base_dir) if base_dir is not None else source.resolve().parent
        columns, records = _records_from_file(source)
    else:
        msg = f"samples must be a sample sheet path or a DataFrame, got {type(sheet).__name__}."
        raise InputError(msg)

    canon: dict[str, str] = {}  # canonical -> as written
    for col in columns:
        c = _canonical(col)
        if c in canon:
            msg = f"{where}: columns {canon[c]!r} and {col!r} both mean {c!r}; keep one."
            raise InputError(msg)
        canon[c] = col
    for required in ("sample", "condition"):
        if required not in canon:
            msg = f"{where}: no {required!r} column; columns found: {columns}."
            raise InputError(msg)
    if not any(_MODALITIES[m][0] in canon for m in _MODALITIES):
        msg = f"{where}: no input column; give 'transcripts' and/or 'proteins' (file per sample); columns found: {columns}."
        raise InputError(msg)
    if not records:
        msg = f"{where}: the sheet has no samples."
        raise InputError(msg)
    known = {"sample", "condition", "patient"} | {c for spec in _MODALITIES.values() for c in spec[:3]}
    known.add("pixel_size_um")
    covariate_cols = [c for c in canon if c not in known]
    cov_values = {c: _numeric([r.get(canon[c]) for r in records]) for c in covariate_cols}

    entries: list[SampleEntry] = []
    seen: dict[str, int] = {}
    for i, rec in enumerate(records, start=1):

        def cell(c: str, rec: dict[str, Any] = rec) -> Any:
            return rec.get(canon[c]) if c in canon else None

        def fail(col: str, text: str, i: int = i) -> None:
            msg = f"{where}, row {i}, column {canon.get(col, col)!r}: {text}"
            raise InputError(msg)

        sample = cell("sample")
        if _blank(sample):
            fail("sample", "empty sample name.")
        sample = str(sample).strip()
        if sample in seen:
            fail("sample", f"sample {sample!r} is already on row {seen[sample]}; sample names must be unique.")
        seen[sample] = i
        condition = cell("condition")
        if _blank(condition):
            fail("condition", f"sample {sample!r} has no condition.")
        patient = None
        if "patient" in canon:
            patient = cell("patient")
            if _blank(patient):
                fail("patient", f"sample {sample!r} has no patient; give every row a patient or drop the column.")
            patient = str(patient).strip()
        default_px = _pixel(cell("pixel_size_um"), "pixel_size_um", fail)
        inputs: dict[str, Any] = {}
        platforms: dict[str, str] = {}
        pixels: dict[str, float] = {}
        for m, (col, pcol, scol, kind) in _MODALITIES.items():
            value = cell(col)
            if _blank(value):
                continue
            inputs[m] = _resolve_input(value, base, col, fail)
            platforms[m] = _platform(cell(pcol), kind, pcol, fail)
            px = _pixel(cell(scol), scol, fail)
            pixels[m] = px if px is not None else (default_px if default_px is not None else 1.0)
        if not inputs:
            cols = [canon[_MODALITIES[m][0]] for m in _MODALITIES if _MODALITIES[m][0] in canon]
            fail(cols[0] if len(cols) == 1 else "transcripts", f"sample {sample!r} has no input file (columns {cols}).")
        entries.append(
            SampleEntry(
                sample=sample,
                condition=str(condition).strip(),
                patient=patient,
                inputs=inputs,
                platforms=platforms,
                pixel_size_um=pixels,
                covariates={c: cov_values[c][i - 1] for c in covariate_cols},
                row=i,
            )
        )
    conditions = list(dict.fromkeys(e.condition for e in entries))
    if len(conditions) < min_conditions:
        msg = (
            f"{where}, column {canon['condition']!r}: {len(conditions)} condition(s) {conditions}; a comparison "
            f"needs at least {min_conditions} (pass min_conditions=1 to only fit a joint model)."
        )
        raise InputError(msg)
    return SampleSheet(samples=tuple(entries), covariates=tuple(canon[c] for c in covariate_cols), source=source)


def _resolve_input(value: Any, base: Path, col: str, fail: Any) -> Any:
    """An input cell as an absolute existing path (or the AnnData / MuData it holds)."""
    from anndata import AnnData

    if isinstance(value, AnnData) or type(value).__name__ == "MuData":
        return value
    if not isinstance(value, str | Path):
        fail(col, f"expected a file path, got {type(value).__name__}.")
    path = Path(str(value).strip()).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        fail(col, f"file {str(value).strip()!r} not found (looked for {str(path)!r}).")
    return path.resolve()


def _platform(value: Any, kind: str, col: str, fail: Any) -> str:
    from spatialmultiomics.io import PLATFORMS, normalize_platform

    if _blank(value):
        return "generic"
    try:
        canon = normalize_platform(str(value), name=col)
    except InputError as err:
        fail(col, str(err))
        raise  # unreachable: fail raises
    pk = PLATFORMS[canon][0]
    if pk not in ("any", kind):
        allowed = sorted(p for p, (k, _) in PLATFORMS.items() if k in (kind, "any"))
        fail(col, f"{value!r} is a {pk} platform; this column takes one of {allowed}.")
    return canon


def _pixel(value: Any, col: str, fail: Any) -> float | None:
    if _blank(value):
        return None
    try:
        px = float(value)
    except (TypeError, ValueError):
        px = float("nan")
    if not np.isfinite(px) or px <= 0:
        fail(col, f"pixel size must be a positive number (µm per coordinate unit), got {value!r}.")
    return px


def is_sample_sheet(path: str | Path) -> bool:
    """Whether ``path`` is a sample sheet rather than a labelled cell table (one row per cell).

    YAML and TOML files are sheets. A CSV / TSV is a sheet when its header has a ``sample`` column and an input
    column (``transcripts`` / ``proteins`` or their aliases) and no cell coordinates (``x``, ``y``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _STRUCTURED_SUFFIXES:
        return True
    if suffix not in _SHEET_SUFFIXES or not path.is_file():
        return False
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError):
        return False
    delimiter = "\t" if ("\t" in first and suffix != ".csv") else ","
    header = {_canonical(c) for c in next(csv.reader([first], delimiter=delimiter), [])}
    has_input = any(_MODALITIES[m][0] in header for m in _MODALITIES)
    return "sample" in header and has_input and not (header & _CELL_TABLE_COLUMNS)
