"""Co-localization speed and agreement (issue: co-localization users can trust).

Part 1, side by side in one process on the same graph: 200,000 cells, 20 types in spatial domains, radius graph
(50 µm, the package default; ~78 neighbours per cell at one cell per 100 µm²):
  * ours: ``smo.spatial.colocalization`` (exact join-count moments, no permutations),
  * squidpy: ``squidpy.gr.nhood_enrichment(n_perms=1000, seed=0)`` (numba compiled before timing; ``n_jobs=1``
    because its loky backend fails on graphs above joblib's memmapping threshold: read-only arrays do not
    match its numba signature).
  Reported: wall times, their ratio, z-score correlation and largest difference, equality of the counts.

Part 2, in a fresh process (so ``ru_maxrss`` is this run's peak): 1,000,000 cells, same layout: graph +
co-localization + niche composition wall time and peak resident memory.

Run: ``python benchmarks/bench_colocalization.py [--part all|squidpy|scale] [--n-cells 200000] [--n-big 1000000]``
with a Python that has squidpy for part 1 (e.g. a separate venv with ``pip install squidpy -e .``); part 1 is
skipped with a message when squidpy is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd

from spatialmultiomics import spatial

N_TYPES = 20
DENSITY_UM2 = 100.0  # one cell per 100 µm² (10 µm spacing), as in solid tissue
RADIUS = 50.0


def tissue(n: int, n_types: int = N_TYPES, seed: int = 0) -> ad.AnnData:
    """Cells uniform in a square at one per 100 µm², typed by spatial domain (Voronoi patches of ~500 cells).

    Each patch has a dominant type taken by 70 % of its cells; the others are random. Memory O(n).
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    side = float(np.sqrt(n * DENSITY_UM2))
    coords = rng.random((n, 2)) * side
    n_patch = max(n // 500, 1)
    centres = rng.random((n_patch, 2)) * side
    patch_type = rng.integers(0, n_types, n_patch)
    _, patch = cKDTree(centres).query(coords, workers=1)
    codes = np.where(rng.random(n) < 0.7, patch_type[patch], rng.integers(0, n_types, n))
    cats = [f"type{i:02d}" for i in range(n_types)]
    obs = pd.DataFrame({"cell_type": pd.Categorical.from_codes(codes, cats)}, index=pd.RangeIndex(n).astype(str))
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = coords
    return adata


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{datetime.date.today()} | {platform.node()} | {platform.processor() or platform.machine()} | "
        f"{os.cpu_count()} CPUs | load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | Python "
        f"{platform.python_version()} | numpy {np.__version__}"
    )


def median_time(func, repeats: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def part_squidpy(n: int, n_perms: int) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import squidpy as sq
    except ImportError:
        print("part 1 skipped: squidpy is not installed in this environment (pip install squidpy)")
        return
    adata = tissue(n)
    t0 = time.perf_counter()
    spatial.spatial_neighbors(adata, radius=RADIUS)
    t_graph = time.perf_counter() - t0
    graph = adata.obsp["spatial_connectivities"]
    print(
        f"part 1: {n:,} cells, {N_TYPES} types, radius {RADIUS:g} µm: {graph.nnz:,} directed edges "
        f"({graph.nnz / n:.1f} per cell); graph built in {t_graph:.2f} s"
    )

    spatial.colocalization(adata, inplace=False)  # warm-up (imports)
    t_ours, ours = median_time(lambda: spatial.colocalization(adata, inplace=False))
    foreign = adata.copy()
    del foreign.uns["spatial_neighbors"]  # a graph from elsewhere: symmetry checked by a full transpose
    t_foreign, _ = median_time(lambda: spatial.colocalization(foreign, inplace=False))

    def run_sq(perms: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sq.gr.nhood_enrichment(
                adata, cluster_key="cell_type", n_perms=perms, seed=0, copy=True, n_jobs=1, show_progress_bar=False
            )

    run_sq(1)  # numba compilation, excluded from the timing
    t0 = time.perf_counter()
    res = run_sq(n_perms)
    t_sq = time.perf_counter() - t0
    z_sq = np.asarray(res.zscore)
    r = np.corrcoef(ours.zscore.ravel(), z_sq.ravel())[0, 1]
    same_counts = bool(np.array_equal(ours.count, np.asarray(res.counts)))

    rows = [
        ("ours, colocalization (exact), graph from spatial_neighbors", t_ours, t_sq / t_ours),
        ("ours, colocalization (exact), foreign graph: symmetry checked", t_foreign, t_sq / t_foreign),
        (f"squidpy.gr.nhood_enrichment(n_perms={n_perms}, n_jobs=1)", t_sq, 1.0),
    ]
    print(f"{'method':<66} {'seconds':>9} {'squidpy / this':>15}")
    for name, t, ratio in rows:
        print(f"{name:<66} {t:>9.2f} {ratio:>14.0f}x")
    print(
        f"z-score correlation ours vs squidpy: {r:.6f}; max |z_ours - z_squidpy| = "
        f"{np.abs(ours.zscore - z_sq).max():.2f} (max |z| {np.abs(ours.zscore).max():.1f}); "
        f"identical counts: {same_counts}"
    )


def scale_child(n: int) -> None:
    """Run in a fresh process: print one JSON line with wall times and peak RSS."""
    adata = tissue(n)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times = {}
    t0 = time.perf_counter()
    spatial.spatial_neighbors(adata, radius=RADIUS)
    times["graph"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    spatial.colocalization(adata)
    times["colocalization"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    spatial.niche_composition(adata)
    times["niche_composition"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    print(
        json.dumps(
            {
                "n": n,
                "edges": int(adata.obsp["spatial_connectivities"].nnz),
                "times": times,
                "peak_rss_gib": peak,
                "rss_after_data_gib": rss_data,
            }
        )
    )


def part_scale(n: int) -> None:
    proc = subprocess.run(
        [sys.executable, __file__, "--scale-child", str(n)], capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    t = out["times"]
    print(
        f"part 2: {n:,} cells, {N_TYPES} types, radius {RADIUS:g} µm, {out['edges']:,} directed edges "
        f"({out['edges'] / n:.1f} per cell), fresh process"
    )
    print(f"{'step':<34} {'seconds':>9}")
    for step in ("graph", "colocalization", "niche_composition", "total"):
        print(f"{step:<34} {t[step]:>9.2f}")
    print(
        f"peak RSS {out['peak_rss_gib']:.2f} GiB (of which input data and interpreter "
        f"{out['rss_after_data_gib']:.2f} GiB); targets: total <= 60 s, peak <= 4 GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "squidpy", "scale"], default="all")
    parser.add_argument("--n-cells", type=int, default=200_000)
    parser.add_argument("--n-perms", type=int, default=1000)
    parser.add_argument("--n-big", type=int, default=1_000_000)
    parser.add_argument("--scale-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_child is not None:
        scale_child(args.scale_child)
        return
    print(machine())
    if args.part in ("all", "squidpy"):
        part_squidpy(args.n_cells, args.n_perms)
    if args.part in ("all", "scale"):
        part_scale(args.n_big)


if __name__ == "__main__":
    main()
