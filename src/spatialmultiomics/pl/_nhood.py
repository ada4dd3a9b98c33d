"""Co-localization heatmap: which cell types neighbour each other more or less often than random mixing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._keys import Keys
from spatialmultiomics._validate import check_option
from spatialmultiomics.pl._utils import (
    cell_type_colors,
    color_strip,
    colors_for,
    get_container,
    graph_radius_text,
    new_axes,
    require,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["colocalization", "significance_marks"]

_VALUES = {
    "zscore": "z-score (observed − expected) / sd",
    "score": "score (observed − expected) / expected",
}


def significance_marks(qvalue: np.ndarray) -> np.ndarray:
    """``'***'`` for q < 0.001, ``'**'`` for q < 0.01, ``'*'`` for q < 0.05, ``''`` otherwise (and for NaN)."""
    q = np.asarray(qvalue, dtype=np.float64)
    out = np.full(q.shape, "", dtype=object)
    with np.errstate(invalid="ignore"):
        out[q < 0.05] = "*"
        out[q < 0.01] = "**"
        out[q < 0.001] = "***"
    return out


def colocalization(
    data: Any,
    *,
    label_key: str = Keys.CELL_TYPE,
    value: str = "zscore",
    annotate: bool | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of co-localization for every pair of cell types, with significance marks from the q-values.

    Reads ``uns['{label_key}_nhood_enrichment']`` (from :func:`smo.spatial.colocalization`). Red: the row type
    has more neighbours of the column type than under random relabelling of the cells on the same graph; blue:
    fewer. Stars mark Benjamini-Hochberg q < 0.05 (*), < 0.01 (**), < 0.001 (***). Types with fewer than two
    cells have no statistics (grey).

    Parameters
    ----------
    data
        MuData / AnnData with the co-localization result, or a PipelineResult.
    label_key
        The labels the statistics were computed for.
    value
        ``'zscore'`` (default; exact z-score) or ``'score'`` (the seed's (observed − expected) / expected).
    annotate
        Write the value in each cell; default when there are at most 12 types.
    ax
        Axes to draw on; default a new figure.

    Returns
    -------
    The Axes.
    """
    value = check_option(value, _VALUES, name="value")
    mdata = get_container(data)
    key = Keys.nhood(label_key)
    info = mdata.uns.get(key)
    require(
        isinstance(info, dict) and value in info,
        f"co-localization result uns[{key!r}]",
        f"smo.spatial.colocalization(mdata, label_key={label_key!r})",
    )
    cats = [str(c) for c in np.asarray(info["categories"]).tolist()]
    M = np.asarray(info[value], dtype=np.float64)
    q = np.asarray(info.get("qvalue", np.full(M.shape, np.nan)), dtype=np.float64)
    n = len(cats)
    if annotate is None:
        annotate = n <= 12
    if ax is None:
        side = max(4.0, 1.6 + 0.42 * n)
        ax = new_axes(None, (side + 1.6, side))
    finite = M[np.isfinite(M)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    lim = lim if lim > 0 else 1.0
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_xticks(np.arange(n), cats, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(np.arange(n), cats, fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("neighbour type")
    ax.set_ylabel("cell type")
    marks = significance_marks(q)
    for i in range(n):
        for j in range(n):
            text = marks[i, j]
            if annotate and np.isfinite(M[i, j]):
                text = f"{M[i, j]:.1f}" + (f"\n{text}" if text else "")
            if text:
                dark = np.isfinite(M[i, j]) and abs(M[i, j]) > 0.6 * lim
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7 if annotate else 8,
                    color="white" if dark else "black",
                    linespacing=0.9,
                )
    palette = colors_for(cats, cell_type_colors(mdata, label_key=label_key) if label_key in mdata.obs else {})
    color_strip(ax, [palette[c] for c in cats], where="top")
    color_strip(ax, [palette[c] for c in cats], where="left")
    # the left strip is 3 % of the axes wide: keep the type names clear of it on large heatmaps too (20 types:
    # ~17 pt, more than the 12 pt that suits small ones)
    width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72.0
    ax.tick_params(axis="y", pad=max(12.0, 0.03 * width_pt + 3.0))
    cbar = ax.figure.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label(_VALUES[value], fontsize=8)
    params = info.get("params") or {}
    expected = str(params.get("expected", "exact"))
    ax.set_title(
        f"Co-localization ({expected} expectation, neighbours{graph_radius_text(mdata)})\n"
        "* q < 0.05   ** q < 0.01   *** q < 0.001 (Benjamini-Hochberg)",
        fontsize=9,
        pad=14,
    )
    return ax
