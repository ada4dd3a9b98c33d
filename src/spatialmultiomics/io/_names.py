"""Column names as people really have them: stray index columns, coordinate spellings, channel names -> markers.

Three jobs, shared by the standardized-table reader and the per-cell marker readers:

- :func:`unnamed_index_columns`: pandas writes its row index as an unnamed first column (``""`` or
  ``Unnamed: 0``), once per round trip (ark-analysis cell tables carry two, sometimes with the same name); such
  columns of whole numbers are bookkeeping, not features.
- :func:`find_coordinates`: the x / y columns of the common tools (``x``, ``X_centroid``, ``X_position``,
  ``Cell X Position``, ``Centroid X µm``, ``centroid-1`` / ``centroid-0``, ``x_um`` ...) and the unit the name
  states (µm, pixels or unstated).
- :func:`marker_name`: the marker of a channel column written by an imaging tool
  (``CD8 - cytotoxic T cells:Cyc_3_ch_2`` -> ``CD8``, ``Entire Cell CD8 (Opal 540) Mean`` -> ``CD8``,
  ``Cell: CD8: Mean`` -> ``CD8``, ``CD8 Cell Intensity`` -> ``CD8``); readers keep the original in
  ``var['original_name']``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "COMPARTMENTS",
    "ChannelName",
    "clean_marker_names",
    "find_coordinates",
    "is_unnamed",
    "marker_name",
    "parse_channel",
    "unit_key",
    "unnamed_index_columns",
]

_UNNAMED = re.compile(r"^Unnamed: \d+(\.\d+)*$")
#: cell compartments named by inForm, QuPath and HALO (lower case); "entire cell" and "cell" are the whole cell
COMPARTMENTS = ("entire cell", "cell", "nucleus", "cytoplasm", "membrane")
_COMP = r"(?P<comp>Entire Cell|Cell|Nucleus|Cytoplasm|Membrane)"
_STAT = r"(?P<stat>Min|Mean|Max|Median|Std\.? ?Dev\.?|Total|Sum|Variance)"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # inForm: "Entire Cell CD8 (Opal 540) Mean (Normalized Counts, Total Weighting)"
    ("inform", re.compile(rf"^{_COMP} (?P<marker>.+?) {_STAT}(?: \((?P<unit>[^()]*)\))?$", re.IGNORECASE)),
    # QuPath >= 0.2: "Cell: CD8: Mean"; some scripts write "CD8: Cell: Mean"; QuPath 0.1: "Nucleus: Opal 480 mean"
    ("qupath", re.compile(rf"^{_COMP}: (?P<marker>.+?): {_STAT}$", re.IGNORECASE)),
    ("qupath", re.compile(rf"^(?P<marker>.+?): {_COMP}: {_STAT}$", re.IGNORECASE)),
    ("qupath", re.compile(rf"^{_COMP}: (?P<marker>.+?) {_STAT}$", re.IGNORECASE)),
    # HALO object data: "CD8 Cell Intensity", "Opal 540 Nucleus Intensity"
    ("halo", re.compile(rf"^(?P<marker>.+?) {_COMP} Intensity$", re.IGNORECASE)),
)
#: CODEX processing toolkits: "CD8 - cytotoxic T cells:Cyc_3_ch_2", "cyc003_ch002:CD8", "CD8:Cyc_3_ch_2"
_CYCLE = r"(?:cyc|cycle)[_\s]?\d+[_\s]?(?:ch|cha|channel)?[_\s]?\d*"
_CODEX_AFTER = re.compile(rf"^(?P<marker>[^:]+?)\s*:\s*(?P<channel>{_CYCLE}.*)$", re.IGNORECASE)
_CODEX_BEFORE = re.compile(rf"^(?P<channel>{_CYCLE})\s*:\s*(?P<marker>[^:]+)$", re.IGNORECASE)
#: a dye / channel in brackets after the marker: "CD8 (Opal 540)", "PD-L1 (Opal 520)"
_DYE = re.compile(r"^(?P<marker>.+?)\s*\((?P<dye>[^()]+)\)$")
#: a description after the marker: "CD8 - cytotoxic T cells"
_DESCRIPTION = re.compile(r"^(?P<marker>\S.*?)\s+[-\u2013]\s+\S.*$")


@dataclass(frozen=True)
class ChannelName:
    """A parsed channel column: the marker, the tool's layout, compartment and statistic (lower case, '' when the
    layout has none) and the dye / imaging channel ('' when not written)."""

    marker: str
    layout: str
    compartment: str = ""
    statistic: str = ""
    channel: str = ""


def _statistic(stat: str) -> str:
    key = re.sub(r"[\s.]", "", stat.lower())
    return "std" if key.startswith("std") else key


def _split_marker(text: str) -> tuple[str, str]:
    """(marker, dye): ``'CD8 (Opal 540)'`` -> ``('CD8', 'Opal 540')``; ``'CD8 - cytotoxic T'`` -> ``('CD8', '')``."""
    text = text.strip()
    dye = ""
    match = _DYE.match(text)
    if match and match.group("marker").strip():
        text, dye = match.group("marker").strip(), match.group("dye").strip()
    match = _DESCRIPTION.match(text)
    if match:
        text = match.group("marker").strip()
    return text, dye


def parse_channel(name: str) -> ChannelName | None:
    """The marker of a channel column written by CODEX toolkits, inForm, QuPath or HALO; None for other names.

    Examples
    --------
    >>> parse_channel("Entire Cell CD8 (Opal 540) Mean (Normalized Counts, Total Weighting)").marker
    'CD8'
    >>> parse_channel("Cell: CD8: Mean").compartment
    'cell'
    >>> parse_channel("CD8 - cytotoxic T cells:Cyc_3_ch_2").channel
    'Cyc_3_ch_2'
    >>> parse_channel("CD8") is None
    True
    """
    text = str(name).strip()
    for pattern in (_CODEX_AFTER, _CODEX_BEFORE):
        match = pattern.match(text)
        if match:
            marker, dye = _split_marker(match.group("marker"))
            if marker:
                return ChannelName(marker, "codex", channel=match.group("channel").strip() or dye)
    for layout, pattern in _PATTERNS:
        match = pattern.match(text)
        if match:
            marker, dye = _split_marker(match.group("marker"))
            if not marker or marker.lower() in COMPARTMENTS:
                continue
            return ChannelName(
                marker,
                layout,
                compartment=match.group("comp").lower(),
                statistic=_statistic(match.group("stat")) if "stat" in match.groupdict() else "",
                channel=dye,
            )
    return None


def marker_name(name: str) -> str:
    """The marker of a channel column (:func:`parse_channel`), or the name unchanged when it is not a tool's layout."""
    parsed = parse_channel(name)
    return parsed.marker if parsed is not None else str(name)


