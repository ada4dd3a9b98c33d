"""``report.html`` of an out-of-core run (``run_pipeline(backend='dask')`` on zarr stores): the same look, sortable
tables and standard figures as the in-memory report, from what the run keeps in memory.

The run never holds its cells, so the page is built from the run's summary (``run_summary.json``: cells per type,
the preprocessing decisions, stage times and memory), the factor and co-localization results, and a systematic
sample of the cells (every s-th row, at most :data:`MAP_CELLS`) with their type, confidence, loadings and
position, on which the maps are drawn. The figures are those of the in-memory run, drawn by the same functions
(:func:`smo.pl.spatial_cell_types`, :func:`smo.pl.factor_loadings`, :func:`smo.pl.colocalization`,
:func:`smo.pl.factor_maps`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.report._html import (
    _chip,
    _colocalization,
    _e,
    _factors,
    _figure_html,
    _kv_table,
    _package_version,
    _Raw,
    _table,
    _versions,
    cards,
    page,
    write_html,
)

__all__ = ["CHUNKED_SECTIONS", "MAP_CELLS", "render_chunked_report", "write_chunked_report"]

#: cells of the systematic sample the maps are drawn from (the in-memory maps draw up to 300,000)
MAP_CELLS = 200_000

#: (id, heading) of every section, in page order
CHUNKED_SECTIONS = (
    ("summary", "Summary"),
    ("inputs", "Inputs"),
    ("types", "Cell types"),
    ("factors", "Factors"),
    ("figures", "Figures"),
    ("colocalization", "Co-localization"),
    ("parameters", "Parameters"),
    ("versions", "Versions"),
    ("timings", "Time and memory per stage"),
)

#: the standard figures this report draws from the sample (the others need every cell or the measured values)
_FIGURES = ("spatial_cell_types", "factor_loadings", "colocalization", "factor_maps")
_MAPS = ("spatial_cell_types", "factor_maps")


def _summary(params: Mapping[str, Any], sample: Any) -> str:
    counts = {str(k): int(v) for k, v in (params.get("cell_types") or {}).items()}
    n = int(params.get("n_cells", 0))
    unknown = counts.get("Unknown", 0)
    fact = _factorize(params)
    timings = params.get("timings_s") or {}
    peak = params.get("peak_rss_mib") or {}
    items = [
        ("cells", f"{n:,}"),
        ("factors", str(params.get("n_factors", ""))),
        ("cell types", str(sum(1 for t in counts if t != "Unknown"))),
        ("Unknown cells", f"{unknown:,} ({unknown / max(n, 1):.2%})"),
        ("neighbourhood radius", f"{params.get('radius_um', '')} µm"),
    ]
    if fact:
        items.append(
            ("NMF iterations (relative error)", f"{fact.get('n_iter', '')} ({fact.get('relative_error', 0):.4f})")
        )
    if timings:
        items.append(("run time", f"{sum(float(v) for v in timings.values()):,.0f} s"))
    if peak:
        items.append(("peak memory of this process", f"{max(float(v) for v in peak.values()) / 1024:.2f} GiB"))
    note = (
        f'<p class="note">Out of core: every stage ran on row chunks ({_e(params.get("route", ""))}). The maps '
        f"below show a systematic sample of {sample.n_obs:,} of the {n:,} cells (every "
        f"{_e(params.get('report', {}).get('map_every', 1))}th row); every other number covers all cells. The "
        "per-cell results are in <code>shared_labels.csv</code> and <code>cells.zarr</code>.</p>"
    )
    return cards(items) + note


def _factorize(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The factorization's record (iterations, error, the choice of k): kept beside the preprocessing decisions."""
    return params.get("factorize") or (params.get("preprocess") or {}).get("factorize") or {}


def _inputs(params: Mapping[str, Any]) -> str:
    platforms = {"rna": params.get("platform_tx", ""), "protein": params.get("platform_prot", "")}
    rows = [(m, platforms.get(m, ""), str(p)) for m, p in (params.get("inputs") or {}).items()]
    return _table(("modality", "platform", "zarr store"), rows) + (
        "<p class=\"note\">Coordinates are the stores' <code>obsm['spatial']</code>, in micrometres.</p>"
    )


def _types(params: Mapping[str, Any], sample: Any) -> str:
    from spatialmultiomics.pl import cell_type_colors
    from spatialmultiomics.pl._utils import colors_for

    counts = {str(k): int(v) for k, v in (params.get("cell_types") or {}).items()}
    total = max(sum(counts.values()), 1)
    top = max(counts.values(), default=1) or 1
    palette = colors_for(list(counts), cell_type_colors(sample) if Keys.CELL_TYPE in sample.obs else {})
    rows = [
        (
            _Raw(_chip(palette[t]) + _e(t)),
            c,
            round(100.0 * c / total, 2),
            _Raw(f'<span class="bar" style="width:{max(1, round(300 * c / top))}px"></span>'),
        )
        for t, c in sorted(counts.items(), key=lambda kv: -kv[1])
    ]
    return _table(("cell type", "cells", "% of cells", ""), rows, attrs=' class="sortable"')


def _parameters(params: Mapping[str, Any]) -> str:
    skip = {"cell_types", "timings_s", "peak_rss_mib", "versions", "preprocess", "annotation", "engine", "report"}
    out = "<h3>Pipeline</h3>" + _kv_table({k: v for k, v in params.items() if k not in skip and k != "factorize"})
    preprocess = {k: v for k, v in (params.get("preprocess") or {}).items() if k != "factorize"}
    for title, value in (
        ("Engine", params.get("engine")),
        ("Preprocessing", preprocess),
        ("Factorization", _factorize(params)),
        ("Annotation", params.get("annotation")),
    ):
        if isinstance(value, Mapping) and value:
            out += f"<h3>{_e(title)}</h3>" + _kv_table(value)
    return out


