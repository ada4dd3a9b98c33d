"""Overlay of the modalities' coordinates before and after alignment (reads stored results; computes nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["alignment_overlay"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _transforms_from(alignment: Mapping[str, Any]) -> dict[str, Any]:
    from spatialmultiomics.align import Transform

    mods = alignment.get("modalities", {}) if isinstance(alignment, Mapping) else {}
    return {name: Transform.from_dict(entry["transform"]) for name, entry in mods.items() if "transform" in entry}


def _subsample(xy: np.ndarray, max_points: int) -> np.ndarray:
    if xy.shape[0] <= max_points:
        return xy
    step = int(np.ceil(xy.shape[0] / max_points))
    return xy[::step]


def alignment_overlay(
    data: Any,
    *,
    alignment: Mapping[str, Any] | None = None,
    modalities: list[str] | None = None,
    max_points: int = 50_000,
    point_size: float = 2.0,
    figsize: tuple[float, float] = (10.0, 5.0),
) -> Figure:
    """Draw every modality's coordinates over each other, before (own frames) and after alignment (reference frame).

    Parameters
    ----------
    data
        A MuData returned by :func:`smo.align.align` (before = each modality's ``obsm['spatial_source']``, the
        source cells in their own frame; after = the shared coordinates and the source cells moved by the stored
        transform), or a dict of modality name -> AnnData as read (before = their ``obsm['spatial']``; after = the
        same moved by the transforms in ``alignment``).
    alignment
        The ``uns['alignment']`` record holding the transforms (needed with a dict; default: ``data.uns``).
    modalities
        Modalities to draw (default all).
    max_points
        At most this many points per modality are drawn (every n-th).
    point_size
        Marker size.
    figsize
        Figure size in inches.

    Returns
    -------
    The matplotlib :class:`~matplotlib.figure.Figure` with two Axes (``fig.axes[0]`` before, ``fig.axes[1]``
    after); coordinates in µm. Made without pyplot, so no display or backend is needed.

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> from spatialmultiomics.pl import alignment_overlay
    >>> mdata = smo.datasets.paper_benchmark(seed=0)
    >>> fig = alignment_overlay(smo.align.align({"rna": mdata["rna"], "protein": mdata["protein"]}))
    >>> [ax.get_title() for ax in fig.axes]
    ['before alignment', 'after alignment']
    """
    from matplotlib.figure import Figure

    from spatialmultiomics.align import Transform

    is_mudata = hasattr(data, "mod") and hasattr(data, "uns")
    mods = dict(data.mod) if is_mudata else data
    if not isinstance(mods, Mapping) or not mods:
        msg = f"data must be an aligned MuData or a dict of modality name -> AnnData, got {type(data).__name__}."
        raise InputError(msg)
    record = alignment if alignment is not None else (data.uns.get("alignment") if is_mudata else None)
    if record is None:
        msg = "no alignment record: pass alignment=mdata.uns['alignment'] (from smo.align.align) with a dict."
        raise InputError(msg)
    transforms = _transforms_from(record)
    reference = str(record.get("reference", record.get("coordinates_from", next(iter(mods)))))
    names = list(mods) if modalities is None else list(modalities)
    missing = [n for n in names if n not in mods]
    if missing:
        msg = f"modalities {missing} are not in the data; available: {list(mods)}."
        raise InputError(msg)
    fig = Figure(figsize=figsize, layout="constrained")
    before, after = fig.subplots(1, 2)
    for i, name in enumerate(names):
        adata = mods[name]
        color = _COLORS[i % len(_COLORS)]
        if is_mudata and name != reference and "spatial_source" in adata.obsm:
            raw = np.asarray(adata.obsm["spatial_source"], dtype=np.float64)
        elif Keys.SPATIAL in adata.obsm:
            raw = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]
        else:
            msg = f"modality {name!r} has no obsm['spatial'] coordinates to draw."
            raise InputError(msg)
        t = transforms.get(name, Transform.identity())
        moved = t.apply(raw)
        label = f"{name} ({'reference' if name == reference else t.kind})"
        for ax, xy in ((before, raw), (after, moved)):
            pts = _subsample(xy, max_points)
            ax.scatter(pts[:, 0], pts[:, 1], s=point_size, c=color, alpha=0.5, linewidths=0, label=label)
    for ax, title in ((before, "before alignment"), (after, "after alignment")):
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
        ax.invert_yaxis()
        ax.legend(loc="best", fontsize="small", markerscale=4)
    summary = record.get("modalities", {}) if isinstance(record, Mapping) else {}
    lines = []
    for name, entry in summary.items():
        resid = entry.get("residual_um", float("nan"))
        res_txt = f", residual {float(resid):.2f} µm" if np.isfinite(float(resid)) else ""
        lines.append(f"{name}: {entry.get('route', '?')}{res_txt}")
    if lines:
        fig.suptitle("; ".join(lines), fontsize="small")
    return fig
