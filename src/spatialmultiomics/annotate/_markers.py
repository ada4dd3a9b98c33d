"""Marker sets: reading them (dict, JSON, YAML, CSV), and matching marker names to the features of the data.

A marker set maps each cell type to marker names per modality: ``rna`` for genes and ``protein`` for proteins
(files may say ``genes`` / ``proteins``; any further modality of the data, e.g. ``metabolite``, can be used by its
own name). Names are matched to feature names case-insensitively, ignoring punctuation and spaces
(``E-cadherin`` = ``Ecadherin`` = ``e cadherin``), and through a table of known aliases between protein
channel names and gene symbols (``PanCK`` / ``Pan-Keratin`` / ``pan-cytokeratin`` / ``KRT``, ``aSMA`` / ``SMA``
/ ``ACTA2``, ``CD3`` / ``CD3e`` / ``CD3E``, ``CD45`` / ``PTPRC``, ``Ki67`` / ``MKI67``, ...).

A type may also name **negative markers** (``negative: {proteins: [CD3]}`` for NK cells; a plain list applies to
genes and proteins alike), a **parent** type (``parent: T cells``: the type is a subset of its parent, as in a
gating hierarchy) and be a **group** (``group: true``: a lineage such as ``Immune cells`` or ``Myeloid cells``,
a valid name for a cluster the panel cannot resolve further but not a final type of the flat methods). A group
with ``match: any`` is positive when any one of its markers (or any of its subtypes) is; other types need their
markers on average.
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
from spatialmultiomics._names import ALIASES, GROUP_OF, canonical_name, feature_name_variants

__all__ = [
    "ALIASES",
    "MarkerSet",
    "canonical_name",
    "feature_name_variants",
    "load_markers",
    "match_markers",
    "merge_markers",
    "modality_key",
]

#: accepted spellings of the modality keys in marker files
_MODALITY_KEYS = {
    Keys.RNA: ("rna", "gene", "genes", "transcript", "transcripts", "transcriptomics", "mrna", "marker_genes"),
    Keys.PROTEIN: ("protein", "proteins", "prot", "adt", "proteomics", "antibody", "antibodies", "marker_proteins"),
}
_MODALITY_OF = {alias: mod for mod, aliases in _MODALITY_KEYS.items() for alias in aliases}


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


_NEGATIVE_KEYS = ("negative", "negatives", "neg", "negative_markers", "not")
_STRUCTURE_KEYS = (*_NEGATIVE_KEYS, "parent", "group", "match")


def _flag(value: Any, *, source: str, cell_type: str, key: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", ""):
        return False
    msg = f"{source}: type {cell_type!r} has {key}={value!r}; use true or false."
    raise InputError(msg)


def _negatives(
    value: Any, modalities: Sequence[str], extra: Iterable[str], *, source: str, cell_type: str
) -> dict[str, tuple[str, ...]]:
    """Negative markers per modality: a mapping like the positive markers, or one list for every modality."""
    if isinstance(value, Mapping):
        out: dict[str, tuple[str, ...]] = {}
        for key, names in value.items():
            mod = modality_key(key, extra=extra, source=source, cell_type=cell_type)
            out[mod] = tuple(
                dict.fromkeys(out.get(mod, ()) + _names(names, source=source, cell_type=cell_type, key=key))
            )
        return out
    names = _names(value, source=source, cell_type=cell_type, key="negative")
    mods = list(dict.fromkeys([*modalities, Keys.RNA, Keys.PROTEIN]))
    return dict.fromkeys(mods, names)


def _check_tree(ms: MarkerSet) -> None:
    """Parents never form a cycle. (A parent defined in another reference is allowed here, so that a file can add
    a subtype to a built-in lineage; :func:`check_parents` checks the reference that is finally used.)"""
    for t, p in ms.parent.items():
        seen = {t}
        while p is not None:
            if p in seen:
                msg = f"{ms.name}: the parents of type {t!r} form a cycle ({' -> '.join([t, *sorted(seen - {t})])})."
                raise InputError(msg)
            seen.add(p)
            p = ms.parent.get(p)


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
    negative
        ``{cell_type: {modality: (name, ...)}}``: markers the type must lack.
    parent
        ``{cell_type: parent type}``.
    group
        ``{cell_type: 'all' | 'any'}`` for the lineage groups (see the module notes).
    """

    markers: Mapping[str, Mapping[str, tuple[str, ...]]]
    name: str = field(default="custom")
    negative: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    parent: Mapping[str, str] = field(default_factory=dict)
    group: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def freeze(d: Mapping[str, Mapping[str, Sequence[str]]]) -> MappingProxyType:
            return MappingProxyType(
                {str(t): MappingProxyType({str(m): tuple(v) for m, v in mods.items()}) for t, mods in d.items()}
            )

        object.__setattr__(self, "markers", freeze(self.markers))
        object.__setattr__(self, "negative", freeze({t: v for t, v in self.negative.items() if t in self.markers}))
        object.__setattr__(
            self, "parent", MappingProxyType({str(t): str(p) for t, p in self.parent.items() if t in self.markers})
        )
        object.__setattr__(
            self, "group", MappingProxyType({str(t): str(g) for t, g in self.group.items() if t in self.markers})
        )
        _check_tree(self)

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

    def get_negative(self, cell_type: str, modality: str) -> tuple[str, ...]:
        """Negative markers of ``cell_type`` in ``modality`` (empty when none)."""
        return tuple(self.negative.get(cell_type, {}).get(modality, ()))

    @property
    def hierarchical(self) -> bool:
        """Whether any type has a parent, a negative marker or is a group."""
        return bool(self.parent or self.group or any(any(v.values()) for v in self.negative.values()))

    def ancestors(self, cell_type: str) -> list[str]:
        """Parent, grandparent, ... of ``cell_type``."""
        out: list[str] = []
        t = self.parent.get(cell_type)
        while t is not None and t not in out:
            out.append(t)
            t = self.parent.get(t)
        return out

    def flat(self) -> MarkerSet:
        """The reference for the flat methods: every type but the groups, each with its ancestors' markers.

        A type inherits the positive markers of its ancestors that need their markers on average (not those of
        ``match: any`` groups: a macrophage need not be CD11b+ for being myeloid). Parents, groups and negative
        markers are gone from the result (the flat methods cannot score negatives). A reference without hierarchy is returned as is.
        """
        if not self.hierarchical:
            return self
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for t in self.types:
            if t in self.group:
                continue
            merged = {m: tuple(v) for m, v in self.markers[t].items()}
            for a in self.ancestors(t):
                if self.group.get(a) == "any":
                    continue
                for m, v in self.markers[a].items():
                    merged[m] = tuple(dict.fromkeys(merged.get(m, ()) + tuple(v)))
            out[t] = merged
        if not out:
            msg = f"{self.name}: every type is a group; the flat annotation methods need at least one other type."
            raise InputError(msg)
        return MarkerSet(out, name=self.name)

    def __len__(self) -> int:
        return len(self.markers)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{type: {"genes": [...], "proteins": [...], other: [...]}}``, the file format (with ``negative``,
        ``parent``, ``group`` and ``match`` where set)."""
        key = {Keys.RNA: "genes", Keys.PROTEIN: "proteins"}
        out: dict[str, dict[str, Any]] = {}
        for t, mods in self.markers.items():
            entry: dict[str, Any] = {key.get(m, m): list(v) for m, v in mods.items() if v}
            neg = {key.get(m, m): list(v) for m, v in self.negative.get(t, {}).items() if v}
            if neg:
                entry["negative"] = neg
            if t in self.parent:
                entry["parent"] = self.parent[t]
            if t in self.group:
                entry["group"] = True
                if self.group[t] == "any":
                    entry["match"] = "any"
            out[t] = entry
        return out

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
        negative: dict[str, dict[str, tuple[str, ...]]] = {}
        parent: dict[str, str] = {}
        group: dict[str, str] = {}
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
                k = str(key).strip().lower()
                if k in _STRUCTURE_KEYS:
                    continue
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
            structure = {
                str(k).strip().lower(): v for k, v in mods.items() if str(k).strip().lower() in _STRUCTURE_KEYS
            }
            neg_value = next((structure[k] for k in _NEGATIVE_KEYS if k in structure), None)
            if neg_value is not None:
                negative[ct] = _negatives(neg_value, list(entry) or [Keys.PROTEIN], extra, source=name, cell_type=ct)
            if "parent" in structure and structure["parent"] not in (None, ""):
                parent[ct] = str(structure["parent"]).strip()
            is_group = _flag(structure.get("group", False), source=name, cell_type=ct, key="group")
            match = str(structure.get("match", "all")).strip().lower()
            if match not in ("all", "any"):
                msg = f"{name}: type {ct!r} has match={structure.get('match')!r}; allowed: 'all' or 'any'."
                raise InputError(msg)
            if match == "any" and not is_group:
                msg = f"{name}: type {ct!r} has match: any but is not a group; add group: true."
                raise InputError(msg)
            if is_group:
                group[ct] = match
        return cls(out, name=name, negative=negative, parent=parent, group=group)

    @classmethod
    def read(cls, path: str | Path, *, extra_modalities: Iterable[str] = ()) -> MarkerSet:
        """Read a marker file: JSON, YAML (``.yaml``/``.yml``) or CSV/TSV.

        CSV: long form with columns ``cell_type``, ``marker``, ``modality`` (``gene``/``rna`` or ``protein``), one
        row per marker, and optionally ``sign`` (``+`` / ``-`` for negative markers) and ``parent``; or wide form
        with columns ``cell_type``, ``genes``, ``proteins`` holding ``;``- or ``,``-separated names, and optionally
        ``negative`` (names for every modality) and ``parent``.
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

            rows = [(t, n, m, "+") for t, mods in self.markers.items() for m, names in mods.items() for n in names]
            rows += [(t, n, m, "-") for t, mods in self.negative.items() for m, names in mods.items() for n in names]
            frame = pd.DataFrame(rows, columns=["cell_type", "marker", "modality", "sign"])
            if self.parent:
                frame["parent"] = frame["cell_type"].map(lambda t: self.parent.get(t, ""))
            if self.group:
                msg = f"{path}: a CSV marker file cannot say which types are groups; write .yaml or .json."
                raise InputError(msg)
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
    sign_col, parent_col = find(("sign", "direction", "polarity")), find(("parent",))
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
        signs = frame[sign_col] if sign_col is not None else pd.Series("+", index=frame.index)
        for (ct, marker, mod), sign in zip(
            frame[[type_col, marker_col, mod_col]].itertuples(index=False), signs, strict=True
        ):
            ct, marker, mod = str(ct).strip(), str(marker).strip(), str(mod).strip()
            if not ct or not marker:
                continue
            sign = str(sign).strip().lower()
            if sign in ("+", "pos", "positive", "", "1"):
                out.setdefault(ct, {}).setdefault(mod, []).append(marker)
            elif sign in ("-", "neg", "negative", "-1", "0"):
                out.setdefault(ct, {}).setdefault("negative", {}).setdefault(mod, []).append(marker)
            else:
                msg = f"{path}: column {sign_col!r} has {sign!r} for type {ct!r}; allowed: + / - (pos / neg)."
                raise InputError(msg)
        _csv_parents(frame, type_col, parent_col, out)
        return out
    neg_col = find(_NEGATIVE_KEYS)
    for row in frame[[type_col, *wide]].itertuples(index=False):
        ct = str(row[0]).strip()
        if not ct:
            continue
        entry = out.setdefault(ct, {})
        for col, value in zip(wide, row[1:], strict=True):
            names = [v.strip() for v in re.split(r"[;,|]", str(value)) if v.strip()]
            entry.setdefault(str(col), []).extend(names)
    if neg_col is not None:
        for ct, value in zip(frame[type_col], frame[neg_col], strict=True):
            names = [v.strip() for v in re.split(r"[;,|]", str(value)) if v.strip()]
            if str(ct).strip() and names:
                out[str(ct).strip()]["negative"] = names
    _csv_parents(frame, type_col, parent_col, out)
    return out


