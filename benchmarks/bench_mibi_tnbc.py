"""Co-localization on real data: MIBI-TOF triple-negative breast cancer (Keren et al., Cell 2018).

Data: ``../shared/data/mibi_tnbc_keren2018/TNBC_pheno.csv.gz`` (170,171 cells, 33 patients, one 800 µm FOV of
2048 x 2048 pixels each, so 0.390625 µm per pixel; 16 published cell types; ``Class`` is the paper's own
classification of each tumour: 0 = mixed, 1 = compartmentalised, cold tumours excluded; see SOURCE.txt).

What it computes, with the public API only:
  * the radius graph per patient (never across patients) and the per-patient and pooled (stratified) co-localization
    tables of the 16 types;
  * the same with the types merged into compartments (Tumor / Immune / Other), giving one tumour-immune
    effect size per patient, compared with the paper's mixed vs compartmentalised classes (Mann-Whitney AUC);
  * Keren's mixing score (immune-tumour edges / immune-immune edges) on the same graph, for reference.
Writes the heatmap ``benchmarks/figures/mibi_tnbc_colocalization.png``.

Run: ``.venv/bin/python benchmarks/bench_mibi_tnbc.py [--radius 50] [--data PATH]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _real_sets import TNBC_IMMUNE, TNBC_PHENO, tnbc_compartment

from spatialmultiomics import spatial
from spatialmultiomics.io import read_labelled_table

ROOT = Path(__file__).resolve().parents[1]
DATA = TNBC_PHENO
FIGURE = ROOT / "benchmarks" / "figures" / "mibi_tnbc_colocalization.png"
PIXEL_UM = 800.0 / 2048.0

ORDER = ["Tumor", "Mesenchymal", "Endothelial", "Other", *TNBC_IMMUNE]
CLASS_NAMES = {0: "mixed", 1: "compartmentalised"}


def auc(low: np.ndarray, high: np.ndarray) -> float:
    """P(value of a 'high' patient > value of a 'low' patient) (Mann-Whitney U / n1 n2; ties count 1/2)."""
    diff = np.asarray(high)[:, None] - np.asarray(low)[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def analyse(adata, radius: float, classes: pd.Series) -> dict:
    t0 = time.perf_counter()
    spatial.spatial_neighbors(adata, radius=radius)
    spatial.colocalization(adata, label_key="Phenotype", sample_key="fov")
    seconds = time.perf_counter() - t0
    table = spatial.colocalization_table(adata, label_key="Phenotype", by_sample=True)

    adata.obs["compartment"] = pd.Categorical(
        tnbc_compartment(adata.obs["Phenotype"]),
        categories=["Tumor", "Immune", "Other"],
    )
    spatial.colocalization(adata, label_key="compartment", sample_key="fov")
    coarse = spatial.colocalization_table(adata, label_key="compartment", by_sample=True).set_index(
        ["sample", "cell_type_pair"]
    )
    patients = [s for s in coarse.index.get_level_values(0).unique() if s != "pooled"]
    per_patient = pd.DataFrame(
        {
            "class": classes.reindex([int(p) for p in patients]).to_numpy(),
            "n_cells": adata.obs["fov"].value_counts().reindex(patients).to_numpy(),
            "tumour_immune_score": [coarse.loc[(p, "Tumor|Immune"), "jones_scornecchi_score"] for p in patients],
            "tumour_immune_z": [coarse.loc[(p, "Tumor|Immune"), "z_score"] for p in patients],
            "immune_immune_z": [coarse.loc[(p, "Immune|Immune"), "z_score"] for p in patients],
            "tumour_tumour_z": [coarse.loc[(p, "Tumor|Tumor"), "z_score"] for p in patients],
            "mixing_score": [
                coarse.loc[(p, "Immune|Tumor"), "observed"] / coarse.loc[(p, "Immune|Immune"), "observed"]
                for p in patients
            ],
        },
        index=pd.Index(patients, name="patient"),
    )
    return {
        "table": table,
        "coarse": coarse,
        "per_patient": per_patient,
        "seconds": seconds,
        "edges": int(adata.obsp["spatial_connectivities"].nnz),
    }


def report(res: dict, radius: float, n_cells: int) -> None:
    table, per = res["table"], res["per_patient"]
    pooled = table[table["sample"] == "pooled"].set_index("cell_type_pair")
    z = pooled.pivot_table(index="cell_type_a", columns="cell_type_b", values="z_score").loc[ORDER, ORDER]
    print(
        f"\nradius {radius:g} µm: {res['edges']:,} directed edges ({res['edges'] / n_cells:.1f} per cell); graph + "
        f"per-patient and pooled co-localization of 16 types in {res['seconds']:.2f} s"
    )
    print("pooled over 33 patients (null stratified by patient):")
    cols = ["observed", "expected", "jones_scornecchi_score", "z_score"]
    print(
        pooled.loc[
            ["Tumor|Tumor", "B|B", "CD8T|CD4T", "B|CD4T", "Macrophage|Tumor", "CD8T|Tumor", "Tumor|Mesenchymal"], cols
        ]
        .round(2)
        .to_string()
    )
    ii = z.loc[list(TNBC_IMMUNE), list(TNBC_IMMUNE)].to_numpy()
    ti = z.loc["Tumor", list(TNBC_IMMUNE)].to_numpy()
    print(
        f"immune-immune pairs ({ii.size}): {np.mean(ii > 0):.0%} with z > 0, median z {np.median(ii):.1f}; "
        f"tumour-immune pairs ({ti.size}): {np.mean(ti < 0):.0%} with z < 0, median z {np.median(ti):.1f}"
    )
    per_type = table[(table["sample"] != "pooled") & (table["cell_type_pair"] == "Tumor|Tumor")]
    print(
        f"Tumor|Tumor per patient: z > 10 in {int((per_type['z_score'] > 10).sum())} of {len(per_type)} patients "
        f"(min z {per_type['z_score'].min():.1f})"
    )
    print("per patient, by the paper's class (median [min, max]):")
    rows = []
    for col in ("tumour_immune_score", "tumour_immune_z", "mixing_score"):
        mixed, comp = per.loc[per["class"] == 0, col], per.loc[per["class"] == 1, col]
        rows.append(
            (
                col,
                f"{mixed.median():.3f} [{mixed.min():.3f}, {mixed.max():.3f}]",
                f"{comp.median():.3f} [{comp.min():.3f}, {comp.max():.3f}]",
                auc(comp, mixed),
            )
        )
    print(f"{'statistic':<22} {'mixed (n=18)':>28} {'compartmentalised (n=15)':>28} {'AUC mixed > comp.':>18}")
    for name, m, c, a in rows:
        print(f"{name:<22} {m:>28} {c:>28} {a:>18.3f}")


def heatmap(res: dict, radius: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, per = res["table"], res["per_patient"]
    pooled = table[table["sample"] == "pooled"]
    z = pooled.pivot_table(index="cell_type_a", columns="cell_type_b", values="z_score").loc[ORDER, ORDER]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 6.6), gridspec_kw={"width_ratios": [1.45, 1]})
    lim = 100.0
    im = ax.imshow(np.clip(z.to_numpy(), -lim, lim), cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(ORDER)), ORDER, rotation=90)
    ax.set_yticks(range(len(ORDER)), ORDER)
    for i in range(len(ORDER)):
        for j in range(len(ORDER)):
            v = z.iat[i, j]
            ax.text(
                j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if abs(v) > 0.6 * lim else "black"
            )
    ax.axhline(3.5, color="k", lw=0.8)
    ax.axvline(3.5, color="k", lw=0.8)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"exact join-count z (clipped at ±{lim:.0f})")
    ax.set_title(f"MIBI TNBC, 33 patients pooled (stratified), radius {radius:g} µm")

    for k, (cls, name) in enumerate(CLASS_NAMES.items()):
        vals = per.loc[per["class"] == cls, "tumour_immune_score"].to_numpy()
        jitter = np.random.default_rng(k).uniform(-0.12, 0.12, vals.size)
        ax2.scatter(
            np.full(vals.size, k) + jitter,
            vals,
            s=14 + per.loc[per["class"] == cls, "n_cells"] / 250,
            alpha=0.75,
            label=f"{name} (n={vals.size})",
        )
        ax2.hlines(np.median(vals), k - 0.3, k + 0.3, color="k")
    ax2.axhline(0, color="grey", lw=0.8, ls="--")
    ax2.set_xticks([0, 1], ["mixed\n(Keren class 0)", "compartmentalised\n(Keren class 1)"])
    ax2.set_ylabel("tumour-immune score (observed / expected - 1)")
    comp = per.loc[per["class"] == 1, "tumour_immune_score"]
    mixed = per.loc[per["class"] == 0, "tumour_immune_score"]
    ax2.set_title(f"per patient: AUC {auc(comp, mixed):.2f} (size ~ cells)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--radius", type=float, default=50.0)
    parser.add_argument("--also-radius", type=float, default=25.0, help="a second radius for the class comparison")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{datetime.date.today()} | {platform.node()} | {os.cpu_count()} CPUs | load avg {load[0]:.2f} | "
        f"Python {platform.python_version()}"
    )
    t0 = time.perf_counter()
    adata = read_labelled_table(
        args.data, label_key="Phenotype", x="cellx", y="celly", fov_key="Person", pixel_size_um=PIXEL_UM
    )
    raw = pd.read_csv(args.data, usecols=["Person", "Class"])
    classes = raw.groupby("Person")["Class"].first()
    print(
        f"read {adata.n_obs:,} cells, {adata.obs['fov'].nunique()} patients, "
        f"{adata.obs['Phenotype'].nunique()} types in {time.perf_counter() - t0:.2f} s; coordinates "
        f"{adata.obsm['spatial'].min():.1f}..{adata.obsm['spatial'].max():.1f} µm"
    )
    res = analyse(adata, args.radius, classes)
    report(res, args.radius, adata.n_obs)
    heatmap(res, args.radius, args.figure)
    print(f"heatmap: {args.figure}")
    if args.also_radius:
        report(analyse(adata, args.also_radius, classes), args.also_radius, adata.n_obs)


if __name__ == "__main__":
    main()
