"""Figures of the joint NMF: feature loadings with the named factors, factor activity in space, the choice of k."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._keys import Keys
from spatialmultiomics.pl._utils import (
    AA_POINTS,
    cell_type_colors,
    color_strip,
    colors_for,
    coordinates,
    factor_names,
    factor_types,
    fov_groups,
    get_container,
    grid_shape,
    new_axes,
    new_figure,
    require,
    setup_spatial_axes,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["factor_loadings", "factor_maps", "k_selection"]

#: above this many cells, factor maps show the mean activity per pixel of a BIN_GRID-wide grid instead of dots
BIN_POINTS = 60_000
BIN_GRID = 300
_VIRIDIS = "viridis"

#: default number of top features labelled per factor, by modality (others: 3)
DEFAULT_TOP = {Keys.RNA: 5, Keys.PROTEIN: 3}


def _loadings(mdata: Any) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``{modality: ((n_features, k) loadings, feature names)}`` from ``varm['nmf_loadings']``."""
    mods = getattr(mdata, "mod", None)
    if mods is None:  # a single AnnData
        require(Keys.NMF_LOADINGS in mdata.varm, "varm['nmf_loadings']", "smo.factorize.joint_nmf(mdata)")
        return {"features": (np.asarray(mdata.varm[Keys.NMF_LOADINGS]), [str(v) for v in mdata.var_names])}
    nmf = mdata.uns.get(Keys.NMF_UNS)
    order = [str(m) for m in (nmf.get("modalities", []) if isinstance(nmf, Mapping) else [])] or list(mods)
    out = {
        name: (np.asarray(mods[name].varm[Keys.NMF_LOADINGS]), [str(v) for v in mods[name].var_names])
        for name in order
        if name in mods and Keys.NMF_LOADINGS in mods[name].varm
    }
    require(bool(out), "feature loadings (varm['nmf_loadings'])", "smo.factorize.joint_nmf(mdata)")
    return out


def _factor_palette(mdata: Any, types: list[str]) -> list[str]:
    palette = cell_type_colors(mdata) if Keys.CELL_TYPE in mdata.obs else {}
    named = colors_for([t for t in types if t], palette)
    return [named.get(t, "#ffffff") if t else "#ffffff" for t in types]


