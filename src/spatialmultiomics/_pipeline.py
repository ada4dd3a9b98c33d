"""``run_pipeline``: read → align → preprocess → factorize → annotate → spatial graph → niches, co-localization → write.

The orchestrator only calls the public step functions; each step can be run alone on the MuData.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._engine import ENGINE_UNS, check_engine, scheduler_text, spatial_stage_tiled, start_engine
from spatialmultiomics._errors import InputError
from spatialmultiomics._inputs import (
    PathLike,
    _check_k_fits,
    _check_n_factors,
    _check_platform,
    _collect_modalities,
    _compensate_spillover,
    _versions,
)
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger, progress_bar
from spatialmultiomics._memory import PeakRSS
from spatialmultiomics._validate import check_option, check_positive

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from spatialmultiomics._chunked_pipeline import ChunkedPipelineResult
    from spatialmultiomics.cohort import CohortRun

__all__ = ["PipelineResult", "run_pipeline"]


@dataclass
class PipelineResult:
    """Everything a pipeline run produced (the seed's result fields plus the container).

    Attributes
    ----------
    cell_types
        The distinct cell types found, in category order.
    shared_labels
        One row per cell: ``cell_id, x, y, cell_type, confidence, nmf_factor`` (+ ``fov``); x, y in µm.
    co_localization
        One row per ordered pair of types: ``cell_type_pair, jones_scornecchi_score, cell_type_a, cell_type_b,
        observed, expected, z_score, p_value, q_value, ...``.
    niche_composition
        One row per cell: ``cell_id, niche_type, composition, n_neighbors, frac_<type> ...``; built from ``mdata``
        on each access (:func:`smo.spatial.niche_table`: at a million cells the table is ~2 GiB while it is
        built, so it is not kept; the result folder's CSV is written in chunks).
    W_transcript, W_protein
        Feature loadings of the RNA and protein blocks, shapes (n_genes, k) and (n_proteins, k); ``None`` for a
        modality that was not given.
    H_shared
        Cell loadings, shape (k, n_cells) (the seed's orientation).
    nmf_factors
        ``H_shared`` as a table: ``cell_id, factor_0, ...``.
    factor_annotation
        One row per factor: its cell type, score and top features.
    feature_loadings
        Modality name -> (n_features, k) loadings, for every modality (``W_transcript`` is ``['rna']``).
    mdata
        The MuData holding every result in its conventional slots (see :mod:`spatialmultiomics._keys`).
    output_dir
        Folder the files were written to, or None.
    timings
        Seconds per stage.
    """

    cell_types: list[str]
    shared_labels: pd.DataFrame
    co_localization: pd.DataFrame
    W_transcript: np.ndarray | None
    W_protein: np.ndarray | None
    H_shared: np.ndarray
    nmf_factors: pd.DataFrame
    factor_annotation: pd.DataFrame
    feature_loadings: dict[str, np.ndarray]
    mdata: MuData = field(repr=False)
    output_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def niche_composition(self) -> pd.DataFrame:
        """Neighbourhood composition, one row per cell (see the class notes); built on each access."""
        from spatialmultiomics.spatial import niche_table

        return niche_table(self.mdata, label_key=Keys.CELL_TYPE)


def _shared_labels(mdata: MuData) -> pd.DataFrame:
    coords = np.asarray(mdata.obsm[Keys.SPATIAL])
    frame = pd.DataFrame(
        {
            "cell_id": mdata.obs_names.to_numpy(),
            "x": coords[:, 0],
            "y": coords[:, 1],
            "cell_type": mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy(),
            "confidence": mdata.obs[Keys.CELL_TYPE_CONFIDENCE].to_numpy(dtype=np.float64),
        }
    )
    if Keys.FACTOR in mdata.obs:
        frame["nmf_factor"] = mdata.obs[Keys.FACTOR].to_numpy()
    if Keys.FOV in mdata.obs:
        frame["fov"] = mdata.obs[Keys.FOV].astype(str).to_numpy()
    return frame


def _factor_table(mdata: MuData, k: int) -> pd.DataFrame:
    nmf = mdata.uns.get(Keys.NMF_UNS, {})
    ann = nmf.get("annotation") if isinstance(nmf, Mapping) else None
    if ann is None:
        ann = mdata.uns.get("annotation")
    if ann is None:
        return pd.DataFrame({"factor": np.arange(k)})
    cols = {key: val for key, val in ann.items() if key != "params" and np.ndim(val) == 1 and len(val) == k}
    frame = pd.DataFrame(cols)
    for col in frame.columns:
        if frame[col].map(lambda v: isinstance(v, list | tuple | np.ndarray)).any():
            frame[col] = frame[col].map(
                lambda v: ";".join(map(str, v)) if isinstance(v, list | tuple | np.ndarray) else v
            )
    return frame


def run_pipeline(
    transcript_path: PathLike | AnnData | None = None,
    protein_path: PathLike | AnnData | None = None,
    platform_tx: str | None = "generic",
    platform_prot: str | None = "generic",
    n_factors: int | str = 15,
    radius: float = 50.0,
    output_dir: PathLike | None = None,
    markers: PathLike | Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    extra_modalities: Mapping[str, PathLike | AnnData] | None = None,
    pixel_size_um: float | Mapping[str, float] | None = None,
    align: str = "auto",
    match_radius: float | str = "auto",
    unmatched: str = "impute",
    allow_reflection: bool = False,
    max_rotation_deg: float = 180.0,
    warp: str = "auto",
    annotation_method: str = "cluster",
    expected: str = "exact",
    solver: str = "hals",
    modality_weights: Any = None,
    max_iter: int = 400,
    n_top_genes: int = 2000,
    rna_normalization: str = "library",
    protein_transform: str = "auto",
    exclude_channels: Sequence[str] | str | None = "default",
    spillover: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    figures: bool = True,
    backend: str = "numpy",
    scheduler: Any = None,
    device: str | None = None,
    n_jobs: int | None = None,
    samples: PathLike | pd.DataFrame | None = None,
    batch_correction: str | None = "auto",
) -> PipelineResult | CohortRun | ChunkedPipelineResult:
    """Run the whole analysis from files (or AnnData objects) to every result, and optionally write them.

    Parameters
    ----------
    transcript_path
        RNA input: a standardized table (CSV / TSV / parquet with optional id column, ``x``, ``y``, one column per
        gene), an ``.h5ad``, an AnnData, or an ``.h5mu`` holding every modality (then ``protein_path`` may be None).
    protein_path
        Protein input, same formats (one column per protein). None for an RNA-only run.
    platform_tx, platform_prot
        Instrument names (case-insensitive), e.g. ``'Visium'`` and ``'CODEX'``; with a table they are recorded in
        the provenance. Must be an RNA and a protein platform respectively (or ``'generic'``).
    n_factors
        Number of NMF factors k, or ``'auto'``: k chosen by :func:`smo.factorize.select_n_factors` (the largest
        k whose factors reproduce across subsamples of the cells; the stability and reconstruction-error curves
        are stored in ``mdata.uns['nmf']['k_selection']``).
    radius
        Neighbourhood radius in µm for the spatial graph (niches and co-localization).
    output_dir
        Folder for the result files (written atomically at the end); None writes nothing.
    markers
        Marker reference: a JSON / YAML / CSV file, a dict ``{type: {"genes": [...], "proteins": [...]}}``, or
        None for the built-in tissue / tumour-microenvironment reference.
    seed
        Seed for every random step; the same seed gives the same result.
    extra_modalities
        Further modalities (name -> path or AnnData), e.g. ``{"metabolite": "maldi.csv"}``; they join the
        factorization like any other block.
    pixel_size_um
        Micrometres per coordinate unit of the inputs (one value, or per modality name); default 1.
    align
        How the modalities are put on one set of observations: ``'auto'`` (default: ids when they match, spots when
        one side is Visium-like, registration + cell matching when the frames differ), ``'ids'``, ``'match'``,
        ``'register'``, ``'spots'``, ``'adjacent'`` or ``'separate'``; see :func:`smo.align.align`.
    match_radius
        Largest distance in µm between two matched cells of different modalities; ``'auto'`` (default) chooses it
        from the nearest-partner distances after registration (see :func:`smo.align.align`).
    unmatched
        ``'impute'`` (a cell without a partner gets the mean partner profile of the matched cells most alike in the
        reference modality; see :func:`smo.align.align`) or ``'drop'``.
    allow_reflection
        Let the automatic registration also try the mirror image of a section (mounted face down); see
        :func:`smo.align.register`.
    max_rotation_deg
        Largest rotation the automatic registration searches (degrees; 180: any). A smaller value settles
        sections whose outline is symmetric when their orientation is roughly known.
    warp
        ``'auto'`` (default): a smooth non-rigid refinement after the rigid registration of the cell routes, kept
        only when it predicts held-out cells better; ``'none'``: rigid only (see :func:`smo.align.align`).
    annotation_method
        ``'cluster'`` (default: Leiden clusters named from their markers through the reference's lineage
        hierarchy), ``'auto'`` (factors named by marker enrichment + per-cell marker evidence), ``'paper'`` (the
        seed's top-10 / top-5 rule), ``'factors'`` or ``'markers'``; see :func:`smo.annotate.annotate`.
    spillover
        Compensate lateral spillover between touching cells (:func:`smo.pp.compensate_spillover`) in every
        intensity modality of single cells (not spots) before preprocessing; the measured values move to
        ``layers['raw']``. Off by default: on the synthetic tissue it removes
        the planted spill without changing the typing, and on the real sets it helped one reference and hurt
        another (see ``docs/markers.md``).
    expected
        Co-localization expectation: ``'exact'`` (random relabelling on the same graph; 0 = random mixing) or
        ``'paper'`` (the seed's literal n_A·n_B/n).
    solver, modality_weights, max_iter
        Passed to :func:`smo.factorize.joint_nmf`.
    n_top_genes, rna_normalization
        Passed to :func:`smo.pp.preprocess`.
    protein_transform
        Transform of intensity modalities, passed to :func:`smo.pp.preprocess`: ``'auto'`` (default: chosen per
        modality from its platform and values: CLR for antibody counts, arcsinh cofactor 5 for IMC / MIBI ion
        counts and for fluorescence and other intensities), ``'arcsinh'`` (cofactor 5), ``'arcsinh_background'``
        (a per-channel cofactor at the channel's background), ``'clr'``, ``'log1p'`` or ``'none'``. What was
        used, and why, is in
        ``mdata.uns['preprocess']['intensity_transforms']``.
    exclude_channels
        Channels of intensity modalities kept out of the factorization: ``'default'`` (DNA / nuclear stains,
        background, empty and mass channels: :data:`smo.pp.NON_MARKER_CHANNELS`), ``None`` (keep every channel)
        or a list of case-insensitive name patterns; see :func:`smo.pp.preprocess`.
    overwrite
        Replace a non-empty ``output_dir``.
    progress
        Show a progress bar over the stages.
    figures
        With ``output_dir``: also draw every figure into ``figures/`` (PNG + SVG) and embed them in
        ``report.html`` (the report is written either way).
    backend
        Engine of the heavy stages: ``'numpy'`` (default, this machine), ``'dask'`` (the factorization on row
        chunks and the spatial statistics on tiles, as Dask tasks on ``scheduler``; extra ``[dask]``) or
        ``'torch'`` (the factorization with PyTorch on ``device``; extra ``[torch]``). Stages without such a
        route run in memory and say so in the log. The cell types equal the NumPy run's up to rounding.
        With ``'dask'`` and zarr stores as inputs (``rna.zarr`` [+ ``protein.zarr``, the same cells in the same
        order], as :func:`smo.io.stream_to_zarr` writes them) every stage runs out of core and a
        :class:`~spatialmultiomics._chunked_pipeline.ChunkedPipelineResult` is returned (``output_dir``
        required; see ``docs/scale.md``, "One call: run_pipeline on zarr stores").
    scheduler
        ``backend='dask'``: ``'local'`` (start a ``LocalCluster`` sized to this machine, closed at the end), the
        address of a running scheduler (``'tcp://host:8786'``; it must answer within 5 s), a
        ``distributed.Client``, or None (the active Client if there is one, else Dask's threaded scheduler).
    device
        ``backend='torch'``: ``'cuda'`` or ``'cpu'``; default CUDA when PyTorch sees a GPU.
    n_jobs
        Cores to use (NumPy kernel threads, the size of a ``'local'`` cluster, PyTorch CPU threads); None: each
        backend's default (1 kernel thread for NumPy, every core for a ``'local'`` cluster); -1: all cores.
        The engine (workers, threads, memory limits or the device) is recorded in ``mdata.uns['engine']``.
    samples
        A cohort instead of one sample: a sample sheet (CSV / TSV / YAML / TOML file or DataFrame: ``sample``,
        ``condition``, optional ``patient``, input file, platform and pixel size per modality, covariates; see
        :func:`smo.cohort.read_sample_sheet`). Then ``transcript_path`` / ``protein_path`` / the platforms /
        ``pixel_size_um`` / ``extra_modalities`` come from the sheet and must not be given; every sample is
        read in parallel (``n_jobs`` processes), all are factorized and annotated together and the conditions
        compared (:func:`smo.cohort.run_cohort`), and a :class:`~spatialmultiomics.cohort.CohortRun` is returned.
    batch_correction
        With ``samples``: ``'auto'`` (= ``'quantile'``, measured), ``'quantile'``, ``'scale'``, ``'harmony'`` or
        None (see :func:`smo.cohort.fit_cohort`).

    Returns
    -------
    :class:`PipelineResult` with the seed's fields (``cell_types``, ``shared_labels``, ``co_localization``,
    ``niche_composition``, ``W_transcript``, ``W_protein``, ``H_shared``) and the MuData.

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.paper_benchmark(seed=0)
    >>> res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=4, markers=dict(mdata.uns["markers"]))
    >>> res.H_shared.shape
    (4, 200)
    """
    from threadpoolctl import threadpool_limits

    from spatialmultiomics import annotate, factorize, io, pp, spatial
    from spatialmultiomics._chunked_pipeline import run_chunked_pipeline, uses_chunked_route
    from spatialmultiomics._results import write_results
    from spatialmultiomics.align import align as align_modalities
    from spatialmultiomics.align._align import ROUTES, check_match_radius
    from spatialmultiomics.annotate._assign import METHODS as ANNOTATION_METHODS
    from spatialmultiomics.annotate._score import UNKNOWN
    from spatialmultiomics.annotate._spots import spot_modalities

    if samples is not None:  # a cohort: one joint model over the samples of a sheet, then the comparison
        given = {"transcript_path": transcript_path, "protein_path": protein_path}
        given.update(extra_modalities=extra_modalities, pixel_size_um=pixel_size_um)
        return _run_samples(
            samples,
            output_dir,
            given,
            n_factors=n_factors,
            radius=radius,
            markers=markers,
            seed=seed,
            align=align,
            match_radius=match_radius,
            unmatched=unmatched,
            allow_reflection=allow_reflection,
            annotation_method=annotation_method,
            solver=solver,
            modality_weights=modality_weights,
            max_iter=max_iter,
            n_top_genes=n_top_genes,
            rna_normalization=rna_normalization,
            protein_transform=protein_transform,
            exclude_channels=exclude_channels,
            spillover=spillover,
            overwrite=overwrite,
            figures=figures,
            n_jobs=1 if n_jobs is None else n_jobs,
            batch_correction=batch_correction,
        )
    n_factors = _check_n_factors(n_factors)
    align = check_option(align, ROUTES, name="align")
    match_radius = check_match_radius(match_radius)
    unmatched = check_option(unmatched, ("impute", "drop"), name="unmatched")
    radius = check_positive(radius, name="radius")
    annotation_method = check_option(annotation_method, ANNOTATION_METHODS, name="annotation_method")
    expected = check_option(expected, ("exact", "paper"), name="expected")
    protein_transform = check_option(protein_transform, pp.PROTEIN_TRANSFORMS, name="protein_transform")
    engine_spec = check_engine(backend, scheduler=scheduler, device=device, n_jobs=n_jobs)
    # checked before anything is read; the canonical names go to the readers
    canon_tx = _check_platform(platform_tx, kind="rna", argname="platform_tx") if transcript_path is not None else None
    canon_prot = (
        _check_platform(platform_prot, kind="protein", argname="platform_prot") if protein_path is not None else None
    )
    if output_dir is not None:
        io.check_output_dir(output_dir, overwrite=overwrite)
    markers_given = (
        str(markers) if isinstance(markers, str | Path) else ("custom" if markers is not None else "builtin")
    )
    if markers is not None and not isinstance(markers, Mapping):
        markers = annotate.load_markers(markers)  # fail early on a bad marker file
    if uses_chunked_route(  # zarr stores + backend='dask': the whole run out of core (_chunked_pipeline)
        transcript_path,
        protein_path,
        backend=engine_spec.backend,
        output_dir=output_dir,
        extra_modalities=extra_modalities,
        pixel_size_um=pixel_size_um,
        align=align,
        annotation_method=annotation_method,
        spillover=spillover,
    ):
        return run_chunked_pipeline(
            transcript_path,
            protein_path,
            output_dir=Path(output_dir),
            engine_spec=engine_spec,
            n_factors=n_factors,
            radius=radius,
            markers=markers,
            markers_given=markers_given,
            seed=seed,
            platform_tx=canon_tx,
            platform_prot=canon_prot,
            expected=expected,
            solver=solver,
            modality_weights=modality_weights,
            max_iter=max_iter,
            n_top_genes=n_top_genes,
            rna_normalization=rna_normalization,
            protein_transform=protein_transform,
            exclude_channels=pp.NON_MARKER_CHANNELS if exclude_channels == "default" else exclude_channels,
            overwrite=overwrite,
            progress=progress,
            figures=figures,
        )

    stages = ["read", "align", "preprocess", "factorize", "annotate", "spatial", "write"]
    timings: dict[str, float] = {}
    peak_rss: dict[str, float] = {}  # MiB, per stage
    monitor = PeakRSS().__enter__()
    bar_context = progress_bar(len(stages), desc="spatialmultiomics", enabled=progress)
    bar = bar_context.__enter__()  # log lines print above the bar while it is open
    if bar is not None:
        bar.set_postfix_str(stages[0])
    engine = None

    def done(stage: str, t0: float) -> float:
        timings[stage] = time.perf_counter() - t0
        peak_rss[stage] = monitor.lap()
        logger.info("%-10s %.3f s, peak RSS %.0f MiB", stage, timings[stage], peak_rss[stage])
        if bar is not None:  # the postfix names the stage now running
            nxt = stages.index(stage) + 1
            bar.set_postfix_str(stages[nxt] if nxt < len(stages) else "done", refresh=False)
            bar.update(1)
        return time.perf_counter()

    try:
        engine = start_engine(engine_spec)  # before reading: a bad scheduler address fails at once
        engine.log_routes(choose_k=n_factors == "auto")
        t = time.perf_counter()
        mods = _collect_modalities(transcript_path, protein_path, canon_tx, canon_prot, extra_modalities, pixel_size_um)
        t = done("read", t)
        mdata = align_modalities(
            mods,
            route=align,
            match_radius=match_radius,
            unmatched=unmatched,
            allow_reflection=allow_reflection,
            max_rotation_deg=max_rotation_deg,
            warp=warp,
            seed=seed,
        )
        t = done("align", t)
        if spillover:
            _compensate_spillover(mdata)
        pp.preprocess(
            mdata,
            n_top_genes=n_top_genes,
            rna_normalization=rna_normalization,
            protein_transform=protein_transform,
            exclude_channels=pp.NON_MARKER_CHANNELS if exclude_channels == "default" else exclude_channels,
        )
        if n_factors != "auto":  # before the factorization, in the user's terms (not JointNMF's n_components)
            _check_k_fits(n_factors, mdata)
        t = done("preprocess", t)
        # BLAS threads cost more than they give on small products and stall badly on a busy machine
        # (measured 7x slower with 2 threads on 5,000 cells under load); large problems keep the default.
        with threadpool_limits(limits=1 if mdata.n_obs * mdata.n_vars < 5e7 else None, user_api="blas"):
            selection = None
            if n_factors == "auto":  # k from the stability of the factors over subsamples
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
                backend=engine.backend,
                n_jobs=engine.nmf_threads,
                device=engine_spec.device if engine.backend == "torch" else None,
            )
        if selection is not None:
            factorize.store_k_selection(mdata, selection)
        t = done("factorize", t)
        # types learnt from the cells measured in every modality; cells whose partner profile was imputed or is
        # doubtful are typed from what was measured, by the fully measured cells alike
        annotate.annotate_measured(
            mdata, markers=markers, method=annotation_method, seed=seed, n_jobs=engine.nmf_threads
        )
        _type_apart(  # modalities set apart by the alignment (route 'separate'): typed on their own cells
            mdata,
            mods,
            radius=radius,
            n_factors=n_factors,
            markers=markers,
            annotation_method=annotation_method,
            solver=solver,
            max_iter=max_iter,
            seed=seed,
            spillover=spillover,
            preprocess_kw={
                "n_top_genes": n_top_genes,
                "rna_normalization": rna_normalization,
                "protein_transform": protein_transform,
                "exclude_channels": pp.NON_MARKER_CHANNELS if exclude_channels == "default" else exclude_channels,
            },
        )
        spot_mods = [name for name in spot_modalities(mdata) if name in mods]
        if len(spot_mods) == 1:  # spots + single cells: type the cells under each spot, count them
            annotate.spot_composition(mdata, mods[spot_mods[0]], modality=spot_mods[0])
        t = done("annotate", t)
        if (mdata.obs[Keys.CELL_TYPE].astype(str) == UNKNOWN).all():
            msg = (
                f"annotation named no cell type: all {mdata.n_obs:,} cells are {UNKNOWN!r}; the marker reference "
                f"does not fit the panel ({', '.join(f'{n}: {a.n_vars} features' for n, a in mdata.mod.items())}). "
                "Give markers that the panel measures (--markers FILE, see docs/markers.md)."
            )
            raise InputError(msg)
        # 'Unknown' is no call, not a cell type: its cells stay in the graph and the null, its pairs are not reported
        if not (
            engine.backend == "dask"
            and spatial_stage_tiled(
                mdata, radius=radius, expected=expected, seed=seed, exclude=(UNKNOWN,), label_key=Keys.CELL_TYPE
            )
        ):
            spatial.spatial_neighbors(mdata, method="radius", radius=radius)
            spatial.niche_composition(mdata, label_key=Keys.CELL_TYPE)
            spatial.colocalization(mdata, label_key=Keys.CELL_TYPE, expected=expected, seed=seed, exclude=(UNKNOWN,))
        t = done("spatial", t)

        W = np.asarray(mdata.obsm[Keys.NMF])
        loadings = {name: np.asarray(adata.varm[Keys.NMF_LOADINGS]) for name, adata in mdata.mod.items()}
        nmf_factors = pd.DataFrame(W, columns=[f"factor_{i}" for i in range(W.shape[1])])
        nmf_factors.insert(0, "cell_id", mdata.obs_names.to_numpy())
        result = PipelineResult(
            cell_types=[str(c) for c in mdata.obs[Keys.CELL_TYPE].cat.categories],
            shared_labels=_shared_labels(mdata),
            co_localization=spatial.colocalization_table(mdata, label_key=Keys.CELL_TYPE),
            W_transcript=loadings.get(Keys.RNA),
            W_protein=loadings.get(Keys.PROTEIN),
            H_shared=np.ascontiguousarray(W.T),
            nmf_factors=nmf_factors,
            factor_annotation=_factor_table(mdata, W.shape[1]),
            feature_loadings=loadings,
            mdata=mdata,
            timings=timings,
        )
        mdata.uns[Keys.PIPELINE] = {
            "params": {
                "platform_tx": str(platform_tx),
                "platform_prot": str(platform_prot),
                "n_factors": int(W.shape[1]),
                "n_factors_requested": n_factors,
                "radius_um": radius,
                "seed": seed,
                "align": align,
                "align_route": str(mdata.uns.get("alignment", {}).get("route", align)),
                "match_radius_um": match_radius,
                "unmatched": unmatched,
                "allow_reflection": bool(allow_reflection),
                "max_rotation_deg": float(max_rotation_deg),
                "warp": warp,
                "annotation_method": annotation_method,
                "expected": expected,
                "solver": solver,
                "max_iter": max_iter,
                "n_top_genes": n_top_genes,
                "rna_normalization": rna_normalization,
                "protein_transform": protein_transform,
                "exclude_channels": (
                    "none"
                    if exclude_channels is None
                    else exclude_channels
                    if isinstance(exclude_channels, str)
                    else [str(c) for c in exclude_channels]
                ),
                "markers": markers_given,
                "spillover": bool(spillover),
                "backend": engine.backend,
                "scheduler": scheduler_text(engine_spec.scheduler),
                "device": engine_spec.device or "none",
                "n_jobs": "default" if n_jobs is None else engine_spec.n_jobs,
            },
            "versions": _versions(),
            "timings_s": dict(timings),
            "peak_rss_mib": dict(peak_rss),
        }
        mdata.uns[ENGINE_UNS] = engine.describe()
        if output_dir is not None:
            write_results(
                result, output_dir, overwrite=overwrite, figures=figures, started=time.time() - sum(timings.values())
            )
            result.output_dir = Path(output_dir)
        done("write", t)
        mdata.uns[Keys.PIPELINE]["timings_s"] = dict(timings)
        mdata.uns[Keys.PIPELINE]["peak_rss_mib"] = dict(peak_rss)
    finally:
        if engine is not None:
            engine.close()  # a cluster started for the run is shut down; one connected to keeps running
        monitor.__exit__(None, None, None)
        bar_context.__exit__(None, None, None)
    return result


def _run_samples(samples: Any, output_dir: Any, given: Mapping[str, Any], **kwargs: Any) -> CohortRun:
    """``run_pipeline(samples=...)``: refuse per-sample inputs given beside the sheet, then run the cohort."""
    from spatialmultiomics.cohort import run_cohort

    both = [name for name, value in given.items() if value is not None]
    if both:
        msg = f"samples= takes every input from the sample sheet; do not also give {both}."
        raise InputError(msg)
    return run_cohort(samples, output_dir, **kwargs)


def _type_apart(
    mdata: MuData,
    mods: Mapping[str, AnnData],
    *,
    radius: float,
    n_factors: int | str,
    markers: Any,
    annotation_method: str,
    solver: str,
    max_iter: int,
    seed: int,
    spillover: bool,
    preprocess_kw: dict[str, Any],
) -> None:
    """Route ``'separate'``: type every modality set apart on its own cells, then integrate at the level of types.

    Each such modality is preprocessed, factorized and annotated exactly as a run on it alone would be (the same
    parameters and marker reference; ``n_factors`` capped at what its panel allows). On the reference frame (when
    the registration succeeded) every reference cell gets the fractions of the other modality's types within
    ``radius`` (``obsm['<name>_type_fractions']``, ``obs['<name>_n_around']``), and the two type vocabularies are
    compared by which types lie among which (:func:`~spatialmultiomics.align._separate.type_concordance`). Results:
    ``uns['separate_typing'][name]`` (``cells``: one row per cell of that modality with its type and its position
    on the reference frame; ``concordance``; ``type_agreement``), written as ``cell_types_<name>.csv`` and
    ``type_concordance_<name>.csv``.
    """
    from spatialmultiomics import annotate, factorize, pp
    from spatialmultiomics._mudata import make_mudata
    from spatialmultiomics.align import Transform
    from spatialmultiomics.align._separate import (
        cross_neighbours,
        neighbour_type_fractions,
        type_agreement,
        type_concordance,
    )
    from spatialmultiomics.factorize._api import _n_features_used

    info = mdata.uns.get("alignment", {})
    apart = list(info.get("separate", []))
    if not apart:
        return
    out: dict[str, Any] = {}
    for name in apart:
        entry = info["modalities"][name]
        sub = make_mudata({name: mods[name].copy()})
        if spillover:
            _compensate_spillover(sub)
        pp.preprocess(sub, **preprocess_kw)
        feasible = min(sub.n_obs, sum(_n_features_used(sub).values()))
        if n_factors == "auto":
            k = factorize.select_n_factors(sub, solver=solver, seed=seed, inplace=False).k
        else:
            k = min(int(n_factors), feasible)
            if k < int(n_factors):
                logger.info("separate %s: %d factors (its panel allows at most %d)", name, k, feasible)
        factorize.joint_nmf(sub, n_components=k, solver=solver, max_iter=max_iter, seed=seed)
        annotate.annotate(sub, markers=markers, method=annotation_method, seed=seed)
        labels = sub.obs[Keys.CELL_TYPE].astype(str).to_numpy()
        own_xy = np.asarray(mods[name].obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]
        placed = bool(entry.get("positions_used", False))
        xy = Transform.from_dict(entry["transform"]).apply(own_xy) if placed else np.full_like(own_xy, np.nan)
        cells = pd.DataFrame(
            {
                "cell_id": sub.obs_names.to_numpy().astype(str),
                "x": xy[:, 0],
                "y": xy[:, 1],
                "cell_type": labels,
                "confidence": sub.obs[Keys.CELL_TYPE_CONFIDENCE].to_numpy(dtype=np.float64),
            }
        )
        record: dict[str, Any] = {"cells": cells, "n_factors": int(k), "positions_used": placed}
        types = pd.Series(labels).value_counts()
        summary = ", ".join(f"{t} {n}" for t, n in types.head(6).items())
        if placed:
            graph = cross_neighbours(np.asarray(mdata.obsm[Keys.SPATIAL]), xy, radius)
            fractions, n_around = neighbour_type_fractions(graph, labels)
            fractions.index = mdata.obs_names.copy()
            mdata.obsm[f"{name}_type_fractions"] = fractions
            mdata.obs[f"{name}_n_around"] = n_around
            ref_labels = mdata.obs[Keys.CELL_TYPE].astype(str).to_numpy()
            record["concordance"] = type_concordance(graph, ref_labels, labels)
            record["type_agreement"] = type_agreement(fractions, ref_labels, exclude=("Unknown",))
            logger.info(
                "separate %s: %d cells typed on their own (%s); the most frequent %s type around a reference cell "
                "is its own type for %.0f%% of the reference cells",
                name,
                sub.n_obs,
                summary,
                name,
                100.0 * record["type_agreement"],
            )
        else:
            logger.info("separate %s: %d cells typed on their own (%s); positions not used", name, sub.n_obs, summary)
        out[name] = record
    mdata.uns[Keys.SEPARATE] = out
