"""Multiplex immunofluorescence per-cell tables (inForm, QuPath, HALO): one compartment and statistic per marker.

These tools write every marker several times (per compartment: nucleus, cytoplasm, membrane, whole cell; per
statistic: mean, min, max, ...). :func:`mif_table` keeps one column per marker (the compartment and statistic
asked for), names it after the marker (the column in ``var['original_name']``), keeps every column that is not a
channel measurement (phenotypes, tissue category, areas, classifications) in ``obs`` and builds the AnnData.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics.io._celltable import protein_table
from spatialmultiomics.io._names import parse_channel

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["mif_table", "select_channels"]

#: channels that are not markers: unmixed autofluorescence is kept apart as a control
_NOT_MARKERS = ("autofluorescence", "autofluorescence (af)", "af")


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace(".", " ").split())


def select_channels(
    columns: Sequence[str], *, layouts: Sequence[str], compartment: str, statistic: str, path: Path | str
) -> tuple[list[str], list[str], list[str], list[str]]:
    """(selected columns, their markers, their dyes, every channel column) for one compartment and statistic.

    An unknown compartment or statistic is an InputError listing those the file has.
    """
    want_comp = _norm(compartment)
    want_stat = _norm(statistic).replace(" ", "")
    want_stat = "std" if want_stat.startswith("std") else want_stat
    parsed = {c: parse_channel(c) for c in columns}
    channels = {c: p for c, p in parsed.items() if p is not None and p.layout in layouts}
    whole = ("cell", "entire cell")
    comps_ok = whole if want_comp in whole else (want_comp,)
    selected = [
        c
        for c, p in channels.items()
        if p.compartment in comps_ok and (p.statistic == want_stat or (not p.statistic and want_stat == "mean"))
    ]
    if not selected:
        comps = sorted({p.compartment.title() for p in channels.values()})
        stats = sorted({p.statistic for p in channels.values() if p.statistic})
        if not channels:
            msg = f"{path}: no per-marker intensity columns in this table (columns: {list(columns)[:10]} ...)."
        else:
            msg = (
                f"{path}: no {compartment!r} {statistic!r} columns; the file has compartments {comps} and statistics "
                f"{stats or ['mean']} (compartment=, statistic=)."
            )
        raise InputError(msg)
    return (
        selected,
        [channels[c].marker for c in selected],
        [channels[c].channel for c in selected],
        list(channels),
    )


def mif_table(
    frame: pd.DataFrame,
    *,
    path: Path,
    files: Sequence[Path],
    platform: str,
    layouts: Sequence[str],
    compartment: str,
    statistic: str,
    x_col: str,
    y_col: str,
    pixel_size_um: float,
    id_col: str | None,
    fov_col: str | None,
    version: str,
    drop: Sequence[str] = (),
    **extra: Any,
) -> ad.AnnData:
    """AnnData of one compartment and statistic per marker; other channel columns are not read (counted in the
    provenance), non-channel columns go to ``obs``; autofluorescence is kept apart as a control."""
    from spatialmultiomics.io._common import attach_controls, numeric_block

    selected, markers, dyes, all_channels = select_channels(
        list(frame.columns), layouts=layouts, compartment=compartment, statistic=statistic, path=path
    )
    control = [m.strip().lower() in _NOT_MARKERS for m in markers]
    keep = [i for i, c in enumerate(control) if not c]
    if not keep:
        msg = f"{path}: only autofluorescence among the {compartment!r} {statistic!r} columns; no marker to read."
        raise InputError(msg)
    if len({markers[i] for i in keep}) != len(keep):
        dup = next(markers[i] for i in keep if [markers[j] for j in keep].count(markers[i]) > 1)
        msg = f"{path}: marker {dup!r} has several {compartment!r} {statistic!r} columns; rename one of them."
        raise InputError(msg)
    skip = {*all_channels, x_col, y_col, id_col, fov_col, *drop}
    obs_cols = [c for c in frame.columns if c not in skip]
    var = pd.DataFrame(
        {
            "original_name": [selected[i] for i in keep],
            "channel": [dyes[i] for i in keep],
            "compartment": compartment,
            "statistic": statistic,
        }
    )
    logger.info(
        "%s: %d markers from the %r %r columns (e.g. %r -> %r); %d other channel columns not read.",
        path.name,
        len(keep),
        compartment,
        statistic,
        selected[keep[0]],
        markers[keep[0]],
        len(all_channels) - len(selected),
    )
    adata = protein_table(
        frame,
        path=path,
        platform=platform,
        reader=f"spatialmultiomics.io.{platform}",
        version=version,
        pixel_size_um=pixel_size_um,
        files=files,
        x_col=x_col,
        y_col=y_col,
        id_col=id_col,
        fov_col=fov_col,
        markers=[selected[i] for i in keep],
        obs_cols=obs_cols,
        var=var,
        var_names=[markers[i] for i in keep],
        compartment=compartment,
        statistic=statistic,
        **extra,
    )
    ctrl = [selected[i] for i, c in enumerate(control) if c]
    if ctrl:
        attach_controls(
            adata,
            numeric_block(frame, ctrl, path),
            [markers[selected.index(c)] for c in ctrl],
            ["Autofluorescence"] * len(ctrl),
        )
    return adata