def factor_loadings(
    data: Any,
    *,
    n_top: int | Mapping[str, int] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap of the feature loadings of every factor, top genes and proteins labelled, factors named by type.

    Rows are the top features of each factor (``n_top`` per factor and modality, each feature listed once, under
    the factor it loads most), grouped by modality; columns are the factors, labelled with the cell type the
    annotation assigned (``uns['nmf']['annotation']``) and a strip in that type's colour. Each factor's loadings
    are scaled to its largest loading within the modality, so colours read as 0 (absent) to 1 (the factor's top
    feature). Reads ``mdata[mod].varm['nmf_loadings']``; computes nothing.

    Parameters
    ----------
    data
        MuData after :func:`smo.factorize.joint_nmf` (and :func:`smo.annotate.annotate`), or a PipelineResult.
    n_top
        Features labelled per factor: one number for every modality or ``{modality: n}``; default 5 genes and 3
        proteins (3 for any other modality).
    ax
        Axes to draw on; default a new figure sized to the number of rows.

    Returns
    -------
    The Axes of the heatmap.
    """
    mdata = get_container(data)
    blocks = _loadings(mdata)
    k = next(iter(blocks.values()))[0].shape[1]
    rows: list[np.ndarray] = []
    labels: list[str] = []
    bounds: list[tuple[str, int, int]] = []
    for name, (L, names) in blocks.items():
        n = n_top.get(name, DEFAULT_TOP.get(name, 3)) if isinstance(n_top, Mapping) else n_top
        n = DEFAULT_TOP.get(name, 3) if n is None else int(n)
        scale = L.max(axis=0)
        S = np.divide(L, scale, out=np.zeros_like(L, dtype=np.float64), where=scale > 0)
        chosen: dict[int, tuple[int, float]] = {}
        for f in range(k):
            for j in np.argsort(-S[:, f], kind="stable")[:n]:
                if S[j, f] > 0:
                    best = int(np.argmax(S[j]))
                    chosen[int(j)] = (best, -float(S[j, best]))
        order = sorted(chosen, key=lambda j: chosen[j])
        start = len(labels)
        rows.extend(S[j] for j in order)
        labels.extend(names[j] for j in order)
        bounds.append((name, start, len(labels)))
    M = np.vstack(rows) if rows else np.zeros((0, k))
    if ax is None:
        ax = new_axes(None, (max(5.0, 2.6 + 0.42 * k), max(3.5, 1.8 + 0.15 * M.shape[0])))
    im = ax.imshow(M, aspect="auto", cmap="Reds", vmin=0, vmax=1, interpolation="nearest")
    fontsize = 8 if M.shape[0] <= 60 else 6
    ax.set_yticks(np.arange(M.shape[0]), labels, fontsize=fontsize)
    ax.set_xticks(np.arange(k), factor_names(mdata, k), rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
    ax.tick_params(length=0)
    for name, start, stop in bounds:
        if start > 0:
            ax.axhline(start - 0.5, color="black", linewidth=1.2)
        if stop > start:
            ax.text(
                k - 0.5 + 0.15,
                (start + stop - 1) / 2,
                f" {name}",
                rotation=-90,
                va="center",
                ha="left",
                fontsize=9,
                fontweight="bold",
                transform=ax.transData,
                clip_on=False,
            )
    color_strip(ax, _factor_palette(mdata, factor_types(mdata, k)), where="top")
    cbar = ax.figure.colorbar(im, ax=ax, shrink=min(1.0, 12 / max(M.shape[0], 1)) + 0.2, pad=0.06)
    cbar.set_label("loading / factor's largest loading", fontsize=8)
    ax.set_title("Factor loadings: top features of each factor", fontsize=10, pad=18)
    return ax


def factor_maps(
    data: Any,
    *,
    factors: list[int] | None = None,
    fov: str | None = None,
    ncols: int = 5,
    ax: Axes | None = None,
) -> Axes | list[Axes]:
    """Map of each factor's activity per cell (``obsm['X_nmf']``), in micrometres, one panel per factor.

    Each factor is scaled to its 99.5th percentile over the cells shown, so every panel spans the same colour
    range; high cells are drawn on top. Panels are titled with the factor and its assigned cell type.

    Parameters
    ----------
    data
        MuData after :func:`smo.factorize.joint_nmf`, or a PipelineResult.
    factors
        Factor indices to draw; default all.
    fov
        Field of view to draw when the data has several (``obs['fov']``); default the one with the most cells.
    ncols
        Panels per row.
    ax
        Axes to draw on (only with a single factor); default a new figure.

    Returns
    -------
    The Axes (one factor) or the list of Axes, one per factor.
    """
    mdata = get_container(data)
    require(Keys.NMF in mdata.obsm, "obsm['X_nmf'] cell loadings", "smo.factorize.joint_nmf(mdata)")
    W = np.asarray(mdata.obsm[Keys.NMF])
    k = W.shape[1]
    factors = list(range(k)) if factors is None else [int(f) for f in factors]
    bad = [f for f in factors if not 0 <= f < k]
    if bad:
        msg = f"factors={bad}: the data has factors 0..{k - 1}."
        raise ValueError(msg)
    if ax is not None and len(factors) != 1:
        msg = f"ax: {len(factors)} factors need {len(factors)} panels; pass factors=[i] to draw one factor on ax."
        raise ValueError(msg)
    groups = fov_groups(mdata, fov)
    name, idx = max(groups, key=lambda g: g[1].size)
    xy = coordinates(mdata)[idx]
    binned = idx.size > BIN_POINTS
    bins = _bin_index(xy) if binned else None
    shown = np.arange(idx.size)
    titles = factor_names(mdata, k)
    if ax is None:
        nrows, ncol = grid_shape(len(factors), ncols)
        fig = new_figure((3.0 * ncol + 0.8, 2.9 * nrows + 0.5))
        axes = list(fig.subplots(nrows, ncol, squeeze=False).ravel())
        for extra in axes[len(factors) :]:
            extra.set_axis_off()
        axes = axes[: len(factors)]
    else:
        fig, axes = ax.figure, [ax]
    mappable = None
    for a, f in zip(axes, factors, strict=True):
        v = W[idx, f]
        top = float(np.percentile(v, 99.5)) if v.size else 0.0
        v = np.clip(v / top, 0, 1) if top > 0 else np.zeros_like(v)
        if bins is not None:  # a million dots in 300 pixels: draw the mean per pixel instead
            flat, shape, extent, _ = bins
            total = np.bincount(flat, weights=v, minlength=shape[0] * shape[1])
            count = np.bincount(flat, minlength=shape[0] * shape[1])
            with np.errstate(invalid="ignore", divide="ignore"):
                image = (total / count).reshape(shape)
            mappable = a.imshow(
                image, origin="lower", extent=extent, cmap=_VIRIDIS, vmin=0, vmax=1, interpolation="nearest"
            )
            setup_spatial_axes(a, xy, titles[f])
            a.set_xlim(extent[0], extent[1])  # the pixels exactly fill the axes
            a.set_ylim(extent[3], extent[2])
        else:
            order = shown[np.argsort(v[shown], kind="stable")]
            size = setup_spatial_axes(a, xy, titles[f])
            mappable = a.scatter(
                xy[order, 0],
                xy[order, 1],
                c=v[order],
                cmap="viridis",
                vmin=0,
                vmax=1,
                s=size,
                linewidths=0,
                rasterized=True,
                antialiased=order.size <= AA_POINTS,
            )
        if len(axes) > 1:  # the first panel carries the µm ticks for all (text is what costs time to draw)
            a.set_xlabel("")
            a.set_ylabel("")
            if a is not axes[0]:
                a.set_xticks([])
                a.set_yticks([])
            a.tick_params(labelsize=6)
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=axes, shrink=0.6 if len(axes) > 1 else 0.9)
        cbar.set_label("factor activity / its 99.5th percentile" + (" (mean per pixel)" if binned else ""), fontsize=8)
    if len(axes) > 1:
        head = "Factor activity per cell (x, y in µm)"
        if name is not None:
            head += f" — FOV {name}"
        if binned:
            head += f" — {idx.size:,} cells, mean per {bins[3]:.3g} µm pixel"
        fig.suptitle(head, fontsize=11)
    return axes[0] if len(axes) == 1 else axes


def _bin_index(xy: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple, float]:
    """Square pixels over the cells' extent: (flat pixel of each cell, (ny, nx), imshow extent, pixel size in µm).

    At most ``BIN_GRID`` pixels across, and never finer than about two cells per pixel, so pixels are not empty.
    """
    n_bins = int(min(BIN_GRID, max(20, 0.7 * np.sqrt(xy.shape[0]))))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    size = max(float((hi - lo).max()), 1e-9) / n_bins
    nx, ny = (np.floor((hi - lo) / size).astype(int) + 1).tolist()
    ix = np.minimum(((xy[:, 0] - lo[0]) / size).astype(np.int64), nx - 1)
    iy = np.minimum(((xy[:, 1] - lo[1]) / size).astype(np.int64), ny - 1)
    extent = (lo[0], lo[0] + nx * size, lo[1], lo[1] + ny * size)
    return iy * nx + ix, (ny, nx), extent, size


def k_selection(data: Any, *, ax: Axes | None = None) -> Axes:
    """The choice-of-k curve stored by :func:`smo.factorize.select_n_factors` (``uns['nmf']['k_selection']``).

    Left axis: stability of the factors over restarts for each candidate k (mean ± sd), with the threshold the
    choice used; right axis: relative reconstruction error (mean ± sd). The chosen k is marked and the stored
    reason is shown under the title.

    Parameters
    ----------
    data
        MuData after :func:`smo.factorize.select_n_factors` (or a pipeline run with ``n_factors='auto'``), or a
        PipelineResult.
    ax
        Axes to draw on; default a new figure.

    Returns
    -------
    The Axes.
    """
    mdata = get_container(data)
    nmf = mdata.uns.get(Keys.NMF_UNS)
    info = nmf.get("k_selection") if isinstance(nmf, Mapping) else None
    require(
        isinstance(info, Mapping) and "k_grid" in info,
        "uns['nmf']['k_selection']",
        "smo.factorize.select_n_factors(mdata) (or run_pipeline with n_factors='auto')",
    )
    ks = np.asarray(info["k_grid"], dtype=np.float64)
    ax = new_axes(ax, (6.0, 4.0))
    blue, red = "#1f5fa8", "#c0392b"
    handles = []
    if "stability" in info:
        stab = np.asarray(info["stability"], dtype=np.float64)
        sd = np.asarray(info.get("stability_sd", np.zeros_like(stab)), dtype=np.float64)
        ax.fill_between(ks, stab - sd, stab + sd, color=blue, alpha=0.15, linewidth=0)
        (line,) = ax.plot(ks, stab, marker="o", color=blue, label="stability over restarts")
        handles.append(line)
        ax.set_ylabel("factor stability (mean ± sd)", color=blue)
        if "threshold" in info:
            thr = float(info["threshold"])
            handles.append(ax.axhline(thr, color=blue, linestyle=":", linewidth=1, label=f"threshold {thr:g}"))
    if "error" in info:
        twin = ax.twinx()
        err = np.asarray(info["error"], dtype=np.float64)
        sd = np.asarray(info.get("error_sd", np.zeros_like(err)), dtype=np.float64)
        twin.fill_between(ks, err - sd, err + sd, color=red, alpha=0.12, linewidth=0)
        (line,) = twin.plot(ks, err, marker="s", color=red, label="reconstruction error")
        handles.append(line)
        twin.set_ylabel("relative reconstruction error", color=red)
    if "k" in info:
        chosen = int(np.asarray(info["k"]))
        ax.axvline(chosen, color="black", linestyle="--", linewidth=1)
        ax.text(chosen, 1.01, f"chosen k = {chosen}", transform=ax.get_xaxis_transform(), fontsize=8, ha="center")
    ax.set_xlabel("number of factors k")
    ax.set_xticks(ks)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="lower left")
    title = "Choice of the number of factors"
    reason = str(info.get("reason", "")).strip()
    if reason:
        import textwrap

        title += "\n" + textwrap.fill(reason, 80)
    ax.set_title(title, fontsize=9, pad=16)
    return ax
