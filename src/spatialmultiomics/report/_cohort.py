"""``cohort_report.html``: one self-contained page with the samples, the differential tables and the figures of a
cohort comparison (same look and sortable tables as ``report.html``)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from spatialmultiomics._keys import ABUNDANCE_COLUMNS, COLOCALIZATION_COLUMNS
from spatialmultiomics._log import logger
from spatialmultiomics.report._html import (
    _e,
    _figure_html,
    _kv_table,
    _package_version,
    _Row,
    _table,
    cards,
    page,
    write_html,
)

__all__ = ["COHORT_SECTIONS", "render_cohort_report", "write_cohort_report"]

#: (id, heading) of every section, in page order
COHORT_SECTIONS = (
    ("summary", "Summary"),
    ("samples", "Samples"),
    ("abundance", "Differential abundance"),
    ("colocalization", "Differential co-localization"),
    ("figures", "Figures"),
    ("methods", "Methods"),
    ("parameters", "Parameters"),
)

_Q = 0.05


def _summary(result: Any) -> str:
    p = result.params
    ab, co = result.differential_abundance, result.differential_colocalization
    n_ab = int((ab["q_value"] < _Q).sum())
    n_co = int((co["q_value"] < _Q).sum())
    conds = result.conditions
    text = cards(
        [
            ("cells", f"{int(p.get('n_cells', 0)):,}"),
            ("samples", len(result.sample_table)),
            ("patients", p.get("n_patients", "")),
            ("cell types", len(result.cell_types)),
            ("conditions", ", ".join(conds)),
            ("types differing (q < 0.05)", f"{n_ab} of {len(ab)}"),
            ("pairs differing (q < 0.05)", f"{n_co} of {len(co)}"),
        ]
    )
    top = result.significant("colocalization", q=_Q).head(5)
    lines = []
    for rec in top.itertuples(index=False):
        way = "more" if rec.effect > 0 else "less"
        lines.append(
            f"<li><b>{_e(rec.cell_type_a)}</b> and <b>{_e(rec.cell_type_b)}</b> neighbour each other {way} in "
            f"{_e(rec.condition)} than in {_e(rec.reference)} (ratio of enrichments "
            f"{np.exp(rec.effect):.2f}, 95 % CI {np.exp(rec.ci_low):.2f}–{np.exp(rec.ci_high):.2f}, q = "
            f"{rec.q_value:.2g}).</li>"
        )
    if lines:
        text += "<h3>Strongest differences in co-localization</h3><ul>" + "".join(lines) + "</ul>"
    text += (
        f'<p class="note">Reference condition: <code>{_e(conds[0] if conds else "")}</code>; model: '
        f"<code>{_e(p.get('model', ''))}</code> (see Methods).</p>"
    )
    return text


def _frame_table(frame: Any, columns: list[str], *, table_id: str = "", sig: bool = True) -> str:
    rows = []
    for rec in frame[columns].itertuples(index=False):
        cells = list(rec)
        cls = ""
        if sig and "q_value" in columns:
            q = cells[columns.index("q_value")]
            cls = "sig" if isinstance(q, float) and np.isfinite(q) and q < _Q else ""
        rows.append(_Row(cells, cls))
    attrs = ' class="sortable"' + (f' id="{table_id}"' if table_id else "")
    return '<div class="scroll">' + _table(columns, rows, attrs=attrs, keys=columns) + "</div>"


def _samples(result: Any) -> str:
    table = result.sample_table
    counts = table.groupby("condition")["sample"].nunique()
    patients = table.groupby("condition")["patient"].nunique()
    text = (
        "<p>"
        + "; ".join(
            f"<b>{_e(c)}</b>: {int(counts.get(c, 0))} samples from {int(patients.get(c, 0))} patients"
            for c in result.conditions
        )
        + ".</p>"
    )
    return text + _frame_table(table, [str(c) for c in table.columns], sig=False)


_EXTRA = ["n_condition", "n_reference", "n_not_estimable", "n_patients", "method"]


def _abundance(result: Any) -> str:
    frame = result.differential_abundance
    cols = [
        *ABUNDANCE_COLUMNS,
        "proportion_condition",
        "proportion_reference",
        *_EXTRA,
    ]
    text = (
        "<p>For every cell type: the log odds ratio of its proportion among the typed cells (condition versus "
        "reference; &gt; 0 = more abundant in the condition) with its 95 % confidence interval, p-value and "
        f"Benjamini–Hochberg q-value; highlighted: q &lt; {_Q}. <em>proportion_*</em> are the mean proportions "
        "per group.</p>"
    )
    return text + _frame_table(frame, [c for c in cols if c in frame.columns])


def _colocalization(result: Any) -> str:
    frame = result.differential_colocalization.sort_values("p_value")
    cols = [
        *COLOCALIZATION_COLUMNS,
        "mean_condition",
        "mean_reference",
        *_EXTRA,
    ]
    text = (
        "<p>For every pair of cell types: the difference of log enrichment (log of observed / expected neighbour "
        "pairs within the radius, expected = exact mean under random relabelling in the sample) between the "
        "condition and the reference, with 95 % CI, p and q. &gt; 0: the two types are together more in the "
        "condition. <em>mean_*</em>: mean log enrichment per group; <em>n_not_estimable</em>: samples where one "
        "of the types has too few cells, left out of the test. Click a header to sort.</p>"
        '<p><label><input type="checkbox" id="coloc-significant"> show significant pairs only</label></p>'
    )
    return text + _frame_table(frame, [c for c in cols if c in frame.columns], table_id="coloc-table")


def _figures(result: Any, figures_dir: Path | None, figures: bool) -> str:
    from spatialmultiomics.pl._cohort import COHORT_FIGURES

    out = []
    for name, title, caption, draw in COHORT_FIGURES:
        png = None
        if figures_dir is not None and (figures_dir / f"{name}.png").is_file():
            png = (figures_dir / f"{name}.png").read_bytes()
        elif figures:
            from spatialmultiomics.pl._save import _as_figure, _close, figure_png
            from spatialmultiomics.pl._utils import offscreen

            try:
                with offscreen():
                    fig = _as_figure(draw(result))
                png = figure_png(fig)
                _close(fig)
            except Exception as err:  # noqa: BLE001 - a figure must never sink the report
                logger.warning("figure %s could not be drawn: %s: %s", name, type(err).__name__, err)
        if png is not None:
            out.append(_figure_html(name, title, caption, png))
    return "".join(out) or '<p class="note">No figures.</p>'


def _methods(result: Any) -> str:
    p = result.params
    model = p.get("model", "")
    models = {
        "mixed": "a linear mixed model with a random intercept per patient (statsmodels MixedLM, REML); Wald "
        "statistics referred to t with (patients − fixed effects) degrees of freedom",
        "wls": "weighted least squares, each sample weighted by 1 / (sampling variance + between-sample variance "
        "τ², DerSimonian–Laird), t with (samples − terms) degrees of freedom",
        "welch": "Welch's unequal-variance t-test",
    }
    return (
        "<p>Unit of evidence: the sample (or the patient, when a patient has several samples). Per sample: "
        "the proportion of each type among its typed cells (empirical logit, tested as log odds), and the exact "
        "co-localization statistics of every pair on a radius graph of "
        f"{_e(p.get('radius'))} µm that never joins two samples (log enrichment = log((observed + ½) / "
        "(expected + ½)), tested). A pair is estimable in a sample when both types have at least "
        f"{_e(p.get('min_cells'))} cells there. Model: {_e(models.get(model, model))}. "
        "Conditions are dummy-coded against the reference"
        + (f"; covariates: {_e(', '.join(p.get('covariates') or []))}" if p.get("covariates") else "")
        + ". q-values: Benjamini–Hochberg over all types (or pairs) of one condition versus the reference.</p>"
    )


def render_cohort_report(
    result: Any, *, figures_dir: str | Path | None = None, figures: bool = True, title: str | None = None
) -> str:
    """Return the HTML text of the cohort report (see :func:`write_cohort_report`)."""
    if not hasattr(result, "differential_colocalization"):
        msg = f"expected a CohortResult (from smo.cohort.compare), got {type(result).__name__}."
        raise TypeError(msg)
    title = title or "spatialmultiomics cohort report"
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    fig_dir = Path(figures_dir) if figures_dir is not None else None
    params = {k: v for k, v in result.params.items() if k not in ("cell_types", "timings_s")}
    params.update({f"time {k} (s)": round(float(v), 2) for k, v in (result.params.get("timings_s") or {}).items()})
    bodies = {
        "summary": _summary(result),
        "samples": _samples(result),
        "abundance": _abundance(result),
        "colocalization": _colocalization(result),
        "figures": _figures(result, fig_dir, figures),
        "methods": _methods(result),
        "parameters": _kv_table(params),
    }
    version = result.params.get("version") or _package_version()
    return page(title, f"spatialmultiomics {version} — generated {now}", COHORT_SECTIONS, bodies)


def write_cohort_report(
    result: Any,
    path: str | Path,
    *,
    figures_dir: str | Path | None = None,
    figures: bool = True,
    title: str | None = None,
) -> Path:
    """Write ``cohort_report.html``: the samples, differential tables and figures of a cohort, on one page.

    The page needs no other file and loads nothing from the network (figures are embedded PNGs).

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.cohort.CohortResult`.
    path
        The HTML file to write; written atomically.
    figures_dir
        Folder with the PNGs of :func:`smo.pl.save_cohort_figures`; figures not found there are drawn in memory.
    figures
        Include figures.
    title
        Page title.

    Returns
    -------
    The path written.
    """
    text = render_cohort_report(result, figures_dir=figures_dir, figures=figures, title=title)
    out = write_html(text, path, "cohort_report.html")
    logger.debug("cohort report written to %s", out)
    return out