def clean_marker_names(names: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """(cleaned names, dye / channel of each ('' when none), whether anything changed).

    Names are cleaned only when the result stays unique: two columns that would become the same marker (one marker
    measured twice) keep their original names.
    """
    parsed = [parse_channel(n) for n in names]
    cleaned = [p.marker if p is not None else str(n) for p, n in zip(parsed, names, strict=True)]
    if len(set(cleaned)) != len(cleaned):
        return [str(n) for n in names], ["" for _ in names], False
    channels = [p.channel if p is not None else "" for p in parsed]
    return cleaned, channels, cleaned != [str(n) for n in names]


# ------------------------------------------------------------------------------------------------- index columns
def is_unnamed(name: str) -> bool:
    """Whether a column name is an empty header cell as pandas names it (``Unnamed: 0``, ``Unnamed: 0.1`` ...)."""
    return bool(_UNNAMED.match(str(name))) or not str(name).strip()


def _whole_numbers(series: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(series):
        return True
    if pd.api.types.is_float_dtype(series):
        values = series.to_numpy()
        return bool(np.isfinite(values).all() and np.array_equal(values, np.round(values)))
    if series.dtype == object and len(series):  # read as text (a first column may hold ids): digits only
        return bool(series.astype(str).str.fullmatch(r"\d+").all())
    return False


def unnamed_index_columns(frame: pd.DataFrame) -> list[str]:
    """Unnamed columns holding whole numbers: row indices written by pandas (``to_csv`` without ``index=False``),
    one per round trip. Unnamed text columns (cell ids written as the index) are not among them."""
    return [str(c) for c in frame.columns if is_unnamed(c) and _whole_numbers(frame[c])]


# ------------------------------------------------------------------------------------------------------ coordinates
def unit_key(name: str) -> str:
    """Lower-case name with the micro sign spelt ``u`` (``µ`` U+00B5, ``μ`` U+03BC, or ``Âµ`` from a mis-decoded file)."""
    return (
        str(name)
        .strip()
        .lower()
        .replace("âµ", "u")
        .replace("\u00b5", "u")
        .replace("\u03bc", "u")
        .replace("\ufffd", "u")
    )


#: (x, y) spellings of the common tools, in order of preference (compared with :func:`unit_key`)
COORDINATE_PAIRS: tuple[tuple[str, str], ...] = (
    ("x", "y"),
    ("x_centroid", "y_centroid"),
    ("centroidx", "centroidy"),
    ("centroid_x", "centroid_y"),
    ("center_x", "center_y"),
    ("x:x", "y:y"),
    ("x_um", "y_um"),
    ("x_px", "y_px"),
    ("x_position", "y_position"),
    ("cell x position", "cell y position"),
    ("centroid x um", "centroid y um"),
    ("centroid x px", "centroid y px"),
    ("centroid x", "centroid y"),
    ("x_location", "y_location"),
    ("pos_x", "pos_y"),
    ("cellx", "celly"),
    ("location_center_x", "location_center_y"),
    ("centerx_global_px", "centery_global_px"),
    ("pxl_col_in_fullres", "pxl_row_in_fullres"),
    ("centroid-1", "centroid-0"),  # scikit-image regionprops: centroid-0 is the row (y), centroid-1 the column (x)
)


def coordinate_unit(name: str) -> str:
    """What a coordinate column's name says of its unit: ``'um'``, ``'px'`` or ``''`` (unstated)."""
    key = unit_key(name)
    if re.search(r"(^|[\s_(\-])(um|microns?|micrometres?|micrometers?)($|[\s_)\-])", key):
        return "um"
    if re.search(r"(^|[\s_(\-])(px|pixels?)($|[\s_)\-])", key):
        return "px"
    return ""


def find_coordinates(columns: Sequence[str]) -> tuple[str | None, str | None, str]:
    """(x column, y column, unit) of a table: the first pair of :data:`COORDINATE_PAIRS` present; unit from the
    names (``'um'``, ``'px'`` or ``''``). When no pair is complete, the x or y found alone (the other None)."""
    lookup: dict[str, str] = {}
    for c in columns:
        lookup.setdefault(unit_key(c), str(c))
    for xk, yk in COORDINATE_PAIRS:
        if xk in lookup and yk in lookup:
            xc, yc = lookup[xk], lookup[yk]
            return xc, yc, coordinate_unit(xc) or coordinate_unit(yc)
    xs = next((lookup[xk] for xk, _ in COORDINATE_PAIRS if xk in lookup), None)
    ys = next((lookup[yk] for _, yk in COORDINATE_PAIRS if yk in lookup), None)
    return xs, ys, ""
