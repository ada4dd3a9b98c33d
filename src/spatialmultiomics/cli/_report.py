"""``spatialmultiomics report``: the HTML report (and figures) of a result folder written earlier."""

from __future__ import annotations

from pathlib import Path

import click

from spatialmultiomics.cli._main import _common, _setup_logging, cli

__all__ = ["report"]


@cli.command("report")
@click.argument("result_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Report file (default: RESULT_DIR/report.html).",
)
@click.option("--no-figures", is_flag=True, help="Do not redraw RESULT_DIR/figures/ (embed the ones already there).")
@click.option("--title", default=None, help="Page title.")
@_common
def report(result_dir, output, no_figures, title, quiet, debug) -> None:
    """Write report.html (and figures/) for RESULT_DIR, a folder written by `spatialmultiomics run`.

    The report is one self-contained page (figures inline, no network): inputs and provenance, alignment, QC,
    factors, figures, a sortable co-localization table, parameters, versions and time per stage.
    """
    from spatialmultiomics.report import report_folder

    _setup_logging(quiet, debug)
    path = report_folder(result_dir, output=output, figures=not no_figures, title=title)
    if not quiet:
        click.echo(f"report: {path}")
