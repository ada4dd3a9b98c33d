"""Cohort comparisons (``smo.cohort.compare`` / ``spatialmultiomics cohort``): error rates, power, scale, real data.

Parts (``--part``, default all):

* ``synthetic``: ``smo.datasets.synthetic_cohort`` (2 groups x 10 patients x 3 images x 1,000 cells; planted: two
  types change abundance by a log odds ratio of about +-1, two pairs attract more in the second group) over
  ``--seeds`` seeds: FDR and power at q < 0.10 for abundance and co-localization, coverage of the true abundance
  effect by the 95 % CI; the same for the usual alternative (per-image z-score, plain two-sample t-test, BH).
* ``null``: the same cohort with nothing planted: the fraction of p < 0.05 over all features and seeds (nominal
  0.05), ours and the alternative.
* ``scale``: a labelled cohort of 250,000 cells in 120 images (40 patients x 3 images) written as CSV, then the
  whole ``spatialmultiomics cohort`` command (read, graph, statistics, niches, mixed models, figures, report) in a
  subprocess; wall time, peak memory and load.
* ``tnbc``: the MIBI TNBC cohort (Keren et al. 2018; 33 patients, one image each; Class 0 = mixed, 1 =
  compartmentalised): tumour-immune co-localization compartmentalised vs mixed, with the types merged into
  Tumor / Immune / Other and with the 16 published types; ours and the alternative.

Run: ``.venv/bin/python benchmarks/bench_cohort.py [--part synthetic|null|scale|tnbc] [--seeds 10]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _real_sets import TNBC_IMMUNE, TNBC_PHENO, tnbc_compartment

from spatialmultiomics import datasets
from spatialmultiomics.cohort import compare
from spatialmultiomics.cohort._differential import bh_qvalues

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"label_key": "cell_type", "sample_key": "sample", "condition_key": "condition", "patient_key": "patient"}
PAIR = ["cell_type_a", "cell_type_b"]


def load() -> str:
    return "load " + " / ".join(f"{v:.2f}" for v in os.getloadavg())


def baseline_pairs(res) -> pd.DataFrame:
    """What a user would otherwise run: per-image co-localization z-score, Student t-test, BH (no weights)."""
    from scipy import stats

    long = res.sample_colocalization
    ref, other = res.conditions[0], res.conditions[1]
    rows = []
    for (a, b), part in long.groupby(PAIR, sort=False):
        z = part["z_score"]
        x, y = z[part["condition"] == other].dropna(), z[part["condition"] == ref].dropna()
        p = stats.ttest_ind(x, y).pvalue if len(x) > 1 and len(y) > 1 else np.nan
        rows.append((a, b, float(x.mean() - y.mean()), p))
    out = pd.DataFrame(rows, columns=[*PAIR, "effect", "p_value"])
    out["q_value"] = bh_qvalues(out["p_value"].to_numpy())
    return out


def rates(table: pd.DataFrame, truth: pd.DataFrame, keys: list[str], q: float = 0.10) -> tuple[int, int, int]:
    m = table.merge(truth[[*keys, "planted"]], on=keys)
    disc = (m["q_value"] < q).to_numpy()
    planted = m["planted"].to_numpy(dtype=bool)
    return int((disc & planted).sum()), int(planted.sum()), int((disc & ~planted).sum())


def part_synthetic(seeds: int, null: bool = False) -> None:
    label = "null (nothing planted)" if null else "planted effects"
    print(f"\n## synthetic cohort, {label}: 2 x 10 patients x 3 images x 1,000 cells, seeds 0..{seeds - 1}")
    rows, pvals = [], {"ours_abundance": [], "ours_pairs": [], "baseline_pairs": []}
    t_all = time.perf_counter()
    for seed in range(seeds):
        data = datasets.synthetic_cohort(
            seed=seed, abundance_effect=0.0 if null else 1.0, pair_effect=0.0 if null else 0.3
        )
        t0 = time.perf_counter()
        res = compare(data.cells, **KEYS, n_niches=0)
        sec = time.perf_counter() - t0
        base = baseline_pairs(res)
        ab = res.differential_abundance.merge(
            data.truth_abundance[["cell_type", "effect", "planted"]], on="cell_type", suffixes=("", "_true")
        )
        covered = ((ab["ci_low"] <= ab["effect_true"]) & (ab["effect_true"] <= ab["ci_high"])).to_numpy()
        tp_a, n_a, fp_a = rates(res.differential_abundance, data.truth_abundance, ["cell_type"])
        tp_p, n_p, fp_p = rates(res.differential_colocalization, data.truth_pairs, PAIR)
        tp_b, _, fp_b = rates(base, data.truth_pairs, PAIR)
        rows.append((seed, tp_a, n_a, fp_a, tp_p, n_p, fp_p, tp_b, fp_b, covered.mean(), sec))
        nulls_a = ab.loc[~ab["planted"], "p_value"]
        m = res.differential_colocalization.merge(data.truth_pairs[[*PAIR, "planted"]], on=PAIR)
        mb = base.merge(data.truth_pairs[[*PAIR, "planted"]], on=PAIR)
        pvals["ours_abundance"] += list(nulls_a)
        pvals["ours_pairs"] += list(m.loc[~m["planted"], "p_value"])
        pvals["baseline_pairs"] += list(mb.loc[~mb["planted"], "p_value"])
    df = pd.DataFrame(
        rows,
        columns=[
            "seed",
            "tp_ab",
            "n_ab",
            "fp_ab",
            "tp_pair",
            "n_pair",
            "fp_pair",
            "tp_base",
            "fp_base",
            "ci_cover",
            "seconds",
        ],
    )
    print(df.to_string(index=False))

    def fdr(tp: pd.Series, fp: pd.Series) -> float:
        return float(np.mean(fp / np.maximum(tp + fp, 1)))

    if not null:
        print(
            f"abundance: power {df.tp_ab.sum() / df.n_ab.sum():.3f}, FDR {fdr(df.tp_ab, df.fp_ab):.3f}, CI covers the "
            f"truth {df.ci_cover.mean():.3f}\n"
            f"pairs (ours):     power {df.tp_pair.sum() / df.n_pair.sum():.3f}, FDR {fdr(df.tp_pair, df.fp_pair):.3f}\n"
            f"pairs (z + t-test): power {df.tp_base.sum() / df.n_pair.sum():.3f}, FDR {fdr(df.tp_base, df.fp_base):.3f}"
        )
    for name, p in pvals.items():
        p = np.asarray(p, dtype=float)
        p = p[np.isfinite(p)]
        print(
            f"null features, {name}: {p.size} p-values, fraction < 0.05: {np.mean(p < 0.05):.3f}, < 0.01: "
            f"{np.mean(p < 0.01):.3f}"
        )
    print(f"median compare() time {df.seconds.median():.2f} s; total {time.perf_counter() - t_all:.0f} s; {load()}")


def part_scale() -> None:
    print("\n## scale: 250,000 cells in 120 images, the whole `spatialmultiomics cohort` command")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = datasets.synthetic_cohort(n_patients=20, n_images=3, n_cells=2084, seed=0)
        csv = Path(tmp) / "cells.csv"
        data.cells.to_csv(csv, index=False)
        print(
            f"{len(data.cells):,} cells, {data.cells['sample'].nunique()} images written in "
            f"{time.perf_counter() - t0:.1f} s ({csv.stat().st_size / 1e6:.0f} MB)"
        )
        cmd = [
            sys.executable,
            "-m",
            "spatialmultiomics",
            "cohort",
            str(csv),
            "--label-key",
            "cell_type",
            "--sample-key",
            "sample",
            "--condition-key",
            "condition",
            "--patient-key",
            "patient",
            "--reference-condition",
            "control",
            "-o",
            str(Path(tmp) / "out"),
        ]
        before = load()
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        peak = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        print(proc.stdout.strip())
        print(
            f"wall {wall:.1f} s, peak RSS {int(peak) / 1e6 if peak.isdigit() else peak} GB; before: {before}; "
            f"after: {load()}; exit {proc.returncode}"
        )


def part_tnbc() -> None:
    from scipy import stats

    print("\n## MIBI TNBC (Keren 2018): compartmentalised (Class 1) vs mixed (Class 0), one image per patient")
    raw = pd.read_csv(TNBC_PHENO)
    raw["x"] = raw["cellx"] * 800 / 2048
    raw["y"] = raw["celly"] * 800 / 2048
    raw["condition"] = pd.Categorical(
        raw["Class"].map({0: "mixed", 1: "compartmentalised"}), categories=["mixed", "compartmentalised"]
    )
    raw["compartment"] = tnbc_compartment(raw["Phenotype"])
    for label in ("compartment", "Phenotype"):
        t0 = time.perf_counter()
        res = compare(raw, label_key=label, sample_key="Person", condition_key="condition", n_niches=0)
        sec = time.perf_counter() - t0
        d = res.differential_colocalization
        tum = d[(d["cell_type_a"] == "Tumor") | (d["cell_type_b"] == "Tumor")]
        partner = np.where(tum["cell_type_a"] == "Tumor", tum["cell_type_b"], tum["cell_type_a"])
        ti = tum[np.isin(partner, ["Immune", *TNBC_IMMUNE])]
        base = baseline_pairs(res)
        bt = base.merge(ti[PAIR], on=PAIR)
        print(f"labels {label!r}: {sec:.1f} s ({load()})")
        cols = [*PAIR, "effect", "ci_low", "ci_high", "p_value", "q_value", "n_samples", "n_not_estimable"]
        print(ti.sort_values("p_value")[cols].round(4).to_string(index=False))
        print(
            f"tumour-immune pairs: {int((ti['effect'] < 0).sum())} of {len(ti)} with effect < 0; "
            f"{int(((ti['q_value'] < 0.05) & (ti['effect'] < 0)).sum())} negative with q < 0.05, "
            f"{int(((ti['q_value'] < 0.05) & (ti['effect'] > 0)).sum())} positive with q < 0.05"
        )
        print(
            f"alternative (per-image z, t-test, BH): {int((bt['effect'] < 0).sum())} of {len(bt)} with lower z; "
            f"{int(((bt['q_value'] < 0.05) & (bt['effect'] < 0)).sum())} with q < 0.05; Tumor|Immune or "
            "median p: " + f"{bt['p_value'].median():.3g}"
        )
        if label == "compartment":
            z = res.sample_colocalization
            zi = z[(z["cell_type_a"] == "Immune") & (z["cell_type_b"] == "Tumor")]
            sizes = res.sample_table.set_index("sample").loc[zi["sample"], "n_cells"].to_numpy()
            r_z = stats.spearmanr(zi["z_score"], sizes).statistic
            r_le = stats.spearmanr(zi["log_enrichment"], sizes).statistic
            print(
                f"per-image Immune|Tumor vs cells in the image, Spearman: z-score {r_z:.2f}, log enrichment {r_le:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["synthetic", "null", "scale", "tnbc", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC | {platform.node()} | {os.cpu_count()} CPUs | "
        f"{load()} | Python {platform.python_version()}"
    )
    if args.part in ("synthetic", "all"):
        part_synthetic(args.seeds)
    if args.part in ("null", "all"):
        part_synthetic(args.seeds, null=True)
    if args.part in ("tnbc", "all"):
        part_tnbc()
    if args.part in ("scale", "all"):
        part_scale()


if __name__ == "__main__":
    main()
