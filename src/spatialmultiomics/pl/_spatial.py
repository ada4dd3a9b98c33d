"""Spatial maps: cell types per field of view, and niches, in micrometres."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._keys import Keys
from spatialmultiomics.pl._utils import (
    AA_POINTS,
    UNKNOWN_COLOR,
    cell_type_colors,
    colors_for,
    coordinates,
    fov_groups,
    get_container,
    graph_radius_text,
    grid_shape,
    new_figure,
    require,
    setup_spatial_axes,
    subsample,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["niches", "spatial_cell_types", "spot_composition"]


def _label_map(
    mdata: Any,
    key: str,
    colors: dict[str, str],
    *,
    fov: str | None,
    ax: Axes | None,
    ncols: int,
    title: str,
    legend_title: str,
) -> Axes | list[Axes]:
    """Scatter of cells coloured by the categorical ``obs[key]``, one panel per field of view."""
    from matplotlib.lines import Line2D

    xy_all = coordinates(mdata)
    labels = mdata.obs[key].astype(str).to_numpy()
    groups = fov_groups(mdata, fov)
    if ax is not None and len(groups) > 1:
        msg = f"ax: the data has {len(groups)} fields of view; pass fov=... to draw one of them on ax."
        raise ValueError(msg)
    counts = pd.Series(labels).value_counts()
    order = [c for c in colors if c in counts.index]  # category order
    rank = {c: i for i, c in enumerate(counts.index)}  # frequent first, so rare types are drawn on top
    if ax is None:
        nrows, ncol = grid_shape(len(groups), ncols)
        fig = new_figure((4.6 * ncol + 2.4, 4.4 * nrows))
        axes = list(np.atleast_1d(fig.subplots(nrows, ncol, squeeze=False).ravel()))
        for extra in axes[len(groups) :]:
            extra.set_axis_off()
        axes = axes[: len(groups)]
    else:
        axes = [ax]
    for a, (name, idx) in zip(axes, groups, strict=True):
        shown, cut = subsample(idx)
        shown = shown[np.argsort([rank[lab] for lab in labels[shown]], kind="stable")]
        head = title if name is None else f"{title} — FOV {name}"
        if cut:
            head += f"\n({shown.size:,} of {idx.size:,} cells shown)"
        size = setup_spatial_axes(a, xy_all[idx], head)
        a.scatter(
            xy_all[shown, 0],
            xy_all[shown, 1],
            c=[colors.get(lab, UNKNOWN_COLOR) for lab in labels[shown]],  # missing labels: grey
            s=size,
            linewidths=0,
            rasterized=True,
            antialiased=shown.size <= AA_POINTS,
        )
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markersize=7,
            markerfacecolor=colors[c],
            markeredgewidth=0,
            label=f"{c} ({counts[c]:,})",
        )
        for c in order
    ]
    axes[-1].legend(
        handles=handles,
        title=legend_title,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
        fontsize=8,
        title_fontsize=9,
        ncols=1 if len(handles) <= 22 else 2,
    )
    return axes[0] if len(axes) == 1 else axes


def spatial_cell_types(
    data: Any,
    *,
    label_key: str = Keys.CELL_TYPE,
    fov: str | None = None,
    ncols: int = 3,
    ax: Axes | None = None,
) -> Axes | list[Axes]:
    """Map of the cells coloured by cell type, in micrometres, one panel per field of view.

    Reads ``obs[label_key]`` (from :func:`smo.annotate.annotate`) and ``obsm['spatial']``; the colours come from
    :func:`cell_type_colors` and are the same in every figure. The y axis points down, as in the tissue image.

    Parameters
    ----------
    data
        MuData / AnnData with the annotation, or a :class:`~spatialmultiomics.PipelineResult`.
    label_key
        Column of ``obs`` with the cell types.
    fov
        Draw only this field of view (``obs['fov']``); default all, one panel each.
    ncols
        Panels per row when there are several fields of view.
    ax
        Axes to draw on (one field of view only); default a new figure.

    Returns
    -------
    The Axes, or a list of Axes (one per field of view) when several are drawn.
    """
    mdata = get_container(data)
    require(label_key in mdata.obs, f"obs[{label_key!r}]", "smo.annotate.annotate(mdata)")
    colors = cell_type_colors(mdata, label_key=label_key)
    return _label_map(
        mdata, label_key, colors, fov=fov, ax=ax, ncols=ncols, title="Cell types", legend_title="cell type (cells)"
    )


def niches(
    data: Any,
    *,
    key: str | None = None,
    fov: str | None = None,
    ncols: int = 3,
    ax: Axes | None = None,
) -> Axes | list[Axes]:
    """Map of the cells coloured by their niche, in micrometres, one panel per field of view.

    By default draws the cellular neighbourhoods ``obs['niche']`` (from :func:`smo.spatial.niches`) when present,
    else ``obs['niche_type']``, the most frequent cell type among each cell's neighbours (from
    :func:`smo.spatial.niche_composition`), in the cell-type colours.

    Parameters
    ----------
    data
        MuData / AnnData with niche results, or a :class:`~spatialmultiomics.PipelineResult`.
    key
        ``'niche'`` or ``'niche_type'`` (or any categorical ``obs`` column); default as above.
    fov
        Draw only this field of view; default all.
    ncols
        Panels per row when there are several fields of view.
    ax
        Axes to draw on (one field of view only); default a new figure.

    Returns
    -------
    The Axes, or a list of Axes (one per field of view) when several are drawn.
    """
    mdata = get_container(data)
    if key is None:
        key = Keys.NICHE if Keys.NICHE in mdata.obs else Keys.NICHE_TYPE
    require(key in mdata.obs, f"obs[{key!r}]", "smo.spatial.niche_composition(mdata) or smo.spatial.niches(mdata)")
    col = mdata.obs[key]
    names = [
        str(c) for c in (col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.unique()))
    ]
    within = graph_radius_text(mdata)
    if key == Keys.NICHE_TYPE:
        palette = cell_type_colors(mdata) if Keys.CELL_TYPE in mdata.obs else {}
        colors = colors_for(names, palette)
        title, legend = f"Niche type (most frequent neighbour type{within})", "niche type (cells)"
    else:
        colors = colors_for(names, {})
        title, legend = "Cellular neighbourhoods", f"{key} (cells)"
    return _label_map(mdata, key, colors, fov=fov, ax=ax, ncols=ncols, title=title, legend_title=legend)


def spot_composition(data: Any, *, max_spots: int = 20000, ax: Axes | None = None) -> Axes:
    """Each spot drawn as a pie of its cell-type composition at its position, in micrometres.

    Reads ``obsm['cell_type_composition']`` (from :func:`smo.annotate.spot_composition`, run by the pipeline when
    spots have single cells under them) and ``obsm['spatial']``; the pie's radius is the spot's (half the stored
    spot diameter, 55 µm by default) and the colours are the cell-type colours of every other figure.

    Parameters
    ----------
    data
        MuData with the composition, or a :class:`~spatialmultiomics.PipelineResult`.
    max_spots
        Draw at most this many spots (a fixed subsample beyond).
    ax
        Axes to draw on; default a new figure.

    Returns
    -------
    The Axes.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Wedge

    mdata = get_container(data)
    require(
        Keys.COMPOSITION in mdata.obsm,
        f"obsm[{Keys.COMPOSITION!r}]",
        "smo.annotate.spot_composition(mdata, cells) (the pipeline runs it for spots with single cells)",
    )
    comp = pd.DataFrame(mdata.obsm[Keys.COMPOSITION])
    names = [str(c) for c in comp.columns]
    palette = cell_type_colors(mdata) if Keys.CELL_TYPE in mdata.obs else {}
    colors = colors_for(names, palette)
    xy = coordinates(mdata)
    idx, cut = subsample(np.flatnonzero(comp.to_numpy().sum(axis=1) > 0), max_spots)
    info = mdata.uns.get("spot_composition", {})
    radius = 0.5 * float(info.get("spot_diameter_um", 55.0)) if hasattr(info, "get") else 27.5
    if ax is None:
        ax = new_figure((7.5, 6.5)).add_subplot(111)
    title = f"Spot composition ({idx.size} spots{', subsample' if cut else ''}; cells typed under each spot)"
    shown = xy[idx] if idx.size else xy
    setup_spatial_axes(ax, shown, title)
    if shown.shape[0]:  # whole pies: the limits reach one radius beyond the outermost centres
        lo, hi = shown.min(axis=0) - 1.1 * radius, shown.max(axis=0) + 1.1 * radius
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(hi[1], lo[1])
    fractions = comp.to_numpy()[idx]
    wedges, facecolors = [], []
    for (x, y), row in zip(xy[idx], fractions, strict=True):
        start = 90.0
        for j in np.flatnonzero(row > 0):
            sweep = 360.0 * float(row[j])
            wedges.append(Wedge((x, y), radius, start, start + sweep))
            facecolors.append(colors[names[j]])
            start += sweep
    ax.add_collection(PatchCollection(wedges, facecolors=facecolors, edgecolors="none"))
    present = [n for n, c in zip(names, fractions.sum(axis=0) > 0, strict=True) if c]
    handles = [Patch(facecolor=colors[n], label=n) for n in present]
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize=8,
        title="cell type",
        title_fontsize=9,
        ncols=1 if len(handles) <= 22 else 2,
    )
    return ax
