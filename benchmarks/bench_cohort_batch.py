"""One model for a cohort (``smo.cohort.fit_cohort``): batch correction measured, and the parallel read at scale.

Parts (``--part``, default both):

* ``batch``: ``--slides`` synthetic slides (``smo.datasets.synthetic_tissue``, ``--cells`` cells each, 12 known
  types) over ``--seeds`` data seeds; each fitted without and with planted per-slide shifts (slide 1: protein
  intensities x2.5 + 8, RNA depth x0.5; slide 2: x1.5 + 3, depth x2; slide 3: x3, depth x1; slide 0 and any
  further slide unchanged) under every batch correction (``none``, ``scale``, ``quantile``, ``harmony``). Reported:
  cell-type macro-F1 against the truth with and without shift, their difference (target: within 0.02), and
  whether any type is called in only some slides. A second scenario, ``composition``, drops 70 % of the T and B
  cells of the odd slides (a real composition difference between conditions, which a correction must not erase).
* ``scale``: ``--scale-slides`` slides x ``--scale-cells`` cells written as table files + a sample sheet, then
  ``fit_cohort`` with 1 and with 2 worker processes: wall time per stage, peak RSS of the parent per stage and of
  the largest worker (its ``VmHWM``, read in the worker), load.

Run: ``.venv/bin/python benchmarks/bench_cohort_batch.py [--part batch|scale] [--seeds 3]``; results go to
``benchmarks/results/cohort_batch.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import spatialmultiomics as smo
from spatialmultiomics._demo import score_labels

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = ((1.0, 0.0, 1.0), (2.5, 8.0, 0.5), (1.5, 3.0, 2.0), (3.0, 0.0, 1.0))
CORRECTIONS = ("none", "scale", "quantile", "harmony")
_T_B = ("CD4 T cells", "CD8 T cells", "Tregs", "B cells")


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def _slide(mdata, i: int, *, shift: bool, composition: bool):
    """RNA and protein AnnData of slide ``i`` with its planted shift / composition change, and its truth."""
    keep = np.ones(mdata.n_obs, dtype=bool)
    truth = mdata.obs["true_cell_type"].astype(str)
    if composition and i % 2 == 1:
        rng = np.random.default_rng(100 + i)
        keep &= ~(truth.isin(_T_B).to_numpy() & (rng.random(mdata.n_obs) < 0.7))
    rna, prot = mdata["rna"][keep].copy(), mdata["protein"][keep].copy()
    a, b, depth = SHIFTS[i % len(SHIFTS)] if shift else (1.0, 0.0, 1.0)
    rng = np.random.default_rng(i)
    X = rna.X.tocsr().copy()
    if depth < 1:
        X.data = rng.binomial(X.data.astype(np.int64), depth).astype(np.float32)
    elif depth > 1:
        X.data = rng.poisson(X.data * depth).astype(np.float32)
    X.eliminate_zeros()
    rna.X = X
    prot.X = (np.asarray(prot.X) * a + b).astype(np.float32)
    return rna, prot, truth[keep].rename(lambda c, i=i: f"s{i}:{c}")


def batch_part(
    n_slides: int, n_cells: int, seeds: int, scenarios: tuple[str, ...] = ("equal", "composition")
) -> list[dict]:
    rows = []
    for scenario in scenarios:
        for ds in range(seeds):
            slides = [smo.datasets.synthetic_tissue(n_cells, seed=1000 * ds + i) for i in range(n_slides)]
            markers = slides[0].uns["markers"]
            for corr in CORRECTIONS:
                f1 = {}
                split = {}
                for shift in (False, True):
                    parts = [
                        _slide(m, i, shift=shift, composition=scenario == "composition") for i, m in enumerate(slides)
                    ]
                    frame = pd.DataFrame(
                        {
                            "sample": [f"s{i}" for i in range(n_slides)],
                            "condition": ["a" if i % 2 == 0 else "b" for i in range(n_slides)],
                            "transcripts": [p[0] for p in parts],
                            "proteins": [p[1] for p in parts],
                        }
                    )
                    truth = pd.concat([p[2] for p in parts])
                    t0 = time.perf_counter()
                    md = smo.cohort.fit_cohort(frame, n_factors=20, markers=markers, batch_correction=corr, seed=0)
                    seconds = time.perf_counter() - t0
                    f1[shift] = score_labels(truth, md.obs["cell_type"])["macro_f1"]
                    tab = pd.crosstab(md.obs["cell_type"].astype(str), md.obs["sample"].astype(str))
                    tab = tab.drop(index="Unknown", errors="ignore")
                    split[shift] = sorted(tab.index[(tab < 3).any(axis=1)])  # types (almost) absent from a slide
                row = {
                    "scenario": scenario,
                    "n_slides": n_slides,
                    "n_cells": n_cells,
                    "seed": ds,
                    "correction": corr,
                    "f1_no_shift": round(f1[False], 4),
                    "f1_shift": round(f1[True], 4),
                    "delta": round(f1[True] - f1[False], 4),
                    "types_missing_in_a_slide_shift": split[True],
                    "seconds_last": round(seconds, 1),
                    "load": _load(),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def scale_part(n_slides: int, n_cells: int, workdir: Path) -> list[dict]:
    rows = []
    sheet_rows = []
    markers = None
    for i in range(n_slides):
        mdata = smo.datasets.synthetic_tissue(n_cells, seed=500 + i)
        markers = mdata.uns["markers"]
        files = smo.datasets.write_tables(mdata, workdir / f"slide{i:02d}")
        sheet_rows.append(
            {
                "sample": f"slide{i:02d}",
                "condition": "a" if i % 2 == 0 else "b",
                "patient": f"p{i // 2}",
                "transcripts": str(files["rna"]),
                "proteins": str(files["protein"]),
                "proteins_platform": "CODEX",
            }
        )
    sheet = workdir / "samples.csv"
    pd.DataFrame(sheet_rows).to_csv(sheet, index=False)
    (workdir / "markers.json").write_text(json.dumps(markers))
    for n_jobs in (1, 2):  # each in a fresh process, so that neither inherits the other's memory
        cmd = [sys.executable, __file__, "--part", "scale-one", "--n-jobs", str(n_jobs), "--workdir", str(workdir)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def scale_one(workdir: Path, n_jobs: int) -> None:
    """One ``fit_cohort`` of the sheet in ``workdir``; prints one JSON line."""
    sheet = workdir / "samples.csv"
    markers = json.loads((workdir / "markers.json").read_text())
    size = sum(f.stat().st_size for f in workdir.rglob("*.csv")) / 2**20
    load0 = _load()
    t0 = time.perf_counter()
    md = smo.cohort.fit_cohort(sheet, n_factors=20, markers=markers, n_jobs=n_jobs, seed=0)
    wall = time.perf_counter() - t0
    rec = md.uns["cohort"]
    row = {
        "n_jobs": n_jobs,
        "n_slides": len(rec["read_seconds"]),
        "n_cells_total": int(md.n_obs),
        "input_mib": round(size, 1),
        "wall_s": round(wall, 1),
        "timings_s": {k: round(float(v), 1) for k, v in rec["timings_s"].items()},
        "parent_peak_rss_mib": {k: round(float(v)) for k, v in rec["peak_rss_mib"].items()},
        "largest_worker_peak_rss_mib": rec["worker_peak_rss_mib"],
        "read_s_per_slide_mean": round(float(np.mean([float(v) for v in rec["read_seconds"].values()])), 2),
        "load_start": load0,
        "load_end": _load(),
    }
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["batch", "scale", "all", "scale-one"], default="all")
    parser.add_argument("--n-jobs", type=int, default=1, help="--part scale-one: worker processes")
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--cells", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--scenarios", default="equal,composition", help="comma-separated: equal, composition")
    parser.add_argument("--scale-slides", type=int, default=12)
    parser.add_argument("--scale-cells", type=int, default=5000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cohort_batch.json")
    args = parser.parse_args()
    if args.part == "scale-one":
        scale_one(args.workdir, args.n_jobs)
        return
    out: dict = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count()}
    if args.part in ("batch", "all"):
        key = "batch" if args.cells == 1500 else f"batch_{args.cells}"
        out[key] = batch_part(args.slides, args.cells, args.seeds, tuple(args.scenarios.split(",")))
    if args.part in ("scale", "all"):
        with tempfile.TemporaryDirectory(prefix="smo-cohort-") as tmp:
            out["scale"] = scale_part(args.scale_slides, args.scale_cells, args.workdir or Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous.update(out)
    args.out.write_text(json.dumps(previous, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