def _timings(params: Mapping[str, Any]) -> str:
    timings = {str(k): float(v) for k, v in (params.get("timings_s") or {}).items()}
    if not timings:
        return '<p class="note">No timings stored.</p>'
    peak = {str(k): float(v) for k, v in (params.get("peak_rss_mib") or {}).items()}
    top = max(timings.values()) or 1.0
    rows = [
        (
            s,
            timings[s],
            round(peak[s], 1) if s in peak else "",
            _Raw(f'<span class="bar" style="width:{max(1, round(300 * timings[s] / top))}px"></span>'),
        )
        for s in timings
    ]
    rows.append(("total", round(sum(timings.values()), 3), "", _Raw("")))
    return _table(("stage", "seconds", "peak memory of this process (MiB)", ""), rows) + (
        "<p class=\"note\">The workers' memory is logged per stage (see the run's log).</p>"
    )


def _count_all_cells(fig: Any, counts: Mapping[str, int]) -> None:
    """Give the cell-type map's legend the counts of all cells (it counts the cells drawn, a sample here)."""
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        for text in legend.get_texts():
            name = text.get_text().rsplit(" (", 1)[0]
            if name in counts:
                text.set_text(f"{name} ({counts[name]:,})")
        legend.set_title("cell type (all cells)")


def _draw(sample: Any, figures_dir: Path | None, counts: Mapping[str, int]) -> dict[str, tuple[str, str, bytes]]:
    """The standard figures that apply to the sample, drawn (and saved as PNG in ``figures_dir`` when given);
    ``counts``: cells per type over all cells, for the map's legend."""
    from spatialmultiomics.pl._save import _close, figure_png, figure_specs, iter_figures

    specs = {s.name: s for s in figure_specs()}
    out: dict[str, tuple[str, str, bytes]] = {}
    for spec, fig in iter_figures(sample, names=[n for n in _FIGURES if n in specs]):
        if spec.name == "spatial_cell_types":
            _count_all_cells(fig, counts)
        png = figure_png(fig)
        _close(fig)
        caption = spec.caption
        if spec.name in _MAPS:
            caption += f" Drawn for a systematic sample of {sample.n_obs:,} cells."
        out[spec.name] = (spec.title, caption, png)
        if figures_dir is not None:
            figures_dir.mkdir(parents=True, exist_ok=True)
            (figures_dir / f"{spec.name}.png").write_bytes(png)
    return out


def render_chunked_report(
    params: Mapping[str, Any],
    sample: Any,
    *,
    figures: Mapping[str, tuple[str, str, bytes]] | None = None,
    title: str | None = None,
) -> str:
    """Return the HTML text of the report of an out-of-core run (see :func:`write_chunked_report`)."""
    title = title or "spatialmultiomics report (out of core)"
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    figs = dict(figures or {})
    fig_html = "".join(_figure_html(n, *v) for n, v in figs.items()) or '<p class="note">No figures.</p>'
    bodies = {
        "summary": _summary(params, sample),
        "inputs": _inputs(params),
        "types": _types(params, sample),
        "factors": _factors(sample),
        "figures": fig_html,
        "colocalization": _colocalization(sample),
        "parameters": _parameters(params),
        "versions": _versions(params),
        "timings": _timings(params),
    }
    version = (params.get("versions") or {}).get("spatialmultiomics") or _package_version()
    return page(title, f"spatialmultiomics {version} — generated {now}", CHUNKED_SECTIONS, bodies)


def write_chunked_report(
    params: Mapping[str, Any],
    sample: Any,
    path: str | Path,
    *,
    figures_dir: str | Path | None = None,
    figures: bool = True,
    title: str | None = None,
) -> Path:
    """Write ``report.html`` of an out-of-core run: one self-contained page, readable in any browser.

    Parameters
    ----------
    params
        The run's summary (what ``run_summary.json`` holds: ``n_cells``, ``cell_types``, ``timings_s``, ...).
    sample
        MuData of the sampled cells: ``obs['cell_type']`` (categorical, every type of the run),
        ``obsm['spatial']``, ``obsm['X_nmf']``, each modality's ``varm['nmf_loadings']`` and feature names, the
        factor table under ``uns['nmf']['annotation']`` and the co-localization result under
        ``uns['cell_type_nhood_enrichment']`` (for all cells).
    path
        The HTML file to write; written atomically.
    figures_dir
        Folder to save the figures' PNGs in as well (``figures/`` of the result folder); None: embedded only.
    figures
        Draw the figures.
    title
        Page title.

    Returns
    -------
    The path written.
    """
    figs: dict[str, tuple[str, str, bytes]] = {}
    if figures:
        try:
            counts = {str(k): int(v) for k, v in (params.get("cell_types") or {}).items()}
            figs = _draw(sample, Path(figures_dir) if figures_dir is not None else None, counts)
        except Exception as err:  # noqa: BLE001 - a figure must never sink the report (nor the run)
            logger.warning("report figures could not be drawn: %s: %s", type(err).__name__, err)
    out = write_html(render_chunked_report(params, sample, figures=figs, title=title), path, "report.html")
    logger.info("report written to %s (%d figures)", out, len(figs))
    return out
