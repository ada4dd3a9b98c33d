"""The whole pipeline on 1,000,000 cells x (2000 sparse genes + 40 proteins) from two ``.h5ad`` files.

Acceptance (issue "A million cells on two cores"): every output except figures in at most 10 minutes wall
and 8 GiB peak RSS on the 2-core machine, sparse CSR throughout.

Two steps, each in its own process so that the pipeline's peak RSS is its own:

1. ``--stage generate``: write ``rna.h5ad`` (raw counts, CSR float32, appended chunk by chunk with
   ``anndata.io.sparse_dataset``, so memory stays O(chunk)) and ``protein.h5ad`` (dense intensities), both with
   ``obsm['spatial']`` in µm (about 150 µm² per cell, cell programmes laid out in spatial domains), and a
   marker file naming each programme's genes and proteins. Generated once and reused (``--regenerate`` forces).
2. ``--stage run``: ``smo.run_pipeline(rna.h5ad, protein.h5ad, ..., output_dir=...)`` with the pipeline's
   defaults (``n_factors`` = 20 here), then prints wall time, peak RSS (``VmHWM``, whole process) and the
   per-stage time and peak RSS recorded in ``mdata.uns['pipeline']``, and the output files with their sizes.
   ``result.h5mu`` (every layer and graph of a million cells) is written like every other output.

Run: ``.venv/bin/python benchmarks/bench_pipeline_1m.py [--cells 1000000] [--workdir /tmp/smo_1m]``
(default: both steps). Numbers go to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_PROGRAMS = 20


def _peak_rss_gib() -> float:
    """Peak resident set size of this process so far (VmHWM), in GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def generate(workdir: Path, n_cells: int, seed: int = 0, chunk: int = 50_000) -> None:
    """Write rna.h5ad, protein.h5ad and markers.json for ``n_cells`` cells, chunk by chunk."""
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_nmf import synthetic_chunks

    workdir.mkdir(parents=True, exist_ok=True)
    n_genes, n_proteins = 2000, 40
    genes = [f"G{j:04d}_P{j % N_PROGRAMS:02d}" for j in range(n_genes)]
    proteins = [f"PROT{q:02d}_P{q % N_PROGRAMS:02d}" for q in range(n_proteins)]
    rng = np.random.default_rng(seed + 1)
    side = float(np.sqrt(150.0 * n_cells))  # µm
    names = np.array([f"cell{i:07d}" for i in range(n_cells)], dtype=object)
    t0 = time.perf_counter()
    rna_path, prot_path = workdir / "rna.h5ad", workdir / "protein.h5ad"
    coords = np.empty((n_cells, 2))
    programs = np.empty(n_cells, dtype=np.int64)
    proteins_all = np.empty((n_cells, n_proteins), dtype=np.float32)
    with h5py.File(rna_path, "w") as f:
        start = 0
        group_made = False
        for counts, prot, program in synthetic_chunks(
            n_cells, n_genes=n_genes, n_proteins=n_proteins, n_programs=N_PROGRAMS, seed=seed, chunk=chunk
        ):
            m = counts.shape[0]
            # spatial domains: each programme lives in its own 600 µm stripes (with 30 % of cells scattered)
            xy = rng.random((m, 2)) * side
            stripe = np.floor(xy[:, 0] / 600.0).astype(np.int64) + 7 * np.floor(xy[:, 1] / 600.0).astype(np.int64)
            domain = stripe % N_PROGRAMS
            order_dom = np.argsort(domain, kind="stable")
            order_prog = np.argsort(program, kind="stable")
            place = np.empty(m, dtype=np.int64)
            place[order_prog] = order_dom  # cells of programme p go to positions of domain p (counts permitting)
            keep = rng.random(m) < 0.7
            xy_cell = np.where(keep[:, None], xy[place], xy)
            coords[start : start + m] = xy_cell
            programs[start : start + m] = program
            proteins_all[start : start + m] = prot
            if not group_made:
                write_elem(f, "X", sp.csr_matrix(counts))
                group_made = True
            else:
                sparse_dataset(f["X"]).append(counts)
            start += m
        obs = pd.DataFrame(index=pd.Index(names, name="cell_id"))
        obs["program"] = pd.Categorical([f"P{p:02d}" for p in programs])
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=pd.Index(genes)))
        write_elem(f, "obsm", {"spatial": coords})
        for key in ("layers", "obsp", "varm", "varp", "uns"):
            write_elem(f, key, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
    prot = ad.AnnData(proteins_all, obs=pd.DataFrame(index=pd.Index(names, name="cell_id")))
    prot.var_names = proteins
    prot.obsm["spatial"] = coords
    prot.write_h5ad(prot_path)
    markers = {
        f"Type{p:02d}": {
            "genes": [g for g in genes if g.endswith(f"_P{p:02d}")][:6],
            "proteins": [q for q in proteins if q.endswith(f"_P{p:02d}")],
        }
        for p in range(N_PROGRAMS)
    }
    (workdir / "markers.json").write_text(json.dumps(markers))
    print(
        f"generated {n_cells} cells in {time.perf_counter() - t0:.1f} s: {rna_path} "
        f"({rna_path.stat().st_size / 2**30:.2f} GiB), {prot_path} ({prot_path.stat().st_size / 2**30:.2f} GiB); "
        f"peak RSS of the generator {_peak_rss_gib():.2f} GiB"
    )


def run(workdir: Path, n_factors: int) -> None:
    """Run the pipeline and print the measurements as JSON (last line) and as text."""
    t_import = time.perf_counter()
    import spatialmultiomics as smo
    from spatialmultiomics._mudata import read_h5mu  # noqa: F401  (import cost counted here, not in a stage)

    t0 = time.perf_counter()
    out = workdir / "results"
    if out.exists():
        shutil.rmtree(out)
    res = smo.run_pipeline(
        transcript_path=workdir / "rna.h5ad",
        protein_path=workdir / "protein.h5ad",
        platform_tx="generic",
        platform_prot="generic",
        n_factors=n_factors,
        radius=50.0,
        output_dir=out,
        markers=workdir / "markers.json",
        seed=0,
        figures=False,
    )
    wall = time.perf_counter() - t0
    info = res.mdata.uns["pipeline"]
    nmf = res.mdata.uns["nmf"]
    files = {p.name: p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    rna = res.mdata["rna"]
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "n_cells": int(res.mdata.n_obs),
        "import_s": round(t0 - t_import, 2),
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(_peak_rss_gib(), 2),
        "stages_s": {k: round(float(v), 1) for k, v in dict(info["timings_s"]).items()},
        "stages_peak_rss_gib": {k: round(float(v) / 1024, 2) for k, v in dict(info.get("peak_rss_mib", {})).items()},
        "nmf_n_iter": int(nmf["n_iter"]),
        "nmf_reconstruction_err": float(nmf["reconstruction_err"]),
        "rna_X_format": type(rna.X).__name__,
        "rna_layers": {k: type(v).__name__ for k, v in rna.layers.items()},
        "n_cell_types": len(res.cell_types),
        "output_files_mib": {k: round(v / 2**20, 1) for k, v in files.items()},
        "load_avg_after": os.getloadavg(),
    }
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/smo_1m"))
    parser.add_argument("--n-factors", type=int, default=N_PROGRAMS)
    parser.add_argument("--stage", choices=["all", "generate", "run"], default="all")
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    workdir = args.workdir
    if args.stage == "generate":
        generate(workdir, args.cells)
        return
    if args.stage == "run":
        run(workdir, args.n_factors)
        return
    print(
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()}"
    )
    stamp = workdir / f"generated_{args.cells}"
    if args.regenerate or not stamp.exists():
        for p in workdir.glob("generated_*"):
            p.unlink()
        subprocess.run(
            [sys.executable, __file__, "--stage", "generate", "--cells", str(args.cells), "--workdir", str(workdir)],
            check=True,
        )
        stamp.touch()
    subprocess.run(
        [sys.executable, __file__, "--stage", "run", "--workdir", str(workdir), "--n-factors", str(args.n_factors)],
        check=True,
    )


if __name__ == "__main__":
    main()