def _csv_parents(frame: Any, type_col: Any, parent_col: Any, out: dict[str, Any]) -> None:
    """Fill ``parent`` entries from a marker CSV's ``parent`` column (one non-empty value per type)."""
    if parent_col is None:
        return
    for ct, p in zip(frame[type_col], frame[parent_col], strict=True):
        ct, p = str(ct).strip(), str(p).strip()
        if ct in out and p:
            out[ct]["parent"] = p


def check_parents(ms: MarkerSet) -> MarkerSet:
    """Raise :class:`InputError` when a type names a parent that is not a type of ``ms``; return ``ms``."""
    for t, p in ms.parent.items():
        if p not in ms.markers:
            msg = (
                f"{ms.name}: type {t!r} names parent {p!r}, which is not a type of the reference; define it, or "
                "extend a reference that has it (extend=True adds yours to immune_tme)."
            )
            raise InputError(msg)
    return ms


MarkerSource = MarkerSet | Mapping[str, Any] | str | Path


def _load_one(markers: MarkerSource, *, extra_modalities: Iterable[str]) -> MarkerSet:
    from spatialmultiomics.annotate._reference import BUILTIN_REFERENCES, builtin_markers

    if isinstance(markers, MarkerSet):
        return markers
    if isinstance(markers, Mapping):
        return MarkerSet.from_dict(markers, name="markers", extra_modalities=extra_modalities)
    if isinstance(markers, str | Path):
        path = Path(markers)
        if not path.exists() and str(markers).lower() in BUILTIN_REFERENCES:
            return builtin_markers(str(markers))
        if not path.exists():
            msg = (
                f"markers={str(markers)!r} is neither a marker file nor a built-in reference "
                f"({', '.join(sorted(BUILTIN_REFERENCES))})."
            )
            raise InputError(msg)
        return MarkerSet.read(path, extra_modalities=extra_modalities)
    msg = (
        "markers must be None, a dict, a MarkerSet, a file path, a reference name or a list of these; "
        f"got {type(markers).__name__}."
    )
    raise InputError(msg)


