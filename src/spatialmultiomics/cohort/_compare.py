"""``compare``: per-sample statistics and differential tests of a cohort of labelled cells."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option, check_positive, check_positive_int
from spatialmultiomics.cohort._differential import METHODS, WEIGHTS, differential_table, resolve_method
from spatialmultiomics.cohort._result import CohortResult
from spatialmultiomics.cohort._stats import LABEL, SAMPLE, sample_colocalization, sample_composition, sample_niches

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from mudata import MuData

__all__ = ["compare"]


def _columns_text(columns: Sequence[Any]) -> str:
    shown = [str(c) for c in list(columns)[:15]]
    return f"{shown}{' ...' if len(columns) > 15 else ''}"


def _obs_and_coords(data: Any, x: str | None, y: str | None) -> tuple[pd.DataFrame, np.ndarray, str]:
    """The per-cell table, the (n, 2) coordinates in µm and a name for messages."""
    import pandas as pd

    from spatialmultiomics.io._table import X_COLUMNS, Y_COLUMNS, _find

    if isinstance(data, pd.DataFrame):
        columns = [str(c) for c in data.columns]
        frame = data.copy(deep=False)
        frame.columns = columns
        x_col = x if x is not None else _find(columns, X_COLUMNS)
        y_col = y if y is not None else _find(columns, Y_COLUMNS)
        missing = [
            f"{n}={c!r}" if c else f"{n} (none of {list(cands[:4])} ...)"
            for n, c, cands in (("x", x_col, X_COLUMNS), ("y", y_col, Y_COLUMNS))
            if c is None or c not in columns
        ]
        if missing:
            msg = f"data: missing coordinate column(s) {', '.join(missing)}; the columns are {_columns_text(columns)}."
            raise InputError(msg)
        coords = np.column_stack(
            [pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=np.float64) for c in (x_col, y_col)]
        )
        return frame, coords, "data"
    if hasattr(data, "obs") and hasattr(data, "obsm"):
        if Keys.SPATIAL not in data.obsm:
            msg = "data.obsm['spatial'] is missing; the cohort needs cell coordinates in µm (n_cells, 2)."
            raise InputError(msg)
        coords = np.asarray(data.obsm[Keys.SPATIAL], dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] < 2:
            msg = f"data.obsm['spatial'] must have shape (n_cells, 2), got {coords.shape}."
            raise InputError(msg)
        return data.obs, coords[:, :2], "obs"
    msg = f"data must be an AnnData, a MuData or a pandas DataFrame, got {type(data).__name__}."
    raise TypeError(msg)


def _per_sample(frame: pd.DataFrame, sample: pd.Series, column: str, what: str) -> pd.Series:
    """The value of ``column`` of each sample; raise when a sample has several values or any is missing."""
    values = frame[column]
    if values.isna().any():
        msg = f"{what} column {column!r} has {int(values.isna().sum())} missing values; every cell needs one."
        raise InputError(msg)
    grouped = values.groupby(sample, observed=True, sort=False)
    n_values = grouped.nunique()
    if (n_values > 1).any():
        bad = str(n_values.index[np.flatnonzero(n_values.to_numpy() > 1)[0]])
        shown = sorted(str(v) for v in values[sample == bad].unique())[:5]
        msg = (
            f"{what} column {column!r} has several values within sample {bad!r} ({shown}); it must be one value "
            "per sample (is the sample column right?)."
        )
        raise InputError(msg)
    return grouped.first()


def _prepare(
    data: Any,
    *,
    label_key: str,
    sample_key: str,
    condition_key: str,
    patient_key: str | None,
    covariates: Sequence[str],
    reference_condition: str | None,
    exclude: tuple[str, ...],
    x: str | None,
    y: str | None,
) -> tuple[AnnData, pd.DataFrame, list[str], list[str]]:
    """Validate the input; return the working AnnData, the sample table, the conditions (reference first) and the
    reported types."""
    import anndata as ad
    import pandas as pd

    from spatialmultiomics.io._labelled import _labels

    frame, coords, where = _obs_and_coords(data, x, y)
    columns = [str(c) for c in frame.columns]
    wanted = [("label_key", label_key), ("sample_key", sample_key), ("condition_key", condition_key)]
    if patient_key is not None:
        wanted.append(("patient_key", patient_key))
    wanted += [("covariates", c) for c in covariates]
    missing = [f"{name}={col!r}" for name, col in wanted if col not in columns]
    if missing:
        msg = f"{where}: missing column(s) {', '.join(missing)}; the columns are {_columns_text(columns)}."
        raise InputError(msg)
    if len(frame) == 0:
        msg = f"{where}: has no cells."
        raise InputError(msg)
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        msg = (
            f"{where}: {int(bad.sum())} cells have missing or non-numeric coordinates (first: row "
            f"{int(np.flatnonzero(bad)[0]) + 1}); every cell needs x and y in µm."
        )
        raise InputError(msg)

    labels = _labels(frame[label_key], label_key, where)
    if frame[sample_key].isna().any():
        msg = f"{where}: sample column {sample_key!r} has {int(frame[sample_key].isna().sum())} missing values."
        raise InputError(msg)
    sample = frame[sample_key].astype(str).reset_index(drop=True)
    local = frame.reset_index(drop=True)
    table = pd.DataFrame({"condition": _per_sample(local, sample, condition_key, "condition").astype(str)})
    if patient_key is not None:
        table["patient"] = _per_sample(local, sample, patient_key, "patient").astype(str)
    else:
        table["patient"] = table.index.astype(str)
    sample_order = list(table.index)
    cat = pd.Categorical(sample, categories=sample_order)
    table["n_cells"] = np.bincount(cat.codes, minlength=len(sample_order))
    excluded_or_missing = pd.isna(labels) | np.isin(np.asarray(labels.astype(object)), list(exclude))
    table["n_typed"] = np.bincount(cat.codes[~np.asarray(excluded_or_missing)], minlength=len(sample_order))
    for cov in covariates:
        table[cov] = _per_sample(local, sample, cov, "covariate")
    table.index.name = "sample"
    table = table.reset_index()

    # conditions and the reference
    cond_col = frame[condition_key]
    if isinstance(cond_col.dtype, pd.CategoricalDtype):
        order = [str(c) for c in cond_col.cat.categories if str(c) in set(table["condition"])]
    else:
        order = sorted(table["condition"].unique())
    if len(order) < 2:
        msg = (
            f"{where}: condition column {condition_key!r} has one condition only ({order}); a comparison needs at "
            "least two."
        )
        raise InputError(msg)
    if reference_condition is None:
        reference = order[0]
        logger.info(
            "cohort: reference condition %r (the first of %s); set reference_condition to change.", reference, order
        )
    else:
        reference = str(reference_condition)
        if reference not in order:
            msg = f"reference_condition={reference!r} is not a condition of column {condition_key!r}; conditions: {order}."
            raise InputError(msg)
    levels = [reference] + [c for c in order if c != reference]
    per_cond = table.groupby("condition")["sample"].nunique().reindex(levels, fill_value=0)
    few = per_cond[per_cond < 2]
    if len(few):
        msg = (
            f"{where}: fewer than 2 samples in condition(s) { {str(c): int(n) for c, n in few.items()} }; each condition needs at least "
            f"2 samples (column {sample_key!r}) to estimate its variation."
        )
        raise InputError(msg)

    cats = [str(c) for c in labels.categories]
    reported = [c for c in cats if c not in exclude]
    if not reported:
        msg = f"exclude={list(exclude)} leaves no label of column {label_key!r} to analyse (labels: {cats[:20]})."
        raise InputError(msg)
    obs = pd.DataFrame(
        {LABEL: labels, SAMPLE: cat},
        index=pd.Index([f"c{i}" for i in range(len(frame))]),
    )
    work = ad.AnnData(obs=obs, obsm={Keys.SPATIAL: coords})
    return work, table, levels, reported


def _with_meta(long: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Insert ``condition`` and ``patient`` after the ``sample`` column."""
    meta = table.set_index("sample")
    out = long.copy()
    out.insert(1, "condition", meta["condition"].reindex(out["sample"]).to_numpy())
    out.insert(2, "patient", meta["patient"].reindex(out["sample"]).to_numpy())
    return out


