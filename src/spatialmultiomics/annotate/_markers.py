"""Marker sets: reading them (dict, JSON, YAML, CSV), and matching marker names to the features of the data.

A marker set maps each cell type to marker names per modality: ``rna`` for genes and ``protein`` for proteins
(files may say ``genes`` / ``proteins``; any further modality of the data, e.g. ``metabolite``, can be used by its
own name). Names are matched to feature names case-insensitively, ignoring punctuation and spaces
(``E-cadherin`` = ``Ecadherin`` = ``e cadherin``), and through a table of known aliases between protein
channel names and gene symbols (``PanCK`` / ``Pan-Keratin`` / ``pan-cytokeratin`` / ``KRT``, ``aSMA`` / ``SMA``
/ ``ACTA2``, ``CD3`` / ``CD3e`` / ``CD3E``, ``CD45`` / ``PTPRC``, ``Ki67`` / ``MKI67``, ...).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys

__all__ = ["ALIASES", "MarkerSet", "canonical_name", "load_markers", "match_markers", "modality_key"]

#: accepted spellings of the modality keys in marker files
_MODALITY_KEYS = {
    Keys.RNA: ("rna", "gene", "genes", "transcript", "transcripts", "transcriptomics", "mrna", "marker_genes"),
    Keys.PROTEIN: ("protein", "proteins", "prot", "adt", "proteomics", "antibody", "antibodies", "marker_proteins"),
}
_MODALITY_OF = {alias: mod for mod, aliases in _MODALITY_KEYS.items() for alias in aliases}

#: groups of names for the same marker (protein channel names and gene symbols); matching treats a group as one
ALIASES: tuple[tuple[str, ...], ...] = (
    ("PanCK", "Pan-CK", "Pan-Keratin", "pan-cytokeratin", "Cytokeratin", "KRT", "Keratin", "CK", "AE1/AE3"),
    ("aSMA", "SMA", "alpha-SMA", "αSMA", "α-SMA", "ACTA2", "alpha smooth muscle actin"),
    ("CD3", "CD3e", "CD3epsilon", "CD3ε"),
    ("E-cadherin", "ECAD", "E-Cad", "CDH1"),
    ("CD45", "PTPRC", "LCA"),
    ("HLA-DR", "HLA-DRA", "MHC-II", "MHC class II"),
    ("Ki67", "Ki-67", "MKI67"),
    ("CD20", "MS4A1"),
    ("CD8", "CD8a", "CD8alpha"),
    ("CD11c", "ITGAX"),
    ("CD11b", "ITGAM"),
    ("CD16", "FCGR3A"),
    ("CD56", "NCAM1", "NCAM"),
    ("CD31", "PECAM1", "PECAM"),
    ("Vimentin", "VIM"),
    ("EpCAM", "CD326"),
    ("CD138", "SDC1", "Syndecan-1"),
    ("CD66b", "CEACAM8"),
    ("Granzyme B", "GZMB", "GrB"),
    ("PD-1", "PDCD1", "CD279"),
    ("PD-L1", "CD274", "B7-H1"),
    ("CD25", "IL2RA"),
    ("CD123", "IL3RA"),
    ("CD303", "CLEC4C", "BDCA2", "BDCA-2"),
    ("Tryptase", "TPSAB1", "Mast cell tryptase"),
    ("CD117", "KIT", "c-Kit"),
    ("CD15", "FUT4"),
    ("CD57", "B3GAT1"),
    ("CD21", "CR2"),
    ("Podoplanin", "PDPN", "D2-40"),
    ("Desmin", "DES"),
    ("CD206", "MRC1"),
    ("CD209", "DC-SIGN"),
    ("TIM-3", "HAVCR2"),
    ("LAG-3", "LAG3"),
    ("TCF1", "TCF-1", "TCF7"),
    ("Collagen I", "COL1A1", "Collagen1"),
    ("Collagen IV", "COL4A1"),
    ("beta-catenin", "β-catenin", "CTNNB1"),
    ("CD141", "THBD", "BDCA3", "BDCA-3"),
    ("CD79a", "CD79A"),
    ("FOXP3", "FoxP3"),
    ("MPO", "Myeloperoxidase"),
    ("LYVE1", "LYVE-1"),
    ("PDGFRB", "PDGFR-beta", "PDGFRβ", "CD140b"),
    ("Histone H3", "HistoneH3", "H3"),
    ("MUC1", "CD227"),
    ("CK8", "Cytokeratin 8", "KRT8"),
    ("CK18", "Cytokeratin 18", "KRT18"),
    ("CK19", "Cytokeratin 19", "KRT19"),
    ("CK5", "Cytokeratin 5", "KRT5"),
    ("CK7", "Cytokeratin 7", "KRT7"),
    ("CD103", "ITGAE"),
    ("CD39", "ENTPD1"),
    ("IDO1", "IDO"),
    ("CD73", "NT5E"),
    ("Arginase-1", "ARG1"),
    ("CD64", "FCGR1A"),
    ("NKp46", "NCR1", "CD335"),
    ("Perforin", "PRF1"),
    ("CD94", "KLRD1"),
    ("CD62L", "SELL", "L-selectin"),
    ("CCR7", "CD197"),
    ("CD127", "IL7R"),
    ("CD71", "TFRC"),
    ("T-bet", "TBX21", "TBET"),
    ("CD10", "MME"),
    ("p53", "TP53"),
    ("HER2", "ERBB2"),
    ("ER", "ESR1"),
    ("PR", "PGR"),
    ("CD146", "MCAM"),
    ("MelanA", "MLANA", "MART-1"),
    ("vWF", "VWF", "von Willebrand factor"),
    ("SMMHC", "MYH11"),
    ("CD1c", "BDCA1", "BDCA-1"),
    ("IgM", "IGHM"),
    ("CD44",),
)

_GREEK = str.maketrans({"α": "a", "β": "b", "γ": "g", "δ": "d", "ε": "e", "κ": "k", "λ": "l"})
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def canonical_name(name: str) -> str:
    """Lower-case ``name``, spell Greek letters in Latin and drop everything but letters and digits."""
    return _NON_ALNUM.sub("", str(name).strip().lower().translate(_GREEK))


_GROUP_OF: dict[str, int] = {canonical_name(a): g for g, group in enumerate(ALIASES) for a in group}


def modality_key(key: Any, *, extra: Iterable[str] = (), source: str = "markers", cell_type: str = "") -> str:
    """Return the modality a marker-file key names (``genes`` -> ``rna``, ``proteins`` -> ``protein``)."""
    k = str(key).strip().lower()
    if k in _MODALITY_OF:
        return _MODALITY_OF[k]
    extras = {str(e).lower(): str(e) for e in extra}
    if k in extras:
        return extras[k]
    where = f" of type {cell_type!r}" if cell_type else ""
    allowed = ["genes/rna", "proteins/protein", *sorted(set(extras.values()) - set(_MODALITY_KEYS))]
    msg = f"{source}: unknown modality key {key!r}{where}; allowed: {', '.join(allowed)}."
    raise InputError(msg)


def _names(value: Any, *, source: str, cell_type: str, key: Any) -> tuple[str, ...]:
    """Marker names from a list (or one string, or a ``;``/``,``-separated string), stripped and de-duplicated."""
    if isinstance(value, str):
        value = re.split(r"[;,|]", value)
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None:
        value = []
    if not isinstance(value, list | tuple):
        msg = (
            f"{source}: markers of type {cell_type!r} under {key!r} must be a list of names, "
            f"got {type(value).__name__}."
        )
        raise InputError(msg)
    out: list[str] = []
    for v in value:
        if not isinstance(v, str | int | np.str_) or isinstance(v, bool):
            msg = f"{source}: marker {v!r} of type {cell_type!r} under {key!r} is not a name (a string)."
            raise InputError(msg)
        name = str(v).strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class MarkerSet:
    """Marker names per cell type and modality.

    Parameters
    ----------
    markers
        ``{cell_type: {modality: (name, ...)}}`` with modality ``'rna'`` for genes, ``'protein'`` for proteins, or
        the name of another modality of the data. Build it with :meth:`from_dict`, :meth:`read` or
        :func:`load_markers`, which validate the shape.
    name
        A label for provenance (file name, ``'dict'`` or the name of a built-in reference).
    """

    markers: Mapping[str, Mapping[str, tuple[str, ...]]]
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        frozen = {
            str(t): MappingProxyType({str(m): tuple(v) for m, v in mods.items()}) for t, mods in self.markers.items()
        }
        object.__setattr__(self, "markers", MappingProxyType(frozen))

    @property
    def types(self) -> list[str]:
        """Cell types, in the order given."""
        return list(self.markers)

    @property
    def modalities(self) -> list[str]:
        """Modalities that have at least one marker, in order of first appearance."""
        seen: list[str] = []
        for mods in self.markers.values():
            for m, names in mods.items():
                if names and m not in seen:
                    seen.append(m)
        return seen

    def get(self, cell_type: str, modality: str) -> tuple[str, ...]:
        """Markers of ``cell_type`` in ``modality`` (empty when none)."""
        return tuple(self.markers.get(cell_type, {}).get(modality, ()))

    def __len__(self) -> int:
        return len(self.markers)

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        """``{type: {"genes": [...], "proteins": [...], other: [...]}}``, the file format."""
        key = {Keys.RNA: "genes", Keys.PROTEIN: "proteins"}
        return {t: {key.get(m, m): list(v) for m, v in mods.items() if v} for t, mods in self.markers.items()}

    @classmethod
    def from_dict(
        cls, markers: Mapping[str, Any], *, name: str = "dict", extra_modalities: Iterable[str] = ()
    ) -> MarkerSet:
        """Validate ``{type: {"genes": [...], "proteins": [...]}}`` (keys also ``rna``/``protein``).

        Raises :class:`~spatialmultiomics._errors.InputError` naming ``name`` when the object is not such a
        mapping, a type has no markers, or a modality key is unknown (``extra_modalities`` are accepted too).
        """
        extra = list(extra_modalities)
        if not isinstance(markers, Mapping):
            msg = (
                f"{name}: expected a mapping {{cell_type: {{genes: [...], proteins: [...]}}}}, "
                f"got {type(markers).__name__}."
            )
            raise InputError(msg)
        if not markers:
            msg = f"{name}: the marker set is empty; give at least one cell type with markers."
            raise InputError(msg)
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for cell_type, mods in markers.items():
            ct = str(cell_type).strip()
            if not ct:
                msg = f"{name}: a cell type has an empty name."
                raise InputError(msg)
            if not isinstance(mods, Mapping):
                msg = (
                    f"{name}: type {ct!r} must map modalities to marker lists "
                    f"({{genes: [...], proteins: [...]}}), got {type(mods).__name__}."
                )
                raise InputError(msg)
            entry: dict[str, tuple[str, ...]] = {}
            for key, value in mods.items():
                mod = modality_key(key, extra=extra, source=name, cell_type=ct)
                names = _names(value, source=name, cell_type=ct, key=key)
                entry[mod] = tuple(dict.fromkeys(entry.get(mod, ()) + names))
            if not any(entry.values()):
                msg = f"{name}: type {ct!r} has no markers; give genes and/or proteins for every type."
                raise InputError(msg)
            if ct in out:
                msg = f"{name}: type {ct!r} appears twice."
                raise InputError(msg)
            out[ct] = entry
        return cls(out, name=name)

    @classmethod
    def read(cls, path: str | Path, *, extra_modalities: Iterable[str] = ()) -> MarkerSet:
        """Read a marker file: JSON, YAML (``.yaml``/``.yml``) or CSV/TSV.

        CSV: long form with columns ``cell_type``, ``marker``, ``modality`` (``gene``/``rna`` or ``protein``), one
        row per marker; or wide form with columns ``cell_type``, ``genes``, ``proteins`` holding ``;``- or
        ``,``-separated names.
        """
        path = Path(path)
        if not path.is_file():
            msg = f"marker file {str(path)!r} does not exist."
            raise FileNotFoundError(msg)
        suffix = path.suffix.lower()
        src = str(path)
        if suffix in (".csv", ".tsv", ".txt", ".tab"):
            return cls.from_dict(_read_csv(path), name=src, extra_modalities=extra_modalities)
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                msg = f"{src}: not valid JSON ({err.msg} at line {err.lineno})."
                raise InputError(msg) from None
        elif suffix in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                msg = f"{src}: not valid YAML ({str(err).splitlines()[0]})."
                raise InputError(msg) from None
        else:
            msg = f"{src}: unknown marker file type {suffix!r}; use .json, .yaml/.yml or .csv/.tsv."
            raise InputError(msg)
        return cls.from_dict(data, name=src, extra_modalities=extra_modalities)

    def write(self, path: str | Path) -> Path:
        """Write the marker set as JSON, YAML or long CSV, chosen by the suffix of ``path``."""
        path = Path(path)
        suffix = path.suffix.lower()
        data = self.to_dict()
        if suffix == ".json":
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        elif suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        elif suffix in (".csv", ".tsv"):
            import pandas as pd

            rows = [(t, n, m) for t, mods in self.markers.items() for m, names in mods.items() for n in names]
            frame = pd.DataFrame(rows, columns=["cell_type", "marker", "modality"])
            frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
        else:
            msg = f"{path}: unknown marker file type {suffix!r}; use .json, .yaml/.yml or .csv/.tsv."
            raise InputError(msg)
        return path


_CSV_TYPE = ("cell_type", "celltype", "type", "cell type", "population")
_CSV_MARKER = ("marker", "markers", "feature", "name", "symbol")
_CSV_MODALITY = ("modality", "kind", "assay")


def _read_csv(path: Path) -> dict[str, dict[str, list[str]]]:
    import pandas as pd

    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else None
    try:
        frame = pd.read_csv(path, sep=sep, engine="python", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot be parsed as a marker table ({str(err).splitlines()[0][:160]})."
        raise InputError(msg) from None
    cols = {str(c).strip().lower(): c for c in frame.columns}

    def find(options: Sequence[str]) -> Any:
        return next((cols[o] for o in options if o in cols), None)

    type_col, marker_col, mod_col = find(_CSV_TYPE), find(_CSV_MARKER), find(_CSV_MODALITY)
    wide = [c for key, c in cols.items() if key in _MODALITY_OF]
    if type_col is None or (marker_col is None and not wide):
        msg = (
            f"{path}: a marker CSV needs columns cell_type, marker, modality (long form) or cell_type, genes, "
            f"proteins (wide form); got columns {list(frame.columns)}."
        )
        raise InputError(msg)
    out: dict[str, dict[str, list[str]]] = {}
    if marker_col is not None:
        if mod_col is None:
            msg = f"{path}: the long marker CSV has no 'modality' column (gene/rna or protein); got {list(frame.columns)}."
            raise InputError(msg)
        for ct, marker, mod in frame[[type_col, marker_col, mod_col]].itertuples(index=False):
            ct, marker, mod = str(ct).strip(), str(marker).strip(), str(mod).strip()
            if not ct or not marker:
                continue
            out.setdefault(ct, {}).setdefault(mod, []).append(marker)
        return out
    for row in frame[[type_col, *wide]].itertuples(index=False):
        ct = str(row[0]).strip()
        if not ct:
            continue
        entry = out.setdefault(ct, {})
        for col, value in zip(wide, row[1:], strict=True):
            names = [v.strip() for v in re.split(r"[;,|]", str(value)) if v.strip()]
            entry.setdefault(str(col), []).extend(names)
    return out


def load_markers(
    markers: MarkerSet | Mapping[str, Any] | str | Path | None = None, *, extra_modalities: Iterable[str] = ()
) -> MarkerSet:
    """Return a :class:`MarkerSet` from any accepted form.

    Parameters
    ----------
    markers
        ``None`` (the built-in ``'immune_tme'`` reference), the name of a built-in reference, a
        :class:`MarkerSet`, a dict ``{type: {"genes": [...], "proteins": [...]}}`` (keys also ``rna`` /
        ``protein``), or the path of a JSON / YAML / CSV marker file.
    extra_modalities
        Further modality names accepted as keys (the modalities of the data).
    """
    from spatialmultiomics.annotate._reference import BUILTIN_REFERENCES, builtin_markers

    if markers is None:
        return builtin_markers()
    if isinstance(markers, MarkerSet):
        return markers
    if isinstance(markers, Mapping):
        return MarkerSet.from_dict(markers, name="markers", extra_modalities=extra_modalities)
    if isinstance(markers, str) and markers.lower() in BUILTIN_REFERENCES:
        return builtin_markers(markers)
    if isinstance(markers, str | Path):
        path = Path(markers)
        if not path.exists():
            msg = (
                f"markers={str(markers)!r} is neither a marker file nor a built-in reference "
                f"({', '.join(sorted(BUILTIN_REFERENCES))})."
            )
            raise InputError(msg)
        return MarkerSet.read(path, extra_modalities=extra_modalities)
    msg = f"markers must be None, a dict, a MarkerSet, a file path or a reference name; got {type(markers).__name__}."
    raise InputError(msg)


def _lookup(names: Sequence[str]) -> tuple[dict[str, int], dict[int, int]]:
    """First feature index per canonical name and per alias group."""
    by_name: dict[str, int] = {}
    by_group: dict[int, int] = {}
    for j, n in enumerate(names):
        c = canonical_name(n)
        by_name.setdefault(c, j)
        g = _GROUP_OF.get(c)
        if g is not None:
            by_group.setdefault(g, j)
    return by_name, by_group


def match_markers(
    marker_set: MarkerSet, feature_names: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, np.ndarray]]:
    """Feature indices of each type's markers, per modality.

    A marker matches the first feature with the same canonical name (:func:`canonical_name`), else the first
    feature in the same alias group (:data:`ALIASES`). Markers that match nothing are left out; two markers of a
    type that match the same feature count once.

    Parameters
    ----------
    marker_set
        The markers.
    feature_names
        ``{modality: feature names}`` of the data.

    Returns
    -------
    ``{type: {modality: int64 array of feature indices}}``, for every type and every modality of
    ``feature_names`` (empty arrays where nothing matched).
    """
    lookups = {mod: _lookup([str(n) for n in names]) for mod, names in feature_names.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for cell_type in marker_set.types:
        entry: dict[str, np.ndarray] = {}
        for mod, (by_name, by_group) in lookups.items():
            idx: list[int] = []
            for marker in marker_set.get(cell_type, mod):
                c = canonical_name(marker)
                j = by_name.get(c)
                if j is None and c in _GROUP_OF:
                    j = by_group.get(_GROUP_OF[c])
                if j is not None and j not in idx:
                    idx.append(j)
            entry[mod] = np.asarray(idx, dtype=np.int64)
        out[cell_type] = entry
    return out
