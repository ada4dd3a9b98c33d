"""``spatialmultiomics cohort``: compare conditions across many samples of already-labelled cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from spatialmultiomics.cli._main import _common, _setup_logging, cli

__all__ = ["cohort", "run_labelled_table"]


def run_labelled_table(
    table: Path,
    *,
    label_key: str,
    sample_key: str,
    condition_key: str,
    patient_key: str | None = None,
    reference_condition: str | None = None,
    covariates: tuple[str, ...] = (),
    x: str | None = None,
    y: str | None = None,
    pixel_size_um: float = 1.0,
    radius: float = 50.0,
    exclude: tuple[str, ...] = ("Unknown",),
    min_cells: int = 5,
    method: str = "auto",
    unweighted: bool = False,
    n_niches: int = 8,
    seed: int = 0,
    output: Path,
    overwrite: bool = False,
    figures: bool = True,
) -> Any:
    """Read one table of labelled cells, run :func:`spatialmultiomics.cohort.compare` and write the results.

    The table is a CSV / TSV (also ``.gz``) / parquet file with one row per cell, or an ``.h5ad`` (columns in
    ``obs``, coordinates in ``obsm['spatial']``). Returns the :class:`~spatialmultiomics.cohort.CohortResult`.
    """
    import anndata as ad
    import numpy as np

    from spatialmultiomics import io
    from spatialmultiomics._errors import InputError
    from spatialmultiomics._keys import Keys
    from spatialmultiomics._validate import check_positive
    from spatialmultiomics.cohort import compare
    from spatialmultiomics.io._common import existing_path
    from spatialmultiomics.io._table import X_COLUMNS, Y_COLUMNS, _find, _load_frame

    pixel_size_um = check_positive(pixel_size_um, name="--pixel-size-um")
    io.check_output_dir(output, overwrite=overwrite)
    path = existing_path(table, folder=False)
    if path.suffix.lower() == ".h5ad":
        try:
            data = ad.read_h5ad(path)
        except (OSError, KeyError, ValueError) as err:
            msg = f"{path}: not a readable .h5ad file ({type(err).__name__}: {str(err).splitlines()[0][:200]})."
            raise InputError(msg) from err
        if Keys.SPATIAL not in data.obsm and x is not None and y is not None:
            cols = [c for c in (x, y) if c not in data.obs]
            if cols:
                msg = f"{path}: no obsm['spatial'] and obs has no column(s) {cols}."
                raise InputError(msg)
            data.obsm[Keys.SPATIAL] = data.obs[[x, y]].to_numpy(dtype=np.float64)
        if Keys.SPATIAL in data.obsm:
            data.obsm[Keys.SPATIAL] = np.asarray(data.obsm[Keys.SPATIAL], dtype=np.float64) * pixel_size_um
    else:
        data = _load_frame(path)
        if len(data) == 0:
            msg = f"{path}: has no rows; at least one cell is needed."
            raise InputError(msg)
        data.columns = [str(c) for c in data.columns]
        columns = list(data.columns)
        x = x if x is not None else _find(columns, X_COLUMNS)
        y = y if y is not None else _find(columns, Y_COLUMNS)
        missing = [
            f"--{n} {c!r}" if c else f"--{n} (none of {list(cands[:4])} ...)"
            for n, c, cands in (("x", x, X_COLUMNS), ("y", y, Y_COLUMNS))
            if c is None or c not in columns
        ]
        if missing:
            shown = [str(c) for c in columns[:15]]
            msg = f"{path}: missing coordinate column(s) {', '.join(missing)}; the columns are {shown}."
            raise InputError(msg)
        if pixel_size_um != 1.0:
            for col in (x, y):
                data[col] = io._table._as_numeric(data, col, path) * pixel_size_um
    result = compare(
        data,
        label_key=label_key,
        sample_key=sample_key,
        condition_key=condition_key,
        patient_key=patient_key,
        reference_condition=reference_condition,
        covariates=list(covariates) or None,
        radius=radius,
        exclude=exclude,
        min_cells=min_cells,
        method=method,
        weights=None if unweighted else "inverse_variance",
        n_niches=n_niches,
        x=x,
        y=y,
        seed=seed,
    )
    result.write(output, overwrite=overwrite, figures=figures)
    return result


@cli.command("cohort")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--label-key", default=None, help="Column with the cell type of each cell (labelled table; required).")
@click.option(
    "--sample-key", default=None, help="Column with the sample (image / section / FOV) of each cell (labelled table)."
)
@click.option(
    "--condition-key", default=None, help="Column with the condition (group) of each cell; one per sample (table)."
)
@click.option(
    "--patient-key",
    default=None,
    help="Column with the patient; one value per sample. Patients with several samples get a mixed model "
    "(random intercept per patient). Default: each sample is its own patient.",
)
@click.option(
    "--reference-condition",
    default=None,
    help="Condition every other one is compared with (default: the first in sorted order).",
)
@click.option(
    "--covariate",
    "covariates",
    multiple=True,
    metavar="COLUMN",
    help="A per-sample column entered in every model as a fixed effect (numeric as is, text dummy-coded); repeatable.",
)
@click.option("--x", "x", default=None, help="x coordinate column (default: x, x_centroid, CentroidX, ...).")
@click.option("--y", "y", default=None, help="y coordinate column (default: y, y_centroid, CentroidY, ...).")
@click.option(
    "--pixel-size-um",
    type=float,
    default=1.0,
    show_default=True,
    help="Micrometres per coordinate unit (e.g. 0.390625 for MIBI: 800 µm / 2048 px).",
)
@click.option("--radius", type=float, default=50.0, show_default=True, help="Neighbourhood radius in µm.")
@click.option(
    "--exclude",
    multiple=True,
    default=("Unknown",),
    show_default=True,
    metavar="LABEL",
    help="A label that is not a cell type; repeatable (giving it replaces the default). Its cells stay in the graph "
    "and the null model, but it is not tested and not in the denominator of the proportions.",
)
@click.option(
    "--min-cells",
    type=int,
    default=5,
    show_default=True,
    help="Cells of each type a sample needs for a pair to be estimable there (other samples are counted in "
    "n_not_estimable, not used).",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "mixed", "wls", "welch"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="auto: mixed model when a patient has several samples, else weighted least squares.",
)
@click.option("--unweighted", is_flag=True, help="Equal sample weights in the sample-level model (plain OLS).")
@click.option("--n-niches", type=int, default=8, show_default=True, help="Cellular neighbourhoods (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the neighbourhood k-means.")
@click.option("--no-figures", is_flag=True, help="Write tables and the report without figures.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Result folder (created atomically)."
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty result folder.")
@click.option("--n-factors", default="15", show_default=True, help="Sample sheet: shared NMF factors, or 'auto'.")
@click.option(
    "--markers", type=click.Path(path_type=Path), multiple=True, help="Sample sheet: marker reference (repeatable)."
)
@click.option(
    "--batch-correction",
    type=click.Choice(["auto", "quantile", "scale", "harmony", "none"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="Sample sheet: per-sample gain and offset of each protein channel from its quantiles (auto = quantile), "
    "per-sample scaling, Harmony on the protein components, or none.",
)
@click.option("--n-jobs", type=int, default=1, show_default=True, help="Sample sheet: samples read in parallel.")
@_common
def cohort(
    table,
    label_key,
    sample_key,
    condition_key,
    patient_key,
    reference_condition,
    covariates,
    x,
    y,
    pixel_size_um,
    radius,
    exclude,
    min_cells,
    method,
    unweighted,
    n_niches,
    seed,
    no_figures,
    output,
    overwrite,
    n_factors,
    markers,
    batch_correction,
    n_jobs,
    quiet,
    debug,
) -> None:
    """Which cell types and which co-localizations differ between conditions, with samples as the unit.

    TABLE is one CSV / TSV (also .gz) / parquet file with one row per cell (x, y, cell type, sample, condition
    and optionally patient and covariate columns), or an .h5ad file with those columns in obs. Every condition
    is compared with the reference: abundance as the log odds ratio of each type's proportion, co-localization
    as the difference of log(observed / expected) neighbour pairs of each pair of types, per sample, tested
    with a mixed model (random intercept per patient) when patients have several samples, else weighted least
    squares; 95 % CIs, p-values and Benjamini-Hochberg q-values.

    TABLE may instead be a sample sheet (CSV / TSV / YAML / TOML: sample, condition, optional patient, then the
    input files, platforms and pixel size of each sample; see docs/cohorts.md): every sample is read (--n-jobs
    processes), all are factorized and typed with one model (--n-factors, --markers, --batch-correction), and the
    same comparison runs on the types found; cells.csv, samples.csv, cohort_model.json and result.h5mu are written
    too. The --*-key options are not needed then.

    \b
    Writes to --output:
      sample_table.csv                 one row per sample: condition, patient, cells, covariates
      sample_composition.csv           per sample and type: cells, proportion, logit
      sample_colocalization.csv        per sample and pair: observed, expected, z, log enrichment
      sample_niches.csv                per sample and neighbourhood: cells, fraction
      differential_abundance.csv       cell_type, condition, reference, effect, ci_low, ci_high,
                                       p_value, q_value, n_samples, n_condition, n_reference, ...
      differential_colocalization.csv  cell_type_a, cell_type_b, condition, ... (same columns)
      figures/, cohort_report.html, params.json

    \b
    Example:
      spatialmultiomics cohort cells.csv --label-key cell_type --sample-key image \\
          --condition-key response --patient-key patient --reference-condition non_responder -o cohort_out
    """
    _setup_logging(quiet, debug)
    from spatialmultiomics.cohort import is_sample_sheet

    if is_sample_sheet(table):  # a sample sheet: one joint model over the samples' files, then the comparison
        options = (n_factors, markers, batch_correction, n_jobs, reference_condition, covariates, radius, seed)
        _run_sheet(table, output, *options, overwrite=overwrite, figures=not no_figures, quiet=quiet)
        return
    from spatialmultiomics._errors import InputError

    if None in (label_key, sample_key, condition_key):
        msg = f"{table}: a labelled cell table needs --label-key, --sample-key and --condition-key (or give a sample sheet)."
        raise InputError(msg)
    result = run_labelled_table(
        table,
        label_key=label_key,
        sample_key=sample_key,
        condition_key=condition_key,
        patient_key=patient_key,
        reference_condition=reference_condition,
        covariates=tuple(covariates),
        x=x,
        y=y,
        pixel_size_um=pixel_size_um,
        radius=radius,
        exclude=tuple(exclude),
        min_cells=min_cells,
        method=method.lower(),
        unweighted=unweighted,
        n_niches=n_niches,
        seed=seed,
        output=output,
        overwrite=overwrite,
        figures=not no_figures,
    )
    if not quiet:
        p = result.params
        click.echo(
            f"{p['n_cells']} cells, {p['n_samples']} samples, {p['n_patients']} patients, conditions "
            f"{', '.join(p['conditions'])} (reference {p['reference_condition']}), model {p['model']}."
        )
        for name, frame in (("types", result.differential_abundance), ("pairs", result.differential_colocalization)):
            n_sig = int((frame["q_value"] < 0.05).sum())
            click.echo(f"{name} differing at q < 0.05: {n_sig} of {len(frame)}")
        top = result.significant("colocalization").head(3)
        for rec in top.itertuples(index=False):
            click.echo(
                f"  {rec.cell_type_a} | {rec.cell_type_b}: {rec.condition} vs {rec.reference} effect "
                f"{rec.effect:+.2f} [{rec.ci_low:+.2f}, {rec.ci_high:+.2f}], q = {rec.q_value:.2g}"
            )
        click.echo(f"results: {output}")


def _run_sheet(
    sheet: Path,
    output: Path,
    n_factors: str,
    markers: tuple[Path, ...],
    batch_correction: str,
    n_jobs: int,
    reference_condition: str | None,
    covariates: tuple[str, ...],
    radius: float,
    seed: int,
    *,
    overwrite: bool,
    figures: bool,
    quiet: bool,
) -> None:
    """``cohort SHEET``: :func:`spatialmultiomics.cohort.run_cohort` on a sample sheet."""
    from spatialmultiomics.cli._main import _n_factors
    from spatialmultiomics.cohort import run_cohort

    run = run_cohort(
        sheet,
        output,
        reference_condition=reference_condition,
        covariates=list(covariates) or None,
        radius=radius,
        overwrite=overwrite,
        figures=figures,
        n_factors=_n_factors(n_factors),
        markers=[str(m) for m in markers] if len(markers) > 1 else (markers[0] if markers else None),
        batch_correction=batch_correction.lower(),
        n_jobs=n_jobs,
        seed=seed,
    )
    if not quiet:
        mdata = run.mdata
        click.echo(
            f"{mdata.n_obs} cells, {len(run.sheet)} samples, conditions {', '.join(run.sheet.conditions)}; "
            f"batch correction {mdata.uns['cohort']['batch_correction']['used']}; "
            f"{mdata.obs['cell_type'].nunique()} cell types."
        )
        click.echo(f"results: {output}")
