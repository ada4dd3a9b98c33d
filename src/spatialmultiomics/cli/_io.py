"""``spatialmultiomics read`` and ``spatialmultiomics info``: instrument outputs in, ``.h5ad`` / a summary out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from spatialmultiomics._errors import InputError
from spatialmultiomics.cli._main import _PLATFORM_HELP, _common, _setup_logging, cli

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["info", "read"]


def _parse_options(values: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    options: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            msg = f"--option {item!r}: expected KEY=VALUE, e.g. --option bin_size=100."
            raise InputError(msg)
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            options[key.strip()] = raw
    return options


def _read(path: Path, platform: str | None, modality: str | None, pixel_size_um: float | None, option) -> ad.AnnData:
    from spatialmultiomics import io

    return io.read(path, platform, modality=modality, pixel_size_um=pixel_size_um, **_parse_options(option))


def _reader_options(func):
    func = click.option(
        "--option",
        "option",
        multiple=True,
        metavar="KEY=VALUE",
        help="Reader option, e.g. bin_size=100 (Stereo-seq), require_coordinates=false (repeatable).",
    )(func)
    func = click.option(
        "--pixel-size-um",
        type=float,
        default=None,
        help="µm per coordinate unit (default: the platform's own; 1 for standardized tables).",
    )(func)
    func = click.option(
        "--modality", default=None, help="rna or protein (Visium / Xenium: which features; default from platform)."
    )(func)
    return click.option("--platform", default=None, help=f"{_PLATFORM_HELP}; default: detected from the files.")(func)


def summary(adata: ad.AnnData) -> list[str]:
    """Lines describing a read modality: source, cells, features, FOVs, coordinate extent in µm, controls."""
    import numpy as np

    from spatialmultiomics._keys import Keys
    from spatialmultiomics.io._constants import CONTROL_FEATURES_KEY

    prov = adata.uns.get(Keys.PROVENANCE, {})
    lines = [
        f"platform:   {prov.get('platform', '?')} ({prov.get('version', '?')}), read by {prov.get('reader', '?')}",
        f"modality:   {prov.get('modality', '?')}",
        f"cells:      {adata.n_obs}",
        f"features:   {adata.n_vars} ({', '.join(map(str, adata.var_names[:8]))}{' ...' if adata.n_vars > 8 else ''})",
    ]
    if Keys.FOV in adata.obs:
        fovs = adata.obs[Keys.FOV].astype(str)
        names = sorted(fovs.unique())
        lines.append(f"FOVs:       {len(names)} ({', '.join(names[:6])}{' ...' if len(names) > 6 else ''})")
    else:
        lines.append("FOVs:       1")
    if Keys.SPATIAL in adata.obsm:
        xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=float)
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        lines.append(
            f"extent µm:  x {lo[0]:.1f} .. {hi[0]:.1f} ({hi[0] - lo[0]:.1f}), "
            f"y {lo[1]:.1f} .. {hi[1]:.1f} ({hi[1] - lo[1]:.1f})"
        )
    else:
        lines.append("extent µm:  no coordinates")
    lines.append(f"pixel size: {prov.get('pixel_size_um', '?')} µm per coordinate unit")
    if CONTROL_FEATURES_KEY in adata.uns:
        lines.append(f"controls:   {len(adata.uns[CONTROL_FEATURES_KEY]['name'])} (kept apart)")
    return lines


@cli.command("read")
@click.argument("path", type=click.Path(path_type=Path))
@_reader_options
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="Output .h5ad file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@_common
def read(path, platform, modality, pixel_size_um, option, out, overwrite, quiet, debug) -> None:
    """Read an instrument output (folder or file) and write it as .h5ad with coordinates in µm.

    \b
    Examples:
      spatialmultiomics read outs/ -o visium.h5ad
      spatialmultiomics read cell_table.csv --platform MIBI --pixel-size-um 0.5 -o mibi.h5ad
      spatialmultiomics read sample.gem.gz --option bin_size=100 -o stereo.h5ad
    """
    _setup_logging(quiet, debug)
    if out.suffix.lower() != ".h5ad":
        msg = f"--out {str(out)!r}: the output must be an .h5ad file."
        raise InputError(msg)
    if out.exists() and not overwrite:
        msg = f"--out {str(out)!r} exists; pass --overwrite to replace it."
        raise InputError(msg)
    adata = _read(path, platform, modality, pixel_size_um, option)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    if not quiet:
        for line in summary(adata):
            click.echo(line)
        click.echo(f"written:    {out}")


@cli.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@_reader_options
@_common
def info(path, platform, modality, pixel_size_um, option, quiet, debug) -> None:
    """Describe an instrument output: platform, cells, features, FOVs and coordinate extent in µm."""
    _setup_logging(True, debug)
    adata = _read(path, platform, modality, pixel_size_um, option)
    for line in summary(adata):
        click.echo(line)
