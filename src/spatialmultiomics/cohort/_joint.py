"""One model for every sample of a cohort: read in parallel, normalise per sample, factorize and annotate once.

:func:`fit_cohort` reads every sample of a sheet with the readers of :mod:`spatialmultiomics.io` (as
``run_pipeline`` does: the same helpers), aligns its modalities and preprocesses it, one sample per worker
process; then the samples are stacked and factorized together, so the factors are shared, and annotated once with
one marker reference, so a type means the same thing in every sample. Cells keep their sample in
``obs['sample']`` and ``obs['fov']``, which every spatial graph of the package respects: coordinates of different
samples are never joined.

Memory: a worker holds one sample (raw and preprocessed) at a time; the parent holds every sample's raw and
preprocessed matrices (sparse counts stay sparse) and the cell loadings, which the joint factorization needs.
:func:`run_cohort` then runs :func:`spatialmultiomics.cohort.compare` and writes everything atomically.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._memory import PeakRSS, _high_water_mib
from spatialmultiomics.cohort._batch import harmony_correct, quantile_align, resolve_batch_correction
from spatialmultiomics.cohort._parallel import map_samples, resolve_n_jobs
from spatialmultiomics.cohort._sheet import SampleEntry, SampleSheet, read_sample_sheet

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from spatialmultiomics.cohort._result import CohortResult

__all__ = ["CohortRun", "fit_cohort", "run_cohort"]

#: obs columns written for every cell
SAMPLE, CONDITION, PATIENT = "sample", "condition", "patient"
#: uns key of the cohort record
COHORT_UNS = "cohort"


@dataclass(frozen=True)
class _Task:
    """What a worker needs for one sample (picklable)."""

    entry: SampleEntry
    where: str
    preprocess: bool
    align: dict[str, Any]
    spillover: bool
    pp_kwargs: dict[str, Any]


@dataclass(frozen=True)
class _Prepared:
    """One sample read, aligned (and preprocessed): modality AnnData on the same cells, and its joint obs."""

    sample: str
    mods: dict[str, AnnData]
    obs: pd.DataFrame
    spatial: np.ndarray
    provenance: dict[str, Any]
    seconds: float
    peak_rss_mib: float


def _prepare_sample(task: _Task) -> _Prepared:
    """Read, align, compensate and (per-sample mode) preprocess one sample; runs in a worker."""
    from spatialmultiomics import pp
    from spatialmultiomics._inputs import _collect_modalities, _compensate_spillover
    from spatialmultiomics.align import align as align_modalities

    t0 = time.perf_counter()
    e = task.entry
    try:
        mods = _collect_modalities(
            e.inputs.get(Keys.RNA),
            e.inputs.get(Keys.PROTEIN),
            e.platforms.get(Keys.RNA),
            e.platforms.get(Keys.PROTEIN),
            None,
            dict(e.pixel_size_um),
        )
        mdata = align_modalities(mods, **task.align)
        if task.spillover:
            _compensate_spillover(mdata)
        if task.preprocess:
            pp.preprocess(mdata, **task.pp_kwargs)
    except InputError as err:
        msg = f"{task.where}, row {e.row} (sample {e.sample!r}): {err}"
        raise InputError(msg) from None
    out = {}
    for name, adata in mdata.mod.items():
        adata = adata[mdata.obs_names].copy() if not adata.obs_names.equals(mdata.obs_names) else adata
        adata.obs_names = [f"{e.sample}:{c}" for c in adata.obs_names]
        out[name] = adata
    obs = mdata.obs.copy()
    obs.index = [f"{e.sample}:{c}" for c in obs.index]
    prov = {name: dict(adata.uns.get(Keys.PROVENANCE, {})) for name, adata in out.items()}
    return _Prepared(
        sample=e.sample,
        mods=out,
        obs=obs,
        spatial=np.asarray(mdata.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2],
        provenance=prov,
        seconds=time.perf_counter() - t0,
        peak_rss_mib=_high_water_mib(),  # in a worker: its peak over the samples it has read so far
    )


def _same_transforms(parts: list[_Prepared], pp_kwargs: Mapping[str, Any]) -> dict[str, str]:
    """One intensity transform per modality across the samples: samples whose automatic choice differs from the
    most common one are re-scaled with it (a transform per sample would make the samples incomparable)."""
    from spatialmultiomics import pp

    used: dict[str, str] = {}
    names = [m for m in parts[0].mods if Keys.INTENSITY_TRANSFORM in parts[0].mods[m].uns]
    for m in names:
        chosen = [str(p.mods[m].uns[Keys.INTENSITY_TRANSFORM]["transform"]) for p in parts if m in p.mods]
        common = Counter(chosen).most_common(1)[0][0]
        used[m] = common
        for p in parts:
            if m in p.mods and str(p.mods[m].uns[Keys.INTENSITY_TRANSFORM]["transform"]) != common:
                logger.info("cohort: %s of sample %s re-scaled with the cohort's transform %s", m, p.sample, common)
                pp.scale_intensities(
                    p.mods[m],
                    transform=common,
                    cofactor=pp_kwargs.get("cofactor", 5.0),
                    low_percentile=pp_kwargs.get("low_percentile", 1.0),
                    high_percentile=pp_kwargs.get("high_percentile", 99.0),
                )
    return used


def _stack(parts: list[_Prepared], where: str, rows: Mapping[str, int]) -> dict[str, AnnData]:
    """Stack the samples of every modality (features shared by all samples; per-sample scaling kept in uns)."""
    import anndata as ad

    mod_sets = {p.sample: set(p.mods) for p in parts}
    first = parts[0]
    for p in parts[1:]:
        if mod_sets[p.sample] != mod_sets[first.sample]:
            msg = (
                f"{where}, row {rows[p.sample]} (sample {p.sample!r}): modalities {sorted(mod_sets[p.sample])}, but "
                f"sample {first.sample!r} has {sorted(mod_sets[first.sample])}; every sample needs the same "
                "modalities for one joint model."
            )
            raise InputError(msg)
    joint: dict[str, AnnData] = {}
    for name in first.mods:
        blocks = [p.mods[name] for p in parts]
        common = blocks[0].var_names
        for b in blocks[1:]:
            common = common.intersection(b.var_names, sort=False)
        if common.size == 0:
            msg = f"{where}: modality {name!r} has no feature in common to all samples."
            raise InputError(msg)
        dropped = sorted({str(v) for b in blocks for v in b.var_names if v not in common})
        if dropped:
            logger.warning(
                "cohort: %s: %d feature(s) not measured in every sample are left out: %s",
                name,
                len(dropped),
                dropped[:10],
            )
        stacked = ad.concat([b[:, common] for b in blocks], join="inner", merge="same", uns_merge=None)
        stacked.uns[Keys.PROVENANCE] = dict(blocks[0].uns.get(Keys.PROVENANCE, {}))
        stacked.uns[Keys.PROVENANCE]["samples"] = [p.sample for p in parts]
        if Keys.INTENSITY_TRANSFORM in blocks[0].uns:
            stacked.uns[Keys.INTENSITY_TRANSFORM] = dict(blocks[0].uns[Keys.INTENSITY_TRANSFORM])
        joint[name] = stacked
    return joint


def _cohort_obs(parts: list[_Prepared], sheet: SampleSheet) -> pd.DataFrame:
    """Per-cell obs: the aligned obs of each sample plus sample, condition, patient, covariates and fov."""
    by_name = {e.sample: e for e in sheet}
    frames = []
    for p in parts:
        e = by_name[p.sample]
        obs = p.obs.copy()
        fov = obs[Keys.FOV].astype(str) if Keys.FOV in obs else None
        for col in (SAMPLE, CONDITION, PATIENT, *sheet.covariates):
            if col in obs:
                obs = obs.drop(columns=col)
        obs[SAMPLE] = e.sample
        obs[CONDITION] = e.condition
        if sheet.has_patient:
            obs[PATIENT] = e.patient
        for c in sheet.covariates:
            obs[c] = e.covariates.get(c)
        # graphs never cross obs['fov']: a sample's own fields of view stay apart too
        obs[Keys.FOV] = e.sample if fov is None else (e.sample + "/" + fov).to_numpy()
        frames.append(obs)
    obs = pd.concat(frames, axis=0)
    for col in (SAMPLE, CONDITION, PATIENT, Keys.FOV):
        if col in obs:
            order = list(dict.fromkeys(obs[col].astype(str)))
            obs[col] = pd.Categorical(obs[col].astype(str), categories=order)
    for c in sheet.covariates:  # numbers as float (NaN where blank), text as categories: both storable in .h5mu
        values = [e.covariates.get(c) for e in sheet]
        if all(v is None or isinstance(v, int | float) for v in values):
            obs[c] = pd.to_numeric(obs[c], errors="coerce").astype(np.float64)
        else:
            order = list(dict.fromkeys(str(v) for v in values if v is not None))
            obs[c] = pd.Categorical(obs[c].map(lambda v: None if v is None else str(v)), categories=order)
    return obs


def fit_cohort(
    sheet: SampleSheet | str | Path | pd.DataFrame,
    *,
    n_factors: int | str = 15,
    markers: str | Path | Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_correction: str | None = "auto",
    n_jobs: int = 1,
    annotation_method: str = "cluster",
    align: str = "auto",
    match_radius: float | str = "auto",
    unmatched: str = "impute",
    allow_reflection: bool = False,
    solver: str = "hals",
    modality_weights: Any = None,
    max_iter: int = 400,
    n_top_genes: int = 2000,
    rna_normalization: str = "library",
    protein_transform: str = "auto",
    exclude_channels: Sequence[str] | str | None = "default",
    spillover: bool = False,
    min_conditions: int = 1,
) -> MuData:
    """Read every sample of a sheet and fit one model: shared factors, one annotation, a measured batch correction.

    Parameters
    ----------
    sheet
        A :class:`SampleSheet`, a sheet file (CSV / TSV / YAML / TOML) or a DataFrame (see
        :func:`read_sample_sheet`).
    n_factors
        Number of shared NMF factors, or ``'auto'`` (:func:`smo.factorize.select_n_factors` on all samples).
    markers
        Marker reference (file, dict or None for the built-in one); one reference for every sample.
    seed
        Seed of every random step (alignment, factorization, clustering, Harmony).
    batch_correction
        ``'auto'`` (default: ``'quantile'``, chosen by measurement), ``'quantile'`` (per-sample gain and offset
        of every intensity channel, from its quantiles against the cohort's), ``'scale'`` (every sample
        preprocessed on its own cells: per-sample channel scaling), ``'harmony'`` (preprocessing on all cells,
        then Harmony on the intensity modalities' components, carried back to the channels) or None /
        ``'none'``; see :mod:`spatialmultiomics.cohort._batch`.
    n_jobs
        Worker processes reading and preprocessing the samples (-1: every core); the result does not depend on it.
    annotation_method, align, match_radius, unmatched, allow_reflection, solver, modality_weights, max_iter
        As in :func:`spatialmultiomics.run_pipeline`.
    n_top_genes, rna_normalization, protein_transform, exclude_channels, spillover
        As in :func:`spatialmultiomics.run_pipeline`; the highly variable genes are chosen on all samples together
        and one intensity transform is used for every sample.
    min_conditions
        Conditions the sheet must have (1: any sheet; 2 for a comparison).

    Returns
    -------
    MuData of every cell of every sample (``obs_names`` ``'<sample>:<cell>'``) with

    - ``obs['sample']``, ``obs['condition']``, ``obs['patient']`` (when the sheet has it), the covariates, and
      ``obs['fov']`` (the sample, or ``'<sample>/<fov>'``; spatial graphs never cross it);
    - ``obsm['spatial']`` (µm, each sample in its own frame), ``obsm['X_nmf']`` (shared factors),
      ``obs['cell_type']`` and ``obs['cell_type_confidence']`` (one annotation) and every other slot of
      :func:`smo.factorize.joint_nmf` and :func:`smo.annotate.annotate_measured`;
    - ``uns['cohort']``: the sample table, the batch correction requested and used, per-sample read times, the
      transforms used and the parameters.

    Examples
    --------
    >>> import pandas as pd, spatialmultiomics as smo
    >>> slides = [smo.datasets.synthetic_tissue(600, seed=s) for s in (0, 1)]
    >>> frame = pd.DataFrame({"sample": ["a", "b"], "condition": ["x", "y"],
    ...                       "transcripts": [m["rna"] for m in slides], "proteins": [m["protein"] for m in slides]})
    >>> mdata = smo.cohort.fit_cohort(frame, n_factors=12, markers=slides[0].uns["markers"])
    >>> sorted(mdata.obs["sample"].unique()), mdata.n_obs
    (['a', 'b'], 1200)
    """
    from threadpoolctl import threadpool_limits

    from spatialmultiomics import annotate, factorize, pp
    from spatialmultiomics._inputs import _check_k_fits, _check_n_factors
    from spatialmultiomics._mudata import make_mudata
    from spatialmultiomics._validate import check_option
    from spatialmultiomics.align._align import ROUTES, check_match_radius
    from spatialmultiomics.annotate._assign import METHODS as ANNOTATION_METHODS

    if not isinstance(sheet, SampleSheet):
        sheet = read_sample_sheet(sheet, min_conditions=min_conditions)
    elif len(sheet.conditions) < min_conditions:
        msg = f"the sample sheet has {len(sheet.conditions)} condition(s); at least {min_conditions} are needed."
        raise InputError(msg)
    requested, correction = resolve_batch_correction(batch_correction)
    n_factors = _check_n_factors(n_factors)
    n_workers = resolve_n_jobs(n_jobs, len(sheet))
    annotation_method = check_option(annotation_method, ANNOTATION_METHODS, name="annotation_method")
    protein_transform = check_option(protein_transform, pp.PROTEIN_TRANSFORMS, name="protein_transform")
    align_kwargs = {
        "route": check_option(align, ROUTES, name="align"),
        "match_radius": check_match_radius(match_radius),
        "unmatched": check_option(unmatched, ("impute", "drop"), name="unmatched"),
        "allow_reflection": bool(allow_reflection),
        "seed": seed,
    }
    if markers is not None and not isinstance(markers, Mapping):
        markers = annotate.load_markers(markers)  # fail early on a bad marker file
    pp_kwargs = {
        "n_top_genes": n_top_genes,
        "rna_normalization": rna_normalization,
        "protein_transform": protein_transform,
        "exclude_channels": pp.NON_MARKER_CHANNELS if exclude_channels == "default" else exclude_channels,
    }
    where = str(sheet.source) if sheet.source is not None else "sample sheet"
    per_sample = correction == "scale"
    aligned: dict[str, Any] = {}
    timings: dict[str, float] = {}
    monitor = PeakRSS().__enter__()
    peak: dict[str, float] = {}
    try:
        t = time.perf_counter()
        tasks = [_Task(e, where, per_sample, align_kwargs, bool(spillover), pp_kwargs) for e in sheet]
        parts = map_samples(_prepare_sample, tasks, n_jobs=n_workers)
        timings["read_preprocess"] = time.perf_counter() - t
        peak["read_preprocess"] = monitor.lap()
        t = time.perf_counter()
        transforms = _same_transforms(parts, pp_kwargs) if per_sample else {}
        rows = {e.sample: e.row for e in sheet}
        joint = _stack(parts, where, rows)
        obs = _cohort_obs(parts, sheet)
        spatial = pd.DataFrame(np.vstack([p.spatial for p in parts]), index=obs.index)
        provenance = {p.sample: p.provenance for p in parts}
        read_seconds = {p.sample: round(p.seconds, 3) for p in parts}
        worker_peak = max(p.peak_rss_mib for p in parts) if n_workers > 1 else None
        del parts
        mdata = make_mudata(joint)
        del joint
        obs = obs.reindex(mdata.obs_names)
        for col in obs.columns:
            mdata.obs[col] = (
                obs[col].to_numpy() if not isinstance(obs[col].dtype, pd.CategoricalDtype) else obs[col].values
            )
        mdata.obsm[Keys.SPATIAL] = spatial.reindex(mdata.obs_names).to_numpy()
        if per_sample:
            for name, adata in mdata.mod.items():
                if pp.modality_kind(mdata, name) == "counts":  # one gene set for all samples
                    pp.highly_variable_genes(adata, n_top_genes=n_top_genes)
            mdata.uns["preprocess"] = {
                **{k: v for k, v in pp_kwargs.items() if k != "exclude_channels"},
                "per_sample": True,
                "intensity_transforms": transforms,
            }
        else:
            aligned = quantile_align(mdata, batch_key=SAMPLE) if correction == "quantile" else {}
            pp.preprocess(mdata, **pp_kwargs)
        harmony = (
            harmony_correct(mdata, batch_key=SAMPLE, seed=seed, n_jobs=n_workers) if correction == "harmony" else {}
        )
        if n_factors != "auto":
            _check_k_fits(n_factors, mdata)
        timings["stack_normalise"] = time.perf_counter() - t
        peak["stack_normalise"] = monitor.lap()
        t = time.perf_counter()
        with threadpool_limits(limits=1 if mdata.n_obs * mdata.n_vars < 5e7 else None, user_api="blas"):
            selection = None
            if n_factors == "auto":
                selection = factorize.select_n_factors(
                    mdata, solver=solver, modality_weights=modality_weights, seed=seed, inplace=False
                )
            factorize.joint_nmf(
                mdata,
                n_components=n_factors if selection is None else selection.k,
                solver=solver,
                modality_weights=modality_weights,
                max_iter=max_iter,
                seed=seed,
            )
        if selection is not None:
            factorize.store_k_selection(mdata, selection)
        timings["factorize"] = time.perf_counter() - t
        peak["factorize"] = monitor.lap()
        t = time.perf_counter()
        # as the pipeline: types learnt from fully measured cells, imputed / doubtful partners typed by their vote
        annotate.annotate_measured(mdata, markers=markers, method=annotation_method, seed=seed, n_jobs=n_workers)
        timings["annotate"] = time.perf_counter() - t
        peak["annotate"] = monitor.lap()
    finally:
        monitor.__exit__(None, None, None)
    mdata.uns[COHORT_UNS] = {
        "samples": sheet.table().astype(str).to_dict(orient="list"),
        "sheet": where,
        "batch_correction": {"requested": requested, "used": correction, "harmony": harmony, "quantile": aligned},
        "provenance": provenance,
        "read_seconds": read_seconds,
        "timings_s": timings,
        "peak_rss_mib": peak,
        "worker_peak_rss_mib": "none (n_jobs=1)" if worker_peak is None else round(worker_peak, 1),
        "params": {
            "n_factors": int(mdata.obsm[Keys.NMF].shape[1]),
            "n_factors_requested": str(n_factors),
            "seed": seed,
            "n_jobs": n_workers,
            "annotation_method": annotation_method,
            "solver": solver,
            "max_iter": max_iter,
            "spillover": bool(spillover),
            **{k: str(v) for k, v in align_kwargs.items()},
        },
    }
    logger.info("cohort: %d samples, %d cells, batch correction %s, %s", len(sheet), mdata.n_obs, correction, timings)
    return mdata


@dataclass
class CohortRun:
    """What :func:`run_cohort` produced.

    Attributes
    ----------
    mdata
        The joint model (see :func:`fit_cohort`).
    comparison
        Per-sample statistics and differential tests (:class:`CohortResult`), or None with ``compare=False``.
    sheet
        The sample sheet read.
    output_dir
        Result folder, or None.
    timings
        Seconds per stage.
    """

    mdata: MuData = field(repr=False)
    comparison: CohortResult | None
    sheet: SampleSheet
    output_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def cells(self) -> pd.DataFrame:
        """One row per cell: ``cell_id, sample, condition[, patient], x, y, cell_type, confidence``."""
        return cell_table(self.mdata)


def cell_table(mdata: MuData) -> pd.DataFrame:
    """One row per cell of a joint model: ``cell_id, sample, condition[, patient], x, y, cell_type, confidence``
    (``nmf_factor`` when present); x, y in µm in each sample's own frame."""
    xy = np.asarray(mdata.obsm[Keys.SPATIAL])
    frame = pd.DataFrame({"cell_id": mdata.obs_names.to_numpy()})
    for col in (SAMPLE, CONDITION, PATIENT):
        if col in mdata.obs:
            frame[col] = mdata.obs[col].astype(str).to_numpy()
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    frame["cell_type"] = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    frame["confidence"] = mdata.obs[Keys.CELL_TYPE_CONFIDENCE].to_numpy(dtype=np.float64)
    if Keys.FACTOR in mdata.obs:
        frame["nmf_factor"] = mdata.obs[Keys.FACTOR].to_numpy()
    return frame


def run_cohort(
    sheet: SampleSheet | str | Path | pd.DataFrame,
    output_dir: str | Path | None = None,
    *,
    reference_condition: str | None = None,
    radius: float = 50.0,
    covariates: Sequence[str] | None = None,
    compare: bool = True,
    overwrite: bool = False,
    figures: bool = True,
    **fit_kwargs: Any,
) -> CohortRun:
    """Fit one model on every sample of a sheet, compare the conditions, and write everything.

    Parameters
    ----------
    sheet
        Sample sheet (file, DataFrame or :class:`SampleSheet`); needs at least two conditions when ``compare``.
    output_dir
        Result folder, written atomically at the end (a failure leaves no partial folder); None writes nothing.
        An existing non-empty folder is refused unless ``overwrite`` (checked before any computation).
    reference_condition
        Condition the others are compared with (default: the first condition of the sheet).
    radius
        Neighbourhood radius in µm of the per-sample co-localization (graphs never join two samples).
    covariates
        Sheet covariates that enter every differential model as fixed effects (default none; all of them stay in
        ``obs`` and in ``samples.csv``).
    compare
        Run :func:`spatialmultiomics.cohort.compare` (False: only the joint model).
    overwrite
        Replace a non-empty ``output_dir``.
    figures
        Draw the comparison's figures (the report is written either way).
    **fit_kwargs
        Passed to :func:`fit_cohort` (``n_factors``, ``markers``, ``seed``, ``batch_correction``, ``n_jobs``, ...).

    Returns
    -------
    :class:`CohortRun`. With ``output_dir``, the folder holds the files of :meth:`CohortResult.write`
    (``sample_table.csv``, ``sample_composition.csv``, ``sample_colocalization.csv``, ``sample_niches.csv``,
    ``differential_abundance.csv``, ``differential_colocalization.csv``, ``params.json``, ``figures/``,
    ``cohort_report.html``) and ``cells.csv`` (one row per cell: sample, condition, patient, x, y, cell type),
    ``samples.csv`` (the sheet as read, paths resolved), ``cohort_model.json`` (batch correction, timings) and
    ``result.h5mu`` (the joint model).
    """
    from spatialmultiomics import io

    t0 = time.time()
    if output_dir is not None:
        io.check_output_dir(output_dir, overwrite=overwrite)
    if not isinstance(sheet, SampleSheet):
        sheet = read_sample_sheet(sheet, min_conditions=2 if compare else 1)
    if covariates is not None:
        unknown = [c for c in covariates if c not in sheet.covariates]
        if unknown:
            msg = f"covariates={unknown} are not columns of the sample sheet; its covariates: {list(sheet.covariates)}."
            raise InputError(msg)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    mdata = fit_cohort(sheet, min_conditions=2 if compare else 1, **fit_kwargs)
    timings["fit"] = time.perf_counter() - t
    comparison = None
    if compare:
        from spatialmultiomics.cohort._compare import compare as compare_conditions

        t = time.perf_counter()
        comparison = compare_conditions(
            mdata,
            label_key=Keys.CELL_TYPE,
            sample_key=SAMPLE,
            condition_key=CONDITION,
            patient_key=PATIENT if sheet.has_patient else None,
            reference_condition=reference_condition if reference_condition is not None else sheet.conditions[0],
            covariates=list(covariates) if covariates else None,
            radius=radius,
            seed=fit_kwargs.get("seed", 0),
        )
        timings["compare"] = time.perf_counter() - t
    run = CohortRun(mdata=mdata, comparison=comparison, sheet=sheet, timings=timings)
    if output_dir is not None:
        t = time.perf_counter()
        _write(run, Path(output_dir), overwrite=overwrite, figures=figures, started=t0)
        timings["write"] = time.perf_counter() - t
        run.output_dir = Path(output_dir)
    return run


def _write(run: CohortRun, output_dir: Path, *, overwrite: bool, figures: bool, started: float) -> None:
    """Every file of a cohort run into ``output_dir``, atomically."""
    from spatialmultiomics._mudata import write_h5mu
    from spatialmultiomics.io._csv import write_csv
    from spatialmultiomics.io._write import atomic_output_dir

    with atomic_output_dir(output_dir, overwrite=overwrite, started=started) as tmp:
        if run.comparison is not None:
            run.comparison.write(tmp, overwrite=True, figures=figures)
        write_csv(cell_table(run.mdata), tmp / "cells.csv")
        run.sheet.table().to_csv(tmp / "samples.csv", index=False)
        record = run.mdata.uns.get(COHORT_UNS, {})
        model = {
            "batch_correction": record.get("batch_correction"),
            "params": record.get("params"),
            "timings_s": {**record.get("timings_s", {}), **run.timings},
            "peak_rss_mib": record.get("peak_rss_mib"),
            "read_seconds": record.get("read_seconds"),
            "n_cells": int(run.mdata.n_obs),
            "n_samples": len(run.sheet),
            "cell_types": [str(c) for c in run.mdata.obs[Keys.CELL_TYPE].cat.categories],
        }
        (tmp / "cohort_model.json").write_text(json.dumps(model, indent=2, default=str), encoding="utf-8")
        write_h5mu(run.mdata, tmp / "result.h5mu")
