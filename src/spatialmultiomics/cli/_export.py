"""``spatialmultiomics export``: a result written earlier, in another tool's format (SpatialData zarr); ``convert``: a
vendor matrix into a zarr-backed AnnData for the out-of-core route."""

from __future__ import annotations

from pathlib import Path

import click

from spatialmultiomics._errors import InputError
from spatialmultiomics.cli._main import _common, _setup_logging, cli

__all__ = ["convert", "export"]


@cli.command("export")
@click.argument("result", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["spatialdata"], case_sensitive=False),
    default="spatialdata",
    show_default=True,
    help="Output format.",
)
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Output store, e.g. result.zarr.")
@click.option(
    "--radius",
    type=float,
    default=None,
    help="Cell radius in µm: cells become circles. Default: 27.5 for Visium spots, else cells are points.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@_common
def export(result, fmt, out, radius, overwrite, quiet, debug) -> None:
    """Export RESULT (a folder written by `spatialmultiomics run`, or its result.h5mu) as a SpatialData store.

    \b
    Needs the interop extra: pip install 'spatialmultiomics[interop]'.
    Example:
      spatialmultiomics export results --to spatialdata -o results.zarr
    """
    from spatialmultiomics._mudata import read_h5mu
    from spatialmultiomics.io import write_spatialdata

    _setup_logging(quiet, debug)
    source = result / "result.h5mu" if result.is_dir() else result
    if not source.is_file():
        msg = f"{source}: no such file; give a result folder (with result.h5mu) or a .h5mu file."
        raise InputError(msg)
    try:
        path = write_spatialdata(read_h5mu(source), out, overwrite=overwrite, radius=radius)
    except ImportError as err:  # a missing extra is for the user to fix: one line, exit code 2
        raise InputError(str(err)) from err
    if not quiet:
        click.echo(f"{fmt}: {path}")


@cli.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Output store, e.g. rna.zarr.")
@click.option(
    "--coordinates",
    type=click.Path(path_type=Path),
    default=None,
    help="Table of the cells' positions (id + x/y columns: Xenium cells.csv.gz, MERSCOPE cell_metadata.csv) "
    "written to obsm['spatial'].",
)
@click.option("--pixel-size-um", type=float, default=1.0, show_default=True, help="Multiplies the coordinates.")
@click.option(
    "--feature-type",
    default="Gene Expression",
    show_default=True,
    help="10x files: the features kept ('Protein Expression' for a Xenium protein run, 'Antibody Capture').",
)
@click.option("--chunk-cells", type=int, default=65_536, show_default=True, help="Cells read and written at a time.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store.")
@_common
def convert(source, out, coordinates, pixel_size_um, feature_type, chunk_cells, overwrite, quiet, debug) -> None:
    """Copy the expression matrix of SOURCE into a zarr-backed AnnData, a block of cells at a time.

    SOURCE: a 10x feature-barcode HDF5 file (Xenium cell_feature_matrix.h5, Visium HD / Space Ranger / Cell Ranger
    *_feature_bc_matrix.h5) or a cell-by-feature table (.csv / .tsv, gzipped or not; first column the cell id,
    e.g. MERSCOPE cell_by_gene.csv). Memory stays O(chunk cells x features): for whole slides and the out-of-core
    route of docs/scale.md.

    \b
    Example:
      spatialmultiomics convert outs/cell_feature_matrix.h5 --coordinates outs/cells.csv.gz -o rna.zarr
    """
    from spatialmultiomics.io import stream_to_zarr

    _setup_logging(quiet, debug)
    store = stream_to_zarr(
        source,
        out,
        coordinates=coordinates,
        pixel_size_um=pixel_size_um,
        feature_type=feature_type,
        chunk_cells=chunk_cells,
        overwrite=overwrite,
    )
    if not quiet:
        click.echo(f"{store.path}: {store.n_obs:,} cells x {store.n_vars:,} features, {store.nnz:,} values")