def merge_markers(*marker_sets: MarkerSource, how: str = "replace", name: str | None = None) -> MarkerSet:
    """Combine marker references, later ones over earlier ones.

    Parameters
    ----------
    *marker_sets
        Two or more references in any form :func:`load_markers` accepts (built-in names, files, dicts,
        :class:`MarkerSet`), in order.
    how
        ``'replace'``: a type that appears again takes the later markers and negative markers (its position stays
        that of its first appearance, and its parent and group those of the earlier definition unless the later one
        sets them); new types are appended. ``'union'``: the marker lists of a repeated type are joined
        (per modality, first-seen order, without duplicates).
    name
        Provenance label of the result; default the names joined with ``'+'``.

    Returns
    -------
    MarkerSet

    Examples
    --------
    >>> from spatialmultiomics.annotate import merge_markers
    >>> ref = merge_markers("immune_tme", {"Tumour": {"genes": ["MLANA", "PMEL"], "proteins": ["SOX10"]}})
    >>> ref.types[-1], ref.name
    ('Tumour', 'immune_tme+markers')
    """
    from spatialmultiomics._validate import check_option

    how = check_option(how, ("replace", "union"), name="how")
    if not marker_sets:
        msg = "merge_markers needs at least one marker reference."
        raise InputError(msg)
    sets = [_load_one(m, extra_modalities=()) if not isinstance(m, MarkerSet) else m for m in marker_sets]
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    negative: dict[str, dict[str, tuple[str, ...]]] = {}
    parent: dict[str, str] = {}
    group: dict[str, str] = {}

    def union(a: Mapping[str, tuple[str, ...]], b: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
        merged = dict(a)
        for m, v in b.items():
            merged[m] = tuple(dict.fromkeys(merged.get(m, ()) + tuple(v)))
        return merged

    for ms in sets:
        for t, mods in ms.markers.items():
            if how == "replace" or t not in out:
                # the markers are replaced; the type keeps its place in the hierarchy unless it names another
                out[t] = {m: tuple(v) for m, v in mods.items()}
                negative[t] = {m: tuple(v) for m, v in ms.negative.get(t, {}).items()}
            else:
                out[t] = union(out[t], mods)
                negative[t] = union(negative.get(t, {}), ms.negative.get(t, {}))
            if t in ms.parent:
                parent[t] = ms.parent[t]
            if t in ms.group:
                group[t] = ms.group[t]
    return MarkerSet(out, name=name or "+".join(ms.name for ms in sets), negative=negative, parent=parent, group=group)


def load_markers(
    markers: MarkerSource | Sequence[MarkerSource] | None = None,
    *,
    extend: bool | str = False,
    extra_modalities: Iterable[str] = (),
) -> MarkerSet:
    """Return a :class:`MarkerSet` from any accepted form.

    Parameters
    ----------
    markers
        ``None`` (the built-in ``'immune_tme'`` reference), the name of a built-in reference (``'immune_tme'``,
        ``'lymphoid'``), a :class:`MarkerSet`, a dict ``{type: {"genes": [...], "proteins": [...]}}`` (keys also
        ``rna`` / ``protein``), the path of a JSON / YAML / CSV marker file, or a list of these, merged in order
        by :func:`merge_markers` (``how='replace'``: a later definition of a type replaces an earlier one).
    extend
        False: use ``markers`` as given (they replace the built-in reference). True: add them to the built-in
        ``'immune_tme'`` reference; a reference name: add them to that reference. Types defined in both take
        the user's markers.
    extra_modalities
        Further modality names accepted as keys (the modalities of the data).

    Examples
    --------
    >>> from spatialmultiomics.annotate import load_markers
    >>> load_markers(["immune_tme", "lymphoid"]).name
    'immune_tme+lymphoid'
    >>> ref = load_markers({"Melanocytes": {"genes": ["PMEL", "MLANA"]}}, extend=True)
    >>> "CD8 T cells" in ref.types and "Melanocytes" in ref.types
    True
    """
    from spatialmultiomics.annotate._reference import DEFAULT_REFERENCE, builtin_markers

    if isinstance(extend, str):
        base: MarkerSet | None = builtin_markers(extend)
    elif isinstance(extend, bool | np.bool_):
        base = builtin_markers(DEFAULT_REFERENCE) if extend else None
    else:
        msg = f"extend must be True/False or the name of a built-in reference, got {extend!r}."
        raise InputError(msg)
    if markers is None:
        return base if base is not None else builtin_markers()
    if isinstance(markers, list | tuple):
        if not markers:
            msg = "markers is an empty list; give at least one marker reference (file, dict or reference name)."
            raise InputError(msg)
        sets = [_load_one(m, extra_modalities=extra_modalities) for m in markers]
        loaded = sets[0] if len(sets) == 1 else merge_markers(*sets)
    else:
        loaded = _load_one(markers, extra_modalities=extra_modalities)
    return check_parents(loaded if base is None else merge_markers(base, loaded))


def _lookup(names: Sequence[str]) -> tuple[dict[str, int], dict[int, int]]:
    """First feature index per canonical name and per alias group.

    Full feature names are looked up first; the variants of :func:`feature_name_variants` only fill names that
    no feature carries in full (so ``CD45`` finds a ``CD45`` channel before ``CD45RA (CD45)``).
    """
    by_name: dict[str, int] = {}
    by_group: dict[int, int] = {}
    variants: list[tuple[int, str]] = []
    for j, n in enumerate(names):
        c = canonical_name(n)
        by_name.setdefault(c, j)
        g = GROUP_OF.get(c)
        if g is not None:
            by_group.setdefault(g, j)
        variants.extend((j, v) for v in feature_name_variants(n))
    for j, v in variants:
        c = canonical_name(v)
        by_name.setdefault(c, j)
        g = GROUP_OF.get(c)
        if g is not None:
            by_group.setdefault(g, j)
    return by_name, by_group


def match_markers(
    marker_set: MarkerSet, feature_names: Mapping[str, Sequence[str]], *, negative: bool = False
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
    negative
        Match the types' negative markers instead of their markers.

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
            names = marker_set.get_negative(cell_type, mod) if negative else marker_set.get(cell_type, mod)
            for marker in names:
                c = canonical_name(marker)
                j = by_name.get(c)
                if j is None and c in GROUP_OF:
                    j = by_group.get(GROUP_OF[c])
                if j is not None and j not in idx:
                    idx.append(j)
            entry[mod] = np.asarray(idx, dtype=np.int64)
        out[cell_type] = entry
    return out
