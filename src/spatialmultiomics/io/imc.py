"""Imaging mass cytometry: a steinbock output folder or a plain per-cell CSV -> AnnData in µm.

Files read
----------
- steinbock folder: ``intensities/<image>.csv`` (``Object`` + one mean intensity column per channel) joined on
  ``Object`` to ``regionprops/<image>.csv`` (``area``, ``centroid-0`` = row = y, ``centroid-1`` = column = x,
  axis lengths, eccentricity); ``panel.csv`` (``channel`` = metal, ``name``) names the channels (``var['channel']``
  holds the metal; intensity headers that are metals are renamed to their panel name); ``images.csv`` is recorded.
  One image = one FOV (``obs['fov']``); cell ids are ``<image>_<Object>``.
- a plain per-cell CSV: an object id (``Object``, ``ObjectNumber``, ``CellID``, ...), centroid columns
  (``centroid-1`` / ``centroid-0``, CellProfiler ``Location_Center_X`` / ``_Y``, ``x`` / ``y``), an optional
  image column (``image``, ``ImageNumber``) and one column per channel.

Coordinates: pixels times ``pixel_size_um`` (IMC ablates at 1 µm per pixel).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics.io._celltable import protein_table, split_markers
from spatialmultiomics.io._common import (
    column_key,
    existing_path,
    find_column,
    id_strings,
    read_frame,
    require_columns,
    require_files,
)
from spatialmultiomics.io._constants import ImcColumns, ImcFiles

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["imc"]


def _panel(path: Path | None) -> pd.DataFrame | None:
    if path is None:
        return None
    panel, _ = read_frame(path, text_columns=lambda i, n: n.strip().lower() in ("channel", "name"))
    cols = require_columns(
        list(panel.columns),
        {"channel": (ImcColumns.PANEL_CHANNEL,), "name": (ImcColumns.PANEL_NAME,)},
        path=path,
        what="panel",
    )
    return pd.DataFrame(
        {"channel": panel[cols["channel"]].astype(str).to_numpy(), "name": panel[cols["name"]].astype(str).to_numpy()}
    )


def _steinbock(folder: Path, px: float) -> ad.AnnData:
    found = require_files(
        folder,
        {
            "intensities": ((ImcFiles.INTENSITIES,), "dir"),
            "regionprops": ((ImcFiles.REGIONPROPS,), "dir"),
            "?panel": ((ImcFiles.PANEL,), "file"),
            "?images": ((ImcFiles.IMAGES,), "file"),
        },
        platform="steinbock (IMC)",
    )
    inten_dir, props_dir = found["intensities"], found["regionprops"]
    images = sorted(p for p in inten_dir.glob("*.csv") if p.is_file())  # type: ignore[union-attr]
    if not images:
        msg = f"{inten_dir}: no per-image intensity tables (*.csv)."
        raise InputError(msg)
    absent = [p.name for p in images if not (props_dir / p.name).is_file()]  # type: ignore[operator]
    if absent:
        msg = f"{props_dir}: missing {len(absent)} regionprops table(s) matching intensities/: {absent[:10]}."
        raise InputError(msg)
    panel = _panel(found.get("panel"))
    frames, fovs = [], []
    channels: list[str] | None = None
    # many small files: parse them on every core (pyarrow releases the GIL)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        inten_frames = list(pool.map(lambda p: read_frame(p)[0], images))
        props_frames = list(pool.map(lambda p: read_frame(props_dir / p.name)[0], images))  # type: ignore[operator]
    for img, inten, props in zip(images, inten_frames, props_frames, strict=True):
        ci = require_columns(list(inten.columns), {"Object": ("Object",)}, path=img, what="intensities table")
        cp = require_columns(
            list(props.columns),
            {"Object": ("Object",), "centroid-0": ("centroid-0",), "centroid-1": ("centroid-1",)},
            path=props_dir / img.name,
            what="regionprops table",
        )
        chans = [c for c in inten.columns if c != ci["Object"]]
        if channels is None:
            channels = chans
        elif chans != channels:
            msg = f"{img}: channels {chans} differ from {images[0].name}'s {channels}; one panel per folder."
            raise InputError(msg)
        left = inten.set_index(id_strings(inten[ci["Object"]])).drop(columns=[ci["Object"]])
        right = props.set_index(id_strings(props[cp["Object"]])).drop(columns=[cp["Object"]])
        for name, side, p in (("intensities", left, img), ("regionprops", right, props_dir / img.name)):
            if not side.index.is_unique:
                dup = side.index[side.index.duplicated()][0]
                msg = f"{p}: duplicate Object {dup!r} in the {name} table; objects must be unique per image."
                raise InputError(msg)
        missing = left.index.difference(right.index)
        if len(missing):
            msg = (
                f"{props_dir / img.name}: {len(missing)} objects of the intensities table have no regionprops row "
                f"(e.g. Object {missing[0]!r})."
            )
            raise InputError(msg)
        joined = left.join(right, how="left")
        joined.insert(0, "Object", left.index.to_numpy())
        frames.append(joined.reset_index(drop=True))
        fovs.append(np.full(len(joined), img.stem, dtype=object))
    frame = pd.concat(frames, ignore_index=True)
    fov = np.concatenate(fovs)
    names = list(channels or [])
    var = None
    if panel is not None:
        by_name = dict(zip(panel["name"], panel["channel"], strict=True))
        by_metal = dict(zip(panel["channel"], panel["name"], strict=True))
        if names and all(n in by_metal and n not in by_name for n in names):
            names = [by_metal[n] for n in names]  # headers are metals: use the panel names
            metals = list(channels or [])
        else:
            metals = [by_name.get(n, "") for n in names]
        var = pd.DataFrame({"channel": metals})
    obs_cols = [c for c in frame.columns if c not in (*(channels or []), "centroid-0", "centroid-1")]
    frame["_cell_id"] = [f"{f}_{o}" for f, o in zip(fov, frame["Object"], strict=True)]
    files = [*images, *(props_dir / p.name for p in images)] + [
        f for f in (found.get("panel"), found.get("images")) if f
    ]  # type: ignore[operator]
    return protein_table(
        frame,
        path=folder,
        platform="imc",
        reader="spatialmultiomics.io.imc",
        version="steinbock output folder",
        pixel_size_um=px,
        files=[folder, *files],
        x_col="centroid-1",
        y_col="centroid-0",
        id_col="_cell_id",
        fov_col=None,
        markers=list(channels or []),
        obs_cols=obs_cols,
        var=var,
        var_names=names,
        fov_values=fov,
        n_images=len(images),
    )


def imc(path: str | Path, *, pixel_size_um: float = ImcColumns.PIXEL_SIZE_UM) -> ad.AnnData:
    """Read imaging mass cytometry single-cell data into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        A steinbock output folder (``intensities/``, ``regionprops/``, ``panel.csv``) or a per-cell CSV.
    pixel_size_um
        µm per pixel (1 for IMC).

    Returns
    -------
    AnnData: ``X`` dense float32 mean intensities (cells x channels), ``var['channel']`` (metal) from the panel;
    ``obs['fov']`` (image); ``obs`` the region properties (``area``, axis lengths, ...) and ``Object``;
    ``obsm['spatial']`` (x, y) in µm; ``uns['provenance']``.
    """
    from spatialmultiomics._validate import check_positive

    px = check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    if path.is_dir():
        return _steinbock(path, px)
    ids = {c.lower() for c in ImcColumns.OBJECT} | {c.lower() for c in ImcColumns.IMAGE}
    frame, _ = read_frame(path, text_columns=lambda i, n: n.strip().lower() in ids)
    columns = list(frame.columns)
    cols = require_columns(columns, {"x": ImcColumns.X, "y": ImcColumns.Y}, path=path, what="IMC cell table")
    id_col = find_column(columns, ImcColumns.OBJECT)
    fov_col = find_column(columns, ImcColumns.IMAGE)
    markers, obs_cols = split_markers(frame, [cols["x"], cols["y"], id_col, fov_col])
    # CellProfiler exports carry many AreaShape_/Location_ measurements: they are not channels
    shape = [m for m in markers if column_key(m).startswith(("areashape", "location", "neighbors", "number"))]
    markers = [m for m in markers if m not in shape]
    return protein_table(
        frame,
        path=path,
        platform="imc",
        reader="spatialmultiomics.io.imc",
        version="per-cell table",
        pixel_size_um=px,
        files=[path],
        x_col=cols["x"],
        y_col=cols["y"],
        id_col=id_col,
        fov_col=fov_col,
        markers=markers,
        obs_cols=[*obs_cols, *shape],
    )
