"""The ``spatialmultiomics`` command line: thin shells over the public API.

Exit codes: 0 success, 1 internal error, 2 bad input (one-line message, no traceback unless ``--debug``).
"""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from pathlib import Path

import click

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import log_warning, warnings_recorded

__all__ = ["cli", "main", "read_config"]

_PLATFORM_HELP = "Visium, Visium HD, MERFISH, MERSCOPE, Xenium, Stereo-seq, CosMx, CODEX, MIBI, IMC, CyCIF, inForm, QuPath, HALO or generic (case-insensitive)"


def _setup_logging(quiet: bool, debug: bool) -> None:
    """One line per message on stderr, written above the progress bar; ``--quiet``: errors only.

    Python warnings (e.g. a ConvergenceWarning) are logged the same way during a command (see :func:`main`).
    """
    from spatialmultiomics._log import TqdmHandler

    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO
    logger = logging.getLogger("spatialmultiomics")
    logger.handlers.clear()
    handler = TqdmHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s" if debug else "%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _show_progress(quiet: bool) -> bool:
    """A progress bar only on a terminal (none in a batch job's log file) and not with ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def _engine_options(func):
    """``--backend``, ``--scheduler``, ``--device``, ``--n-jobs`` (checked by the pipeline: one-line errors)."""
    func = click.option(
        "--n-jobs",
        default=None,
        help="Cores to use: NumPy kernel threads, the size of a --scheduler local cluster, PyTorch CPU threads; "
        "-1 all. Default: 1 kernel thread for numpy, every core for a local cluster.",
    )(func)
    func = click.option(
        "--device",
        default=None,
        help="With --backend torch: cuda or cpu. Default: cuda when PyTorch sees a GPU.",
    )(func)
    func = click.option(
        "--scheduler",
        default=None,
        help="With --backend dask: 'local' starts a LocalCluster sized to this machine (shut down at the end); an "
        "address such as tcp://10.0.0.5:8786 connects to a running scheduler (dask-jobqueue on SLURM, "
        "dask-kubernetes, dask-gateway); default: the threaded scheduler.",
    )(func)
    return click.option(
        "--backend",
        default="numpy",
        show_default=True,
        help="Engine: numpy (this machine), dask (the factorization on row chunks and the spatial statistics on "
        "tiles, as Dask tasks) or torch (the factorization with PyTorch, on a GPU when there is one). Extras: "
        "pip install 'spatialmultiomics[dask]' / 'spatialmultiomics[torch]'.",
    )(func)


def read_config(path: Path) -> dict:
    """Option values from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file: a mapping of option names."""
    path = Path(path)
    if not path.is_file():
        msg = f"--config {str(path)!r}: no such file."
        raise InputError(msg)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml", ".json"):
            import yaml

            data = yaml.safe_load(text)
        else:
            msg = f"--config {str(path)!r}: unknown format {suffix!r}; use a .yaml, .yml, .json or .toml file."
            raise InputError(msg)
    except InputError:
        raise
    except Exception as err:
        detail = " ".join(str(err).split())
        msg = f"--config {str(path)!r}: not valid {suffix.lstrip('.').upper()} ({detail[:160]})."
        raise InputError(msg) from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        msg = f"--config {str(path)!r}: expected a mapping of option names to values, got {type(data).__name__}."
        raise InputError(msg)
    return data


def _apply_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Eager callback of ``--config``: the file's values become the command's defaults (command-line flags win)."""
    if value is None or ctx.resilient_parsing:
        return
    data = read_config(value)
    section = data.get(ctx.info_name) if ctx.info_name else None
    if isinstance(section, dict):  # a file with one section per command: {run: {...}, report: {...}}
        data = section
    names: dict[str, str] = {}
    params = {p.name: p for p in ctx.command.params if p.name not in (None, "config", "help")}
    for p in params.values():
        names[p.name] = p.name
        for opt in [*p.opts, *getattr(p, "secondary_opts", [])]:
            names[opt.lstrip("-").replace("-", "_").lower()] = p.name
    defaults, unknown = {}, []
    for key, val in data.items():
        name = names.get(str(key).lstrip("-").replace("-", "_").lower())
        if name is None:
            unknown.append(str(key))
        elif params[name].multiple or params[name].nargs != 1:  # repeatable: a list, or one value
            defaults[name] = [str(v) for v in val] if isinstance(val, list) else [str(val)]
        else:
            defaults[name] = val
    if unknown:
        allowed = sorted({n.replace("_", "-") for n in names.values()})
        msg = f"--config {str(value)!r}: unknown option(s) {unknown} for `{ctx.info_name}`; allowed: {allowed}."
        raise InputError(msg)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _common(func):
    func = click.option("--debug", is_flag=True, help="Show full tracebacks and debug messages.")(func)
    func = click.option(
        "-q", "--quiet", is_flag=True, help="Only errors: no log lines, warnings, progress bar or summary."
    )(func)
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        expose_value=False,
        is_eager=True,
        callback=_apply_config,
        help="YAML or TOML file of option values (keys = option names, e.g. `n-factors: 15`); flags given on "
        "the command line win.",
    )(func)


