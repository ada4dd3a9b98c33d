"""Figures of a cohort comparison: per-condition co-localization, volcano, forest plot, per-sample proportions.

Each function reads a :class:`~spatialmultiomics.cohort.CohortResult` and draws; nothing is recomputed beyond
means of the stored per-sample statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option
from spatialmultiomics.pl._nhood import significance_marks
from spatialmultiomics.pl._utils import colors_for, new_axes, new_figure, offscreen

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = [
    "COHORT_FIGURES",
    "cohort_colocalization",
    "cohort_composition",
    "cohort_forest",
    "cohort_volcano",
    "save_cohort_figures",
]

_TABLES = ("colocalization", "abundance")


def _check_result(result: Any) -> Any:
    if not hasattr(result, "differential_colocalization") or not hasattr(result, "sample_colocalization"):
        msg = f"expected a CohortResult (from smo.cohort.compare), got {type(result).__name__}."
        raise TypeError(msg)
    return result


def _table(result: Any, table: str, condition: str | None) -> tuple[pd.DataFrame, str]:
    table = check_option(table, _TABLES, name="table")
    frame = result.differential_colocalization if table == "colocalization" else result.differential_abundance
    conds = list(result.conditions[1:]) or sorted(frame["condition"].unique())
    condition = conds[0] if condition is None else str(condition)
    if condition not in conds:
        msg = f"condition={condition!r} is not a compared condition; choose one of {conds}."
        raise InputError(msg)
    frame = frame[frame["condition"] == condition]
    if table == "colocalization":
        names = frame["cell_type_a"].astype(str) + " | " + frame["cell_type_b"].astype(str)
    else:
        names = frame["cell_type"].astype(str)
    return frame.assign(feature=names.to_numpy()), condition


def cohort_colocalization(
    result: Any, *, value: str = "log_enrichment", axes: Sequence[Axes] | None = None
) -> list[Axes]:
    """Per-condition co-localization heatmaps side by side, with the differential pairs marked.

    Each panel shows, for one condition, the mean over its samples of the per-sample statistic of every pair of
    types (samples where the pair is not estimable left out). In every non-reference panel, stars mark the pairs
    whose difference from the reference has Benjamini-Hochberg q below 0.05 (*), 0.01 (**) or 0.001 (***).

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.cohort.CohortResult`.
    value
        ``"log_enrichment"`` (default; log of observed / expected neighbour pairs, the statistic tested),
        ``"z_score"`` or ``"score"``.
    axes
        One Axes per condition; default a new figure.

    Returns
    -------
    The list of Axes, one per condition (reference first).
    """
    result = _check_result(result)
    value = check_option(value, ("log_enrichment", "z_score", "score"), name="value")
    long = result.sample_colocalization
    long = long[long["estimable"]] if "estimable" in long else long
    conds = result.conditions or sorted(long["condition"].unique())
    types = result.cell_types or sorted(set(long["cell_type_a"]) | set(long["cell_type_b"]))
    k = len(types)
    index = {t: i for i, t in enumerate(types)}
    means = long.groupby(["condition", "cell_type_a", "cell_type_b"], observed=True)[value].mean()
    mats = {}
    for c in conds:
        m = np.full((k, k), np.nan)
        if c in means.index.get_level_values(0):
            for (a, b), v in means.loc[c].items():
                if a in index and b in index:
                    m[index[a], index[b]] = m[index[b], index[a]] = v
        mats[c] = m
    diff = result.differential_colocalization
    finite = np.concatenate([m[np.isfinite(m)] for m in mats.values()] + [np.zeros(1)])
    lim = float(np.nanmax(np.abs(finite))) or 1.0
    if axes is None:
        side = max(3.2, 1.4 + 0.38 * k)
        fig = new_figure((side * len(conds) + 1.2, side + 0.6))
        axes = list(np.atleast_1d(fig.subplots(1, len(conds), squeeze=False)[0]))
    axes = list(axes)
    if len(axes) != len(conds):
        msg = f"axes: got {len(axes)} Axes for {len(conds)} conditions."
        raise InputError(msg)
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    im = None
    for i, (ax, c) in enumerate(zip(axes, conds, strict=True)):
        im = ax.imshow(np.ma.masked_invalid(mats[c]), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks(np.arange(k), types, rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(np.arange(k), types if i == 0 else [""] * k, fontsize=8)
        ax.tick_params(length=0)
        n_s = int((result.sample_table["condition"] == c).sum())
        title = f"{c} (n = {n_s} samples)" + (" — reference" if i == 0 else "")
        ax.set_title(title, fontsize=9)
        if i == 0:
            continue
        part = diff[diff["condition"] == c]
        qm = np.full((k, k), np.nan)
        for rec in part.itertuples(index=False):
            if rec.cell_type_a in index and rec.cell_type_b in index:
                qm[index[rec.cell_type_a], index[rec.cell_type_b]] = rec.q_value
                qm[index[rec.cell_type_b], index[rec.cell_type_a]] = rec.q_value
        marks = significance_marks(qm)
        for a in range(k):
            for b in range(k):
                if marks[a, b]:
                    ax.text(b, a, marks[a, b], ha="center", va="center", fontsize=8)
    if im is not None:
        cbar = axes[-1].figure.colorbar(im, ax=axes, shrink=0.8)
        label = {"log_enrichment": "mean log(observed / expected)", "z_score": "mean z-score", "score": "mean score"}
        cbar.set_label(label[value], fontsize=8)
    axes[0].figure.suptitle(
        f"Co-localization per condition (mean over samples; radius {result.params.get('radius', '?')} µm)\n"
        "* q < 0.05  ** q < 0.01  *** q < 0.001 versus the reference",
        fontsize=9,
    )
    return axes


def cohort_volcano(
    result: Any,
    *,
    table: str = "colocalization",
    condition: str | None = None,
    q: float = 0.05,
    n_labels: int = 8,
    ax: Axes | None = None,
) -> Axes:
    """Volcano plot of a differential table: effect against -log10 p, significant rows coloured and named.

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.cohort.CohortResult`.
    table
        ``"colocalization"`` (pairs; effect = difference of log enrichment) or ``"abundance"`` (types; effect =
        log odds ratio).
    condition
        The condition compared with the reference; default the first.
    q
        Benjamini-Hochberg threshold of the coloured points.
    n_labels
        Name the most significant rows, at most this many.
    ax
        Axes to draw on; default a new figure.

    Returns
    -------
    The Axes.
    """
    result = _check_result(result)
    frame, condition = _table(result, table, condition)
    frame = frame[np.isfinite(frame["p_value"])]
    ax = new_axes(ax, (6.0, 4.6))
    x = frame["effect"].to_numpy(dtype=np.float64)
    y = -np.log10(np.maximum(frame["p_value"].to_numpy(dtype=np.float64), 1e-300))
    sig = (frame["q_value"] < q).to_numpy()
    up = sig & (x > 0)
    down = sig & (x < 0)
    ax.scatter(x[~sig], y[~sig], s=14, color="#9aa4ad", label=f"q ≥ {q:g}")
    ax.scatter(x[up], y[up], s=20, color="#c0392b", label=f"higher in {condition}")
    ax.scatter(x[down], y[down], s=20, color="#1f5fa8", label=f"lower in {condition}")
    order = np.argsort(frame["p_value"].to_numpy())
    for i in order[: max(0, n_labels)]:
        if sig[i]:
            ax.annotate(frame["feature"].iloc[i], (x[i], y[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    what = "difference of log enrichment" if table == "colocalization" else "log odds ratio of the proportion"
    ax.set_xlabel(f"{what}, {condition} vs {frame['reference'].iloc[0] if len(frame) else 'reference'}")
    ax.set_ylabel("-log10 p")
    ax.set_title(f"Differential {table}: {int(sig.sum())} of {len(frame)} with q < {q:g}", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    return ax


def cohort_forest(
    result: Any,
    *,
    table: str = "colocalization",
    condition: str | None = None,
    top: int = 15,
    ax: Axes | None = None,
) -> Axes:
    """Forest plot: effect and 95 % confidence interval of the ``top`` rows with the smallest p-values.

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.cohort.CohortResult`.
    table
        ``"colocalization"`` or ``"abundance"``.
    condition
        The condition compared with the reference; default the first.
    top
        Number of rows shown.
    ax
        Axes to draw on; default a new figure.

    Returns
    -------
    The Axes.
    """
    result = _check_result(result)
    frame, condition = _table(result, table, condition)
    frame = frame[np.isfinite(frame["effect"])].sort_values("p_value").head(max(1, int(top)))
    frame = frame.iloc[::-1]
    ax = new_axes(ax, (8.5, 1.4 + 0.3 * max(len(frame), 1)))
    pos = np.arange(len(frame))
    sig = (frame["q_value"] < 0.05).to_numpy()
    colors = np.where(sig, "#c0392b", "#5b6670")
    ax.hlines(pos, frame["ci_low"], frame["ci_high"], colors=colors, lw=1.6)
    ax.scatter(frame["effect"], pos, color=colors, s=22, zorder=3)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    labels = [
        f"{name}  (q = {qv:.2g}, n = {n})"
        for name, qv, n in zip(frame["feature"], frame["q_value"], frame["n_samples"], strict=True)
    ]
    ax.set_yticks(pos, labels, fontsize=7)
    what = "difference of log enrichment" if table == "colocalization" else "log odds ratio"
    ax.set_xlabel(f"{what} ({condition} vs reference), 95 % CI")
    ax.set_title(f"Top {len(frame)} {table} differences; red: q < 0.05", fontsize=9)
    return ax


def cohort_composition(result: Any, *, ax: Axes | None = None) -> Axes:
    """Stacked bars of the cell-type proportions of every sample, grouped by condition.

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.cohort.CohortResult`.
    ax
        Axes to draw on; default a new figure.

    Returns
    -------
    The Axes.
    """
    result = _check_result(result)
    comp = result.sample_composition
    types = result.cell_types or sorted(comp["cell_type"].unique())
    conds = result.conditions or sorted(comp["condition"].unique())
    wide = comp.pivot_table(index="sample", columns="cell_type", values="proportion", aggfunc="first")
    wide = wide.reindex(columns=types).fillna(0.0)
    meta = result.sample_table.set_index("sample")
    samples, xs, centres = [], [], []
    x = 0.0
    for c in conds:
        members = [s for s in meta.index[meta["condition"] == c] if s in wide.index]
        if members:
            centres.append((x + (len(members) - 1) / 2, c))
        for s in members:
            samples.append(s)
            xs.append(x)
            x += 1.0
        x += 1.5  # gap between conditions
    ax = new_axes(ax, (min(18.0, 3.0 + 0.12 * len(samples)), 4.2))
    palette = colors_for(types, {})
    bottom = np.zeros(len(samples))
    values = wide.loc[samples].to_numpy()
    for j, t in enumerate(types):
        ax.bar(xs, values[:, j], bottom=bottom, width=0.9, color=palette[t], label=t, linewidth=0)
        bottom += values[:, j]
    ax.set_xticks([p for p, _ in centres], [c for _, c in centres], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion of typed cells")
    ax.set_title("Cell-type proportions per sample, grouped by condition", fontsize=9)
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    return ax


#: (file stem, title, caption, draw) of the standard cohort figures, in report order
COHORT_FIGURES = (
    (
        "cohort_colocalization",
        "Co-localization per condition",
        "Mean per-sample log enrichment (log of observed / expected neighbour pairs; 0 = random mixing, red = "
        "together more often, blue = apart) of every pair of cell types, one panel per condition. Stars: the pair "
        "differs from the reference condition (Benjamini-Hochberg q < 0.05 / 0.01 / 0.001).",
        cohort_colocalization,
    ),
    (
        "cohort_volcano",
        "Differential co-localization (volcano)",
        "Every pair of cell types: difference of log enrichment between the condition and the reference (x) "
        "against its p-value (y); coloured pairs have q < 0.05.",
        cohort_volcano,
    ),
    (
        "cohort_forest_colocalization",
        "Top differential pairs",
        "Effect and 95 % confidence interval of the pairs with the smallest p-values; n = samples used.",
        cohort_forest,
    ),
    (
        "cohort_forest_abundance",
        "Differential abundance",
        "Log odds ratio of each cell type's proportion (condition versus reference) with its 95 % confidence interval.",
        lambda r: cohort_forest(r, table="abundance"),
    ),
    (
        "cohort_composition",
        "Cell-type proportions per sample",
        "Proportion of each cell type among the typed cells of every sample, samples grouped by condition.",
        cohort_composition,
    ),
)


def save_cohort_figures(
    result: Any, folder: str | Path, *, formats: Sequence[str] = ("png", "svg"), dpi: int = 120
) -> dict[str, list[Path]]:
    """Draw the standard cohort figures off-screen and write each as PNG plus a vector format.

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.cohort.CohortResult`.
    folder
        Output folder (created).
    formats
        ``'png'``, ``'svg'`` and / or ``'pdf'``.
    dpi
        Resolution of the PNG files.

    Returns
    -------
    dict mapping each figure name (``cohort_colocalization``, ``cohort_volcano``,
    ``cohort_forest_colocalization``, ``cohort_forest_abundance``, ``cohort_composition``) to the files written.
    A figure that fails to draw is logged and skipped.
    """
    import matplotlib as mpl

    from spatialmultiomics.pl._save import _as_figure, _close, freeze_layout

    result = _check_result(result)
    formats = [str(f).lower().lstrip(".") for f in formats]
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        msg = f"formats={list(formats)!r}: allowed formats are 'png', 'svg' and 'pdf'."
        raise InputError(msg)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    with mpl.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        for name, _title, _caption, draw in COHORT_FIGURES:
            try:
                with offscreen():
                    fig = _as_figure(draw(result))
            except Exception as err:  # noqa: BLE001 - a figure must never sink the results it illustrates
                logger.warning("figure %s could not be drawn: %s: %s", name, type(err).__name__, err)
                continue
            fig.set_dpi(dpi)  # lay out at the resolution of the PNG (text extents depend on it)
            freeze_layout(fig)
            paths = []
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, dpi=dpi)
                paths.append(path)
            _close(fig)
            written[name] = paths
    return written