def compare(
    data: AnnData | MuData | pd.DataFrame,
    *,
    label_key: str,
    sample_key: str,
    condition_key: str,
    patient_key: str | None = None,
    reference_condition: str | None = None,
    covariates: Sequence[str] | None = None,
    radius: float = 50.0,
    exclude: Sequence[str] | str | None = ("Unknown",),
    min_cells: int = 5,
    method: str = "auto",
    weights: str | None = "inverse_variance",
    n_niches: int = 8,
    x: str | None = None,
    y: str | None = None,
    seed: int | None = 0,
) -> CohortResult:
    """Compare conditions across a cohort: which cell types and which co-localizations differ.

    Computes, for every sample (image, section), the proportion of each cell type, the exact co-localization
    statistics of every pair of types on a radius graph that never joins two samples, and the share of its cells
    in each cellular neighbourhood; then tests every type and every pair between conditions with the sample, or
    the patient when it has several samples, as the unit of evidence (see
    :mod:`spatialmultiomics.cohort._differential` for the statistics and models). Every non-reference condition
    is compared with the reference.

    Parameters
    ----------
    data
        One row / observation per cell: an AnnData or MuData (columns in ``obs``, coordinates in
        ``obsm['spatial']`` in µm) or a DataFrame with coordinate columns in µm (``x`` / ``y``).
    label_key
        Column with the cell type of each cell (text, categories or integer codes; missing = unlabelled, left out).
    sample_key
        Column with the sample (image / section / FOV) of each cell; graphs never join two samples.
    condition_key
        Column with the condition of each cell; one value per sample.
    patient_key
        Column with the patient; one value per sample. When some patient has several samples, a mixed model with
        a random intercept per patient is used (``method="auto"``). Default: each sample is its own patient.
    reference_condition
        The condition every other one is compared with; default the first category (or the first in sorted
        order).
    covariates
        Further columns (one value per sample) that enter every model as fixed effects: numeric columns as they
        are, others dummy-coded.
    radius
        Neighbourhood radius in µm of the co-localization graph.
    exclude
        Labels that are not cell types (default ``("Unknown",)``): they stay in the graph and the co-localization
        null model but are not reported, and are not in the denominator of the proportions.
    min_cells
        A pair is estimable in a sample when both types have at least this many cells there; samples where it is
        not are left out of that pair's test and counted in ``n_not_estimable``.
    method
        ``"auto"`` (mixed model when some patient has several samples, else weighted least squares), ``"mixed"``,
        ``"wls"`` or ``"welch"`` (two conditions, no covariates, unweighted).
    weights
        ``"inverse_variance"`` (default): in the sample-level model each sample is weighted by
        ``1 / (v + tau^2)``, its statistic's sampling variance plus the between-sample variance; None: equal
        weights. The mixed model is unweighted.
    n_niches
        Cellular neighbourhoods (k-means of neighbour compositions, fitted on all cells); 0 skips them.
    x, y
        Coordinate columns of a DataFrame (default: ``x``, ``x_centroid``, ``CentroidX``, ... ; in µm).
    seed
        Seed of the neighbourhood k-means.

    Returns
    -------
    :class:`CohortResult` with the per-sample tables, ``differential_abundance`` and
    ``differential_colocalization``; ``result.write(folder)`` writes them with figures and a report.

    Raises
    ------
    InputError
        A missing column, a condition / patient / covariate with several values in one sample, fewer than two
        conditions or fewer than two samples in a condition, an absent reference condition, missing coordinates.

    Examples
    --------
    >>> from spatialmultiomics import cohort, datasets
    >>> cells = datasets.synthetic_cohort(n_patients=4, n_images=1, n_cells=400, seed=0).cells
    >>> res = cohort.compare(cells, label_key="cell_type", sample_key="sample", condition_key="condition",
    ...                      patient_key="patient", n_niches=0)
    >>> list(res.differential_abundance.columns[:4])
    ['cell_type', 'condition', 'reference', 'effect']
    """
    t0 = time.perf_counter()
    radius = check_positive(radius, name="radius")
    min_cells = check_positive_int(min_cells, name="min_cells")
    n_niches = check_positive_int(n_niches, name="n_niches", minimum=0)
    method = check_option(method, METHODS, name="method")
    if weights not in WEIGHTS:
        msg = f"weights={weights!r}; allowed: 'inverse_variance' or None."
        raise InputError(msg)
    if exclude is None:
        excluded: tuple[str, ...] = ()
    elif isinstance(exclude, str):
        excluded = (exclude,)
    else:
        excluded = tuple(str(e) for e in exclude)
    covs = [covariates] if isinstance(covariates, str) else list(covariates or [])
    for key, name in (("sample_key", sample_key), ("condition_key", condition_key), ("patient_key", patient_key)):
        if name is not None and name in covs:
            msg = f"covariates={covs}: {name!r} is already {key}; a covariate must be another column."
            raise InputError(msg)

    work, table, levels, reported = _prepare(
        data,
        label_key=label_key,
        sample_key=sample_key,
        condition_key=condition_key,
        patient_key=patient_key,
        covariates=covs,
        reference_condition=reference_condition,
        exclude=excluded,
        x=x,
        y=y,
    )
    model = resolve_method(
        method, table, has_patient=patient_key is not None, n_levels=len(levels), has_covariates=bool(covs)
    )
    logger.info(
        "cohort: %d cells, %d samples, %d patients, conditions %s (reference %r), %d types; model %s",
        work.n_obs,
        len(table),
        table["patient"].nunique(),
        levels,
        levels[0],
        len(reported),
        model,
    )
    timings: dict[str, float] = {}

    t = time.perf_counter()
    composition = _with_meta(sample_composition(work, reported), table)
    coloc = _with_meta(sample_colocalization(work, radius=radius, exclude=excluded, min_cells=min_cells), table)
    timings["colocalization"] = time.perf_counter() - t
    niche_long = None
    centroids = None
    if n_niches:
        t = time.perf_counter()
        niche_long, centroids = sample_niches(work, n_niches=n_niches, seed=seed)
        niche_long = _with_meta(niche_long, table)
        timings["niches"] = time.perf_counter() - t
    if niche_long is None:
        import pandas as pd

        niche_long = pd.DataFrame(columns=["sample", "condition", "patient", "niche", "n_cells", "fraction"])

    from threadpoolctl import threadpool_limits

    t = time.perf_counter()
    samples = table.set_index("sample")
    limit = threadpool_limits(1)  # hundreds of tiny fits: BLAS threads only contend
    ab_stats = composition.assign(
        y=composition["logit"], v=composition["logit_var"], estimable=composition["n_typed"] > 0
    )
    abundance = differential_table(
        ab_stats, samples, ["cell_type"], levels, method=model, weights=weights, covariates=covs
    )
    means = composition.groupby(["cell_type", "condition"], observed=True)["proportion"].mean()
    abundance.insert(
        len(abundance.columns) - 3,
        "proportion_condition",
        [means.get((t_, c), np.nan) for t_, c in zip(abundance["cell_type"], abundance["condition"], strict=True)],
    )
    abundance.insert(
        len(abundance.columns) - 3,
        "proportion_reference",
        [means.get((t_, c), np.nan) for t_, c in zip(abundance["cell_type"], abundance["reference"], strict=True)],
    )
    co_stats = coloc.assign(y=coloc["log_enrichment"], v=coloc["log_enrichment_var"])
    colocalization = differential_table(
        co_stats, samples, ["cell_type_a", "cell_type_b"], levels, method=model, weights=weights, covariates=covs
    )
    limit.restore_original_limits()
    timings["tests"] = time.perf_counter() - t

    from spatialmultiomics.spatial._graph import _package_version

    timings["total"] = time.perf_counter() - t0
    params = {
        "label_key": label_key,
        "sample_key": sample_key,
        "condition_key": condition_key,
        "patient_key": patient_key,
        "reference_condition": levels[0],
        "conditions": levels,
        "covariates": covs,
        "radius": radius,
        "exclude": list(excluded),
        "min_cells": min_cells,
        "method": method,
        "model": model,
        "weights": weights,
        "n_niches": n_niches,
        "seed": seed,
        "cell_types": reported,
        "n_cells": int(work.n_obs),
        "n_samples": len(table),
        "n_patients": int(table["patient"].nunique()),
        "timings_s": timings,
        "version": _package_version(),
    }
    return CohortResult(
        sample_table=table,
        sample_composition=composition,
        sample_colocalization=coloc,
        sample_niches=niche_long,
        differential_abundance=abundance,
        differential_colocalization=colocalization,
        niche_centroids=centroids,
        params=params,
    )
