"""``spatialmultiomics colocalize``: spatial statistics on a table of cells that already carry labels."""

from __future__ import annotations

from pathlib import Path

import click

from spatialmultiomics.cli._main import _common, _setup_logging, cli

__all__ = ["colocalize"]


@cli.command("colocalize")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--label-key", required=True, help="Column with the cell type (or any label) of each cell.")
@click.option("--x", "x", default=None, help="x coordinate column (default: x, x_centroid, CentroidX, ...).")
@click.option("--y", "y", default=None, help="y coordinate column (default: y, y_centroid, CentroidY, ...).")
@click.option(
    "--fov-key",
    default=None,
    help="Column with the field of view / sample (default: fov, region, sample, ... if present; else one FOV).",
)
@click.option(
    "--method",
    type=click.Choice(["radius", "knn", "delaunay"], case_sensitive=False),
    default="radius",
    show_default=True,
    help="Spatial graph: all cells within --radius, --n-neighbors nearest (directed), or Delaunay.",
)
@click.option("--radius", type=float, default=50.0, show_default=True, help="Neighbourhood radius in µm.")
@click.option("--n-neighbors", type=int, default=6, show_default=True, help="Neighbours per cell for --method knn.")
@click.option(
    "--pixel-size-um",
    type=float,
    default=1.0,
    show_default=True,
    help="Micrometres per coordinate unit (e.g. 0.390625 for MIBI: 800 µm / 2048 px).",
)
@click.option("--n-niches", type=int, default=8, show_default=True, help="Cellular neighbourhoods (k-means k).")
@click.option(
    "--n-perms",
    type=int,
    default=0,
    show_default=True,
    help="Label permutations for permutation z-scores and p-values (0: exact statistics only).",
)
@click.option(
    "--expected",
    type=click.Choice(["exact", "paper"], case_sensitive=False),
    default="exact",
    show_default=True,
    help="Score's expectation: exact random-relabelling mean (0 = random mixing) or the seed's n_A*n_B/n.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="LABEL",
    help="A label that is not a cell type (e.g. Unknown, Other); repeatable. Its cells stay in the graph and the "
    "null model, its pairs are not reported.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of permutations and k-means.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Result folder (created atomically)."
)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty result folder.")
@_common
def colocalize(
    table,
    label_key,
    x,
    y,
    fov_key,
    method,
    radius,
    n_neighbors,
    pixel_size_um,
    n_niches,
    n_perms,
    expected,
    exclude,
    seed,
    output,
    overwrite,
    quiet,
    debug,
) -> None:
    """Co-localization, niche composition and neighbourhoods of already-labelled cells.

    TABLE is a CSV / TSV (also .gz) / parquet file with one row per cell (x, y, label and optionally a FOV
    column), or an .h5ad file with the labels in obs. The label column holds text / categories or integer
    cluster codes (at most 200 distinct values, and at most half the rows); a column of measurements (floats,
    or integers with many distinct values) is refused.

    \b
    Writes to --output:
      co_localization.csv          pooled over FOVs (null stratified by FOV), one row per ordered type pair
      co_localization_by_fov.csv   the same per FOV (column fov), then the pooled rows (fov = "pooled")
      niche_composition.csv        per cell: niche_type, composition, n_neighbors, niche, frac_<type>
      result.h5ad                  cells with graph, statistics and niches (uns / obs / obsm / obsp)
    """
    from spatialmultiomics import io, spatial
    from spatialmultiomics._keys import Keys
    from spatialmultiomics._validate import check_positive, check_positive_int
    from spatialmultiomics.spatial._niches import write_niche_table

    _setup_logging(quiet, debug)
    if method.lower() == "radius":
        check_positive(radius, name="--radius")
    n_neighbors = check_positive_int(n_neighbors, name="--n-neighbors")
    n_niches = check_positive_int(n_niches, name="--n-niches")
    n_perms = check_positive_int(n_perms, name="--n-perms", minimum=0)
    io.check_output_dir(output, overwrite=overwrite)

    adata = io.read_labelled_table(table, label_key=label_key, x=x, y=y, fov_key=fov_key, pixel_size_um=pixel_size_um)
    spatial.spatial_neighbors(adata, method=method, radius=radius, n_neighbors=n_neighbors, fov_key=Keys.FOV)
    spatial.colocalization(
        adata,
        label_key=label_key,
        expected=expected,
        n_perms=n_perms,
        seed=seed,
        sample_key=Keys.FOV,
        exclude=list(exclude) or None,
    )
    spatial.niche_composition(adata, label_key=label_key)
    spatial.niches(adata, n_niches=n_niches, label_key=label_key, seed=seed)

    pooled = spatial.colocalization_table(adata, label_key=label_key)
    by_fov = spatial.colocalization_table(adata, label_key=label_key, by_sample=True).rename(columns={"sample": "fov"})
    with io.atomic_output_dir(output, overwrite=overwrite) as tmp:
        pooled.to_csv(tmp / "co_localization.csv", index=False)
        by_fov.to_csv(tmp / "co_localization_by_fov.csv", index=False)
        write_niche_table(adata, tmp / "niche_composition.csv", label_key=label_key)
        adata.write_h5ad(tmp / "result.h5ad")

    if not quiet:
        n_edges = adata.obsp[Keys.GRAPH].nnz
        n_fov = adata.obs[Keys.FOV].nunique()
        click.echo(
            f"{adata.n_obs} cells, {n_fov} FOV(s), {n_edges} directed edges "
            f"({n_edges / max(adata.n_obs, 1):.1f} per cell), {pooled['cell_type_a'].nunique()} labels."
        )
        ranked = pooled.dropna(subset=["z_score"]).sort_values("z_score")
        if len(ranked):
            top, low = ranked.iloc[-1], ranked.iloc[0]
            click.echo(f"strongest attraction: {top['cell_type_pair']} (z = {top['z_score']:.1f})")
            click.echo(f"strongest avoidance:  {low['cell_type_pair']} (z = {low['z_score']:.1f})")
        click.echo(f"results: {output}")