def _n_factors(value: object) -> int | str:
    """``--n-factors``: 'auto' or a positive integer."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    msg = f"--n-factors must be 'auto' or an integer >= 1, got {value!r}."
    raise InputError(msg)


def _parse_extra(values: tuple[str, ...]) -> dict[str, Path]:
    extra = {}
    for item in values:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            msg = f"--extra {item!r}: expected NAME=PATH, e.g. --extra metabolite=maldi.csv."
            raise InputError(msg)
        extra[name] = Path(path)
    return extra


def _summary(result, out: Path | None) -> None:
    if hasattr(result, "type_counts"):  # out of core: the per-cell table stays on disk
        labels, n_cells, k = result.type_counts, result.n_cells, result.n_factors
    else:
        labels = result.shared_labels["cell_type"].value_counts()
        n_cells, k = len(result.shared_labels), result.H_shared.shape[0]
    click.echo(f"{n_cells} cells, {k} factors, {len(labels)} cell types:")
    for name, count in labels.items():
        click.echo(f"  {name:<28} {count:>8}")
    if out is not None:
        click.echo(f"results: {out}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="spatialmultiomics", prog_name="spatialmultiomics")
def cli() -> None:
    """Joint NMF of spatial transcriptomics and proteomics: shared cell types, niches, co-localization.

    \b
    Typical use:
      spatialmultiomics run --tx rna.csv --prot protein.csv --tx-platform Visium \\
          --prot-platform CODEX --n-factors 15 --radius 50 --output results
      spatialmultiomics demo --output demo_results

    Run `spatialmultiomics COMMAND --help` for the options of a command.
    """


@cli.command("run")
@click.option(
    "--tx",
    "tx",
    type=click.Path(path_type=Path),
    help="Transcriptomics input: table (id, x, y, genes; CSV/TSV/parquet), .h5ad, or .h5mu with every modality; "
    "or a zarr store (rna.zarr, from `convert`) with --backend dask: the whole run out of core.",
)
@click.option(
    "--prot",
    "prot",
    type=click.Path(path_type=Path),
    help="Proteomics input: table (id, x, y, proteins), .h5ad; or a zarr store with the --tx store's cells in the "
    "same order (--backend dask, out of core).",
)
@click.option(
    "--tx-platform", default="generic", show_default=True, help=f"Transcriptomics platform: {_PLATFORM_HELP}."
)
@click.option("--prot-platform", default="generic", show_default=True, help=f"Proteomics platform: {_PLATFORM_HELP}.")
@click.option(
    "--extra",
    multiple=True,
    metavar="NAME=PATH",
    help="A further modality to factorize jointly, e.g. metabolite=maldi.csv (repeatable).",
)
@click.option(
    "--n-factors",
    default="auto",
    show_default=True,
    callback=lambda ctx, param, value: _n_factors(value),
    help="Number of NMF factors k, or 'auto': the largest k whose factors reproduce across subsamples of the cells.",
)
@click.option("--radius", type=float, default=50.0, show_default=True, help="Neighbourhood radius in µm.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("results"),
    show_default=True,
    help="Result folder (created; never overwritten without --overwrite).",
)
@click.option(
    "--markers",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Marker reference: a JSON / YAML / CSV file or a built-in name (immune_tme, lymphoid); repeat to combine "
    "(later ones replace types of the same name). Default: immune_tme.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--pixel-size-um",
    type=float,
    default=None,
    help="Micrometres per coordinate unit of the inputs (default 1: already µm).",
)
@click.option(
    "--annotation-method",
    type=click.Choice(["cluster", "auto", "paper", "factors", "markers"], case_sensitive=False),
    default="cluster",
    show_default=True,
    help="Cell typing: cluster = Leiden clusters named from their markers through the reference's lineage "
    "hierarchy (negative markers; the finest type the panel supports, e.g. 'CD4 T cells' without FOXP3); auto = "
    "factors named by marker enrichment + per-cell marker evidence; paper = the seed's top-10/top-5 rule.",
)
@click.option(
    "--expected",
    type=click.Choice(["exact", "paper"], case_sensitive=False),
    default="exact",
    show_default=True,
    help="Co-localization expectation: exact random-relabelling mean (0 = random mixing) or the seed's n_A*n_B/n.",
)
@click.option(
    "--solver",
    type=click.Choice(["hals", "mu"], case_sensitive=False),
    default="hals",
    show_default=True,
    help="NMF solver.",
)
@click.option(
    "--align",
    "align_route",
    type=click.Choice(["auto", "ids", "match", "register", "spots", "adjacent", "separate"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="How the modalities are put on one set of cells: by ids, by matching coordinates, after registration, "
    "by aggregating cells into spots, adjacent sections matched by expression on linked features, or separate "
    "(each modality typed on its own cells, compared by type); auto picks and logs the route.",
)
@click.option(
    "--match-radius",
    default="auto",
    show_default=True,
    help="Largest distance (µm) of a cell match, or 'auto': chosen from the nearest-partner distances after "
    "registration (reported in the log).",
)
@click.option(
    "--allow-reflection",
    is_flag=True,
    help="Registration may also mirror a section (mounted face down); it refuses when both fit equally well.",
)
@click.option(
    "--max-rotation-deg",
    type=click.FloatRange(0.0, 180.0),
    default=180.0,
    show_default=True,
    help="Largest rotation the automatic registration searches; a smaller value settles symmetric outlines.",
)
@click.option(
    "--warp",
    type=click.Choice(["auto", "none"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="auto: a smooth non-rigid refinement after the rigid registration when it predicts held-out cells "
    "better (bent sections); none: rigid only.",
)
@click.option(
    "--protein-transform",
    type=click.Choice(["auto", "arcsinh", "arcsinh_background", "clr", "log1p", "none"], case_sensitive=False),
    default="auto",
    show_default=True,
    help="Transform of protein / intensity channels before scaling: auto picks per modality (CLR for antibody "
    "counts, arcsinh cofactor 5 for IMC / MIBI ion counts and for fluorescence and other intensities); arcsinh "
    "uses cofactor 5 on every channel; arcsinh_background a per-channel cofactor at the channel's background "
    "(lower quartile of its positive values).",
)
@click.option(
    "--keep-all-channels",
    is_flag=True,
    help="Factorize every protein channel; by default DNA / nuclear stains, background, empty and mass channels "
    "(DAPI, Hoechst, DNA1, Ir191, HH3, Background, Au ...) are kept in the data but out of the factors.",
)
@click.option(
    "--spillover",
    is_flag=True,
    help="Compensate lateral spillover between touching cells of imaging protein data (REDSEA model on "
    "centroids, strength estimated from mutually exclusive markers) before preprocessing. Off by default.",
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty result folder.")
@click.option(
    "--no-figures", is_flag=True, help="Skip figures/ (faster on millions of cells); report.html is still written."
)
@_engine_options
@_common
def run(
    tx,
    prot,
    tx_platform,
    prot_platform,
    extra,
    n_factors,
    radius,
    output,
    markers,
    seed,
    pixel_size_um,
    annotation_method,
    expected,
    solver,
    align_route,
    match_radius,
    allow_reflection,
    max_rotation_deg,
    warp,
    protein_transform,
    keep_all_channels,
    spillover,
    overwrite,
    no_figures,
    backend,
    scheduler,
    device,
    n_jobs,
    quiet,
    debug,
) -> None:
    """Run the whole pipeline on your files and write every result file.

    \b
    Writes to --output: shared_labels.csv, co_localization.csv, niche_composition.csv,
    W_transcript.npy (genes x k), W_protein.npy (proteins x k), H_shared.npy (k x cells),
    nmf_factors.csv, factor_annotation.csv, result.h5mu, figures/ (PNG + SVG), report.html;
    with Visium-like spots over a single-cell table also spot_composition.csv and spot_cells.csv.

    \b
    Out of core (whole slides): --backend dask with zarr stores (`convert`), e.g.
      spatialmultiomics run --backend dask --scheduler local --tx rna.zarr --prot prot.zarr --n-factors 20
    writes shared_labels.csv, co_localization.csv, W_*.npy, H_shared.npy, cells.zarr, run_summary.json.
    """
    from spatialmultiomics._pipeline import run_pipeline

    _setup_logging(quiet, debug)
    if tx is None and prot is None:
        msg = "give at least --tx or --prot (see --help)."
        raise InputError(msg)
    result = run_pipeline(
        transcript_path=tx,
        protein_path=prot,
        platform_tx=tx_platform,
        platform_prot=prot_platform,
        n_factors=n_factors,
        radius=radius,
        output_dir=output,
        markers=(list(markers) if len(markers) > 1 else markers[0]) if markers else None,
        seed=seed,
        extra_modalities=_parse_extra(extra),
        pixel_size_um=pixel_size_um,
        annotation_method=annotation_method,
        expected=expected,
        solver=solver,
        align=align_route,
        match_radius=match_radius,
        allow_reflection=allow_reflection,
        max_rotation_deg=max_rotation_deg,
        warp=warp,
        protein_transform=protein_transform,
        exclude_channels=None if keep_all_channels else "default",
        spillover=spillover,
        overwrite=overwrite,
        progress=_show_progress(quiet),
        figures=not no_figures,
        backend=backend,
        scheduler=scheduler,
        device=device,
        n_jobs=n_jobs,
    )
    if not quiet:
        _summary(result, output)


@cli.command("demo")
@click.option(
    "--dataset",
    type=click.Choice(["tissue", "paper"], case_sensitive=False),
    default="tissue",
    show_default=True,
    help="Built-in data: a hard 5,000-cell synthetic tissue with known truth, or the seed paper's 200-cell benchmark.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("demo_results"),
    show_default=True,
    help="Result folder.",
)
@click.option("--n-factors", type=int, default=None, help="Number of factors (default: 4 for paper, 20 for tissue).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (data and analysis).")
@click.option(
    "--save-inputs",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the demo's input tables (transcriptomics.csv, proteomics.csv, markers.json, truth.csv) here.",
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty result folder.")
@click.option("--no-figures", is_flag=True, help="Skip figures/; report.html is still written.")
@_engine_options
@_common
def demo(
    dataset,
    output,
    n_factors,
    seed,
    save_inputs,
    overwrite,
    no_figures,
    backend,
    scheduler,
    device,
    n_jobs,
    quiet,
    debug,
) -> None:
    """Run everything on built-in data and write every output; report accuracy against the known truth."""
    from spatialmultiomics._demo import run_demo

    _setup_logging(quiet, debug)
    result, scores = run_demo(
        dataset=dataset,
        output_dir=output,
        n_factors=n_factors,
        seed=seed,
        save_inputs=save_inputs,
        overwrite=overwrite,
        progress=_show_progress(quiet),
        figures=not no_figures,
        backend=backend,
        scheduler=scheduler,
        device=device,
        n_jobs=n_jobs,
    )
    if not quiet:
        _summary(result, output)
        click.echo(f"accuracy vs truth: {scores['accuracy']:.3f}   macro-F1: {scores['macro_f1']:.3f}")


def main(
    argv: list[str] | None = None, *, prog_name: str = "spatialmultiomics", default_command: str | None = None
) -> None:
    """Entry point: run the CLI and turn errors into exit codes (2 bad input, 1 internal error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if default_command is not None and (not args or args[0] not in cli.commands):
        if not args or args[0] not in ("--version",):
            args = [default_command, *args]
    elif (args and args[0].startswith("--tx")) or (args and args[0].startswith("--prot")):
        args = ["run", *args]
    debug = "--debug" in args
    try:
        with warnings.catch_warnings():  # warnings become one log line each (silent with --quiet)
            if not warnings_recorded():
                warnings.showwarning = log_warning
            cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except InputError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - last line of defence: a message, not a traceback
        if debug:
            traceback.print_exc()
        click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
