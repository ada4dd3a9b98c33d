"""Cell types that hold on real tissue (issue 8): automatic k, rare types, calibration, one modality, real data.

Sections (all by default; pick with ``--only``):

``tissue``
    The hard synthetic tissue (``smo.datasets.synthetic_tissue``, 5,000 cells, 12 types, five rare at 2.5-3 %)
    through ``run_pipeline(n_factors='auto')`` with the tissue's own marker reference: chosen k, time of the k
    scan, macro-F1, per-type F1 (rare types), every type predicted; the seed's rule at the same k for comparison.
``calibration``
    Refits the logistic calibration of the confidence on seeds 0-2 (k = 8, 12, 20; gene + protein, gene-only and
    protein-only markers) and prints its reliability on held-out seeds 3-4, with the shipped coefficients
    (``smo.annotate._score.CONFIDENCE_COEF``) and with the refitted ones.
``one_modality``
    ``paper_benchmark`` protein-only and RNA-only runs of the whole pipeline over seeds (accuracy).
``cycif``
    Real CyCIF (MCMICRO exemplar-001, 11,201 cells, scimap's gating reference): protein-only run with a marker
    reference written for the panel (scimap's phenotype workflow as flat marker lists) and with the built-in
    ``immune_tme`` reference; confusion against scimap's phenotypes and per-type agreement.
``citeseq``
    Real ECCITE-seq PBMCs (500 cells, RNA + 49 ADT, no labels, non-spatial: cells placed on a 20 µm grid): joint
    run with automatic k and the built-in reference; factor -> top genes / top proteins; cross-modality check
    (cell types called from RNA markers only vs the ADT levels of their canonical proteins).

Run: ``.venv/bin/python benchmarks/bench_real_data.py [--only tissue,cycif] [--seeds 0,1,2]``. Data are read from
``../shared/data`` (override with ``SMO_SHARED_DATA``). Tables print as Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

import spatialmultiomics as smo

DATA = Path(os.environ.get("SMO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CYCIF = DATA / "cycif_mcmicro_exemplar001_scimap"
CITESEQ = DATA / "citeseq_eccite_citefuse"
RARE = ("Tregs", "Plasma cells", "NK cells", "Dendritic cells", "Neutrophils")

#: a marker reference for the CyCIF exemplar's 9-marker panel, written from scimap's phenotype workflow
#: (``phenotype_workflow.csv``): ECAD+, SMA+, Immune (CD45+), and within CD45+ cells Treg (FOXP3+), other myeloid
#: (CD11B+) and NK cells (CD57+ CD16+). Negative markers (NK: CD11B-, DC: CD57- CD16-) cannot be written in a
#: marker list; scimap's dendritic cells (myeloid, CD57- CD16-) are compared with our myeloid cells.
CYCIF_PANEL = {
    "Epithelial": {"proteins": ["ECAD"]},
    "Stromal (SMA+)": {"proteins": ["SMA"]},
    "Immune": {"proteins": ["CD45"]},
    "Tregs": {"proteins": ["CD45", "FOXP3"]},
    "Myeloid": {"proteins": ["CD45", "CD11B"]},
    "NK cells": {"proteins": ["CD45", "CD57", "CD16"]},
}
#: scimap phenotype -> the type of CYCIF_PANEL it corresponds to
SCIMAP_TO_PANEL = {
    "ECAD+": "Epithelial",
    "SMA+": "Stromal (SMA+)",
    "Immune": "Immune",
    "Treg": "Tregs",
    "Other myeloid cells": "Myeloid",
    "Dendritic cells": "Myeloid",
    "NK cells": "NK cells",
    "Unknown": "Unknown",
}
#: scimap phenotype -> the immune_tme types that correspond to it (the built-in reference has no CD45-only type)
SCIMAP_TO_BUILTIN = {
    "ECAD+": ("Epithelial",),
    "SMA+": ("Smooth muscle", "Fibroblasts", "Pericytes"),
    "Treg": ("Tregs",),
    "Other myeloid cells": ("Monocytes", "Macrophages", "Neutrophils", "Dendritic cells"),
    "Dendritic cells": ("Monocytes", "Macrophages", "Neutrophils", "Dendritic cells"),
    "NK cells": ("NK cells",),
    "Unknown": ("Unknown",),
}


def md_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A DataFrame as a Markdown table (index included); floats with ``floatfmt``, None / NaN as "–", other values
    as text."""

    def fmt(v: object) -> str:
        if v is None or (isinstance(v, float | np.floating) and np.isnan(v)):
            return "–"
        if isinstance(v, bool | np.bool_):
            return str(bool(v))
        if isinstance(v, float | np.floating):
            return format(float(v), floatfmt)
        return str(v)

    cols = [str(frame.index.name or ""), *map(str, frame.columns)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for idx, *values in frame.itertuples(index=True, name=None):
        lines.append("| " + " | ".join([fmt(idx), *map(fmt, values)]) + " |")
    return "\n".join(lines)


def per_type_f1(truth: np.ndarray, pred: np.ndarray, labels: list[str]) -> pd.Series:
    return pd.Series(f1_score(truth, pred, labels=labels, average=None, zero_division=0), index=labels)


# --------------------------------------------------------------------------------------------------- tissue
def section_tissue(seeds: list[int]) -> None:
    print("\n## Hard synthetic tissue, k chosen automatically (5,000 cells, 12 types)\n")
    rows, f1s = [], {}
    for seed in seeds:
        mdata = smo.datasets.synthetic_tissue(seed=seed)
        truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
        labels = sorted(set(truth))
        markers = dict(mdata.uns["markers"])
        t0 = time.perf_counter()
        res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors="auto", markers=markers, seed=seed)
        secs = time.perf_counter() - t0
        sel = res.mdata.uns["nmf"]["k_selection"]
        k = int(sel["k"])
        pred = res.shared_labels.set_index("cell_id")["cell_type"].reindex(mdata.obs_names).astype(str).to_numpy()
        f1 = per_type_f1(truth, pred, labels)
        paper = smo.run_pipeline(
            mdata["rna"], mdata["protein"], n_factors=k, markers=markers, seed=seed, annotation_method="paper"
        )
        ppred = paper.shared_labels.set_index("cell_id")["cell_type"].reindex(mdata.obs_names).astype(str)
        pf1 = per_type_f1(truth, ppred.to_numpy(), labels)
        f1s[f"seed {seed}"] = f1
        rows.append(
            {
                "seed": seed,
                "k": k,
                "k scan (s)": res.timings["factorize"],
                "pipeline (s)": secs,
                "macro-F1": f1.mean(),
                "min rare F1": f1[list(RARE)].min(),
                "types predicted": f"{len(set(pred) & set(labels))}/{len(labels)}",
                "Unknown": float(np.mean(pred == "Unknown")),
                "paper rule macro-F1": pf1.mean(),
                "paper rule types": f"{int((pf1 > 0).sum())}/{len(labels)}",
            }
        )
        print(f"seed {seed}: {sel['reason']}")
        curve = pd.DataFrame(
            {"k": sel["k_grid"], "stability": sel["stability"], "error": sel["error"], "stable": sel["stable"]}
        ).set_index("k")
        print(md_table(curve.T))
        print()
    print(md_table(pd.DataFrame(rows).set_index("seed")))
    print("\nPer-type F1 (rare types marked *):\n")
    table = pd.DataFrame(f1s)
    table.index = [f"{t} *" if t in RARE else t for t in table.index]
    print(md_table(table))


# ---------------------------------------------------------------------------------------------- calibration
def _calibration_rows(seeds: list[int]) -> pd.DataFrame:
    """Per-cell evidence features and correctness on the synthetic tissue, several k and marker sets."""
    import spatialmultiomics.annotate._assign as assign_mod
    import spatialmultiomics.annotate._score as score_mod

    captured: dict[str, np.ndarray] = {}
    original = score_mod.call_types

    def capturing(scores, **kwargs):
        codes, conf, E = original(scores, **kwargs)
        S = np.asarray(scores)
        n = S.shape[0]
        best = S.argmax(axis=1)
        rows_ = np.arange(n)
        other = E.copy()
        other[rows_, best] = -np.inf
        captured["x"] = np.c_[E[rows_, best], other.max(axis=1), score_mod.background_zscore(S, best), conf]
        return codes, conf, E

    frames = []
    assign_mod.call_types = capturing
    try:
        for seed in seeds:
            base = smo.datasets.synthetic_tissue(seed=seed)
            smo.pp.preprocess(base)
            truth = base.obs["true_cell_type"].astype(str).to_numpy()
            full = dict(base.uns["markers"])
            sets = {
                "genes+proteins": full,
                "genes only": {t: {"genes": v["genes"]} for t, v in full.items()},
                "proteins only": {t: {"proteins": v["proteins"]} for t, v in full.items()},
            }
            for k in (8, 12, 20):
                mdata = base.copy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    smo.factorize.joint_nmf(mdata, n_components=k, seed=seed)
                for name, markers in sets.items():
                    res = smo.annotate.annotate(mdata, markers=markers, inplace=False)
                    pred = res.cell_type.astype(str).to_numpy()
                    frame = pd.DataFrame(captured["x"], columns=["e_best", "e_runner_up", "z", "confidence"])
                    frame["called"] = pred != "Unknown"
                    frame["correct"] = pred == truth
                    frame["set"], frame["k"], frame["seed"] = name, k, seed
                    frames.append(frame)
    finally:
        assign_mod.call_types = original
    return pd.concat(frames, ignore_index=True)


def _features(frame: pd.DataFrame) -> np.ndarray:
    return np.c_[
        frame.e_best.clip(0, 1.5).to_numpy(), frame.e_runner_up.clip(0, 1.5).to_numpy(), frame.z.clip(0, 20).to_numpy()
    ]


def reliability(conf: np.ndarray, correct: np.ndarray) -> tuple[pd.DataFrame, float]:
    """Fraction correct per confidence bin and the expected calibration error."""
    bins = np.array([0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0001])
    which = np.digitize(conf, bins) - 1
    rows = []
    for b in range(len(bins) - 1):
        sel = which == b
        if sel.any():
            rows.append(
                {
                    "confidence": f"[{bins[b]:.2f}, {min(bins[b + 1], 1):.2f})",
                    "cells": int(sel.sum()),
                    "mean confidence": float(conf[sel].mean()),
                    "fraction correct": float(correct[sel].mean()),
                }
            )
    table = pd.DataFrame(rows).set_index("confidence")
    ece = float((table.cells * (table["mean confidence"] - table["fraction correct"]).abs()).sum() / table.cells.sum())
    return table, ece


def section_calibration() -> None:
    from sklearn.linear_model import LogisticRegression

    from spatialmultiomics.annotate._score import CONFIDENCE_COEF, calibrated_confidence

    print("\n## Confidence calibration (synthetic tissue; fit on seeds 0-2, checked on seeds 3-4)\n")
    train = _calibration_rows([0, 1, 2])
    test = _calibration_rows([3, 4])
    tr = train[train.called]
    model = LogisticRegression(C=10.0, max_iter=1000).fit(_features(tr), tr.correct)
    coef = (float(model.intercept_[0]), *map(float, model.coef_[0]))
    print(f"refitted coefficients (b0, e_best, e_runner_up, z): {tuple(round(c, 3) for c in coef)}")
    print(f"shipped coefficients:                               {CONFIDENCE_COEF}\n")
    te = test[test.called]
    shipped = calibrated_confidence(te.e_best.to_numpy(), te.e_runner_up.to_numpy(), te.z.to_numpy())
    table, ece = reliability(shipped, te.correct.to_numpy())
    print(f"held-out seeds 3-4, shipped coefficients, all marker sets: ECE {ece:.4f}\n")
    print(md_table(table))
    for name, part in te.groupby("set"):
        conf = calibrated_confidence(part.e_best.to_numpy(), part.e_runner_up.to_numpy(), part.z.to_numpy())
        _, e = reliability(conf, part.correct.to_numpy())
        print(
            f"\n{name}: accuracy of called cells {part.correct.mean():.3f}, mean confidence {conf.mean():.3f}, ECE {e:.4f}"
        )
    mdata = smo.datasets.paper_benchmark(seed=0, n_cells=2000)
    smo.pp.preprocess(mdata)
    smo.factorize.joint_nmf(mdata, n_components=4)
    res = smo.annotate.annotate(mdata, markers=dict(mdata.uns["markers"]), inplace=False)
    called = res.cell_type.astype(str).to_numpy() != "Unknown"
    correct = res.cell_type.astype(str).to_numpy() == mdata.obs["true_cell_type"].astype(str).to_numpy()
    _, e = reliability(res.confidence[called], correct[called])
    print(
        f"\npaper_benchmark (2,000 cells, another generator): accuracy {correct[called].mean():.3f}, "
        f"mean confidence {res.confidence[called].mean():.3f}, ECE {e:.4f}"
    )


# -------------------------------------------------------------------------------------------- one modality
def section_one_modality(n_seeds: int = 10) -> None:
    print(f"\n## One modality: paper_benchmark, {n_seeds} seeds, k = 4 and k = auto\n")
    rows = []
    for seed in range(n_seeds):
        mdata = smo.datasets.paper_benchmark(seed=seed)
        truth = mdata.obs["true_cell_type"].astype(str)
        markers = dict(mdata.uns["markers"])
        row = {"seed": seed}
        for name, kwargs in (
            ("protein only", {"protein_path": mdata["protein"]}),
            ("RNA only", {"transcript_path": mdata["rna"]}),
            ("both", {"transcript_path": mdata["rna"], "protein_path": mdata["protein"]}),
        ):
            for k in (4, "auto"):
                res = smo.run_pipeline(**kwargs, n_factors=k, markers=markers, seed=seed)
                pred = res.shared_labels.set_index("cell_id")["cell_type"].reindex(truth.index).astype(str)
                row[f"{name}, k={k}"] = float(np.mean(pred.to_numpy() == truth.to_numpy()))
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("seed")
    print(md_table(frame))
    print("\nminimum over seeds: " + ", ".join(f"{c} {frame[c].min():.3f}" for c in frame.columns))


# --------------------------------------------------------------------------------------------------- CyCIF
def read_cycif():
    """The exemplar through the CyCIF reader, nuclear stains (DNA_*) dropped; scimap's reference table."""
    adata = smo.io.read(CYCIF / "exemplar-001--unmicst_cell.csv", "cycif")
    keep = [v for v in adata.var_names if not str(v).upper().startswith("DNA")]
    adata = adata[:, keep].copy()
    ref = pd.read_csv(CYCIF / "scimap_reference_rescaled_and_phenotypes.csv.gz")
    ref.index = ref["CellID"].astype(str)
    return adata, ref.reindex(adata.obs_names)


def agreement_table(reference: pd.Series, called: pd.Series, mapping: dict[str, tuple[str, ...] | str]) -> pd.DataFrame:
    """Per reference phenotype: cells, fraction called a corresponding type, and precision of those types."""
    rows = []
    for ph, n in reference.value_counts().items():
        targets = mapping.get(ph, ())
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        hit = called.isin(targets)
        recall = float((hit & (reference == ph)).sum() / n)
        same_target = reference.map(lambda p, t=targets: bool(set(np.atleast_1d(mapping.get(p, ()))) & set(t)))
        precision = float((hit & same_target).sum() / hit.sum()) if hit.any() else float("nan")
        rows.append(
            {
                "scimap phenotype": ph,
                "cells": int(n),
                "our type(s)": ", ".join(targets) or "-",
                "recall": recall,
                "precision": precision,
            }
        )
    return pd.DataFrame(rows).set_index("scimap phenotype")


def section_cycif() -> None:
    print("\n## Real CyCIF (MCMICRO exemplar-001, protein only) vs scimap's gating phenotypes\n")
    adata, ref = read_cycif()
    reference = ref["phenotype"].astype(str)
    for name, markers, mapping in (
        ("panel reference (scimap's workflow as marker lists)", CYCIF_PANEL, SCIMAP_TO_PANEL),
        ("built-in immune_tme reference", None, SCIMAP_TO_BUILTIN),
    ):
        t0 = time.perf_counter()
        res = smo.run_pipeline(protein_path=adata, platform_prot="CyCIF", n_factors="auto", markers=markers)
        secs = time.perf_counter() - t0
        called = res.shared_labels.set_index("cell_id")["cell_type"].reindex(adata.obs_names).astype(str)
        sel = res.mdata.uns["nmf"]["k_selection"]
        table = agreement_table(reference, called, mapping)
        mapped = reference.map(lambda p, m=mapping: np.atleast_1d(m.get(p, ("-",))))
        agree = float(np.mean([c in m for c, m in zip(called, mapped, strict=True)]))
        print(f"### {name}\n")
        print(f"{adata.n_obs} cells x {adata.n_vars} markers, {secs:.1f} s, {sel['reason']}")
        print(f"overall agreement (scimap phenotype -> corresponding type, Unknown = Unknown): {agree:.3f}\n")
        print(md_table(table))
        print("\nConfusion (rows: scimap, columns: ours):\n")
        print(md_table(pd.crosstab(reference.rename("scimap"), called.rename("ours"))))
        print("\nFactors:\n")
        print(md_table(res.factor_annotation.set_index("factor")[["cell_type", "score", "n_cells", "top_proteins"]]))
        print()


# ------------------------------------------------------------------------------------------------- CITE-seq
def read_citeseq():
    """RNA (MatrixMarket, genes x cells) and ADT (CSV, antibodies x cells) as AnnData on a dummy 20 µm grid."""
    import anndata as ad
    import scipy.io

    X = scipy.io.mmread(CITESEQ / "RNA_counts.mtx.gz").T.tocsr().astype(np.float32)
    genes = pd.read_csv(CITESEQ / "RNA_genes.tsv.gz", header=None)[0].astype(str).tolist()
    barcodes = pd.read_csv(CITESEQ / "barcodes.tsv.gz", header=None)[0].astype(str).tolist()
    adt = pd.read_csv(CITESEQ / "ADT_counts.csv.gz", index_col=0).T
    adt.columns = adt.columns.astype(str)
    rna = ad.AnnData(X, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=pd.Index(genes)))
    prot = ad.AnnData(
        adt.loc[barcodes].to_numpy(np.float32), obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=adt.columns)
    )
    side = int(np.ceil(np.sqrt(len(barcodes))))
    xy = np.stack([np.arange(len(barcodes)) % side, np.arange(len(barcodes)) // side], axis=1) * 20.0
    for a in (rna, prot):
        a.obsm["spatial"] = xy.astype(np.float64)
    return rna, prot


#: canonical ADT of each PBMC population (names as in the panel)
PBMC_PROTEINS = {
    "CD4 T cells": ["CD3", "CD4"],
    "CD8 T cells": ["CD3", "CD8"],
    "NK cells": ["CD56", "CD16"],
    "B cells": ["CD19", "MHCII (HLA-DR)"],
    "Monocytes": ["CD14", "CD11b"],
}


def section_citeseq() -> None:
    print("\n## Real ECCITE-seq PBMCs (RNA + 49 ADT, 500 cells; non-spatial: dummy 20 µm grid)\n")
    rna, prot = read_citeseq()
    t0 = time.perf_counter()
    res = smo.run_pipeline(rna, prot, n_factors="auto")
    secs = time.perf_counter() - t0
    sel = res.mdata.uns["nmf"]["k_selection"]
    print(f"{rna.n_obs} cells, {rna.n_vars} genes, {prot.n_vars} ADT; {secs:.1f} s; {sel['reason']}\n")
    table = res.factor_annotation.set_index("factor")[["cell_type", "score", "n_cells", "top_genes", "top_proteins"]]
    table["top_genes"] = table["top_genes"].str.replace("hg19_", "", regex=False)
    print(md_table(table))
    print("\nCells per type (joint annotation):", res.shared_labels.cell_type.value_counts().to_dict())
    # cross-modality check: types called from RNA markers only, against the ADT levels of their canonical proteins
    mdata = res.mdata
    ref = smo.annotate.builtin_markers()
    rna_only = {t: {"genes": list(ref.get(t, "rna"))} for t in ref.types}
    calls = smo.annotate.annotate(mdata, markers=rna_only, inplace=False).cell_type.astype(str)
    joint = res.shared_labels.set_index("cell_id")["cell_type"].reindex(mdata.obs_names).astype(str)
    adt = pd.DataFrame(np.arcsinh(np.asarray(prot.X) / 5.0), index=prot.obs_names, columns=prot.var_names)
    for title, labels in (("joint calls (RNA + ADT markers)", joint), ("calls from RNA markers only", calls)):
        rows = []
        for t, proteins in PBMC_PROTEINS.items():
            inside = labels.to_numpy() == t
            row = {"type": t, "cells": int(inside.sum())}
            for p in proteins:
                row[p] = (
                    f"{adt.loc[inside, p].median():.2f} vs {adt.loc[~inside, p].median():.2f}" if inside.any() else ""
                )
            rows.append(row)
        print(f"\n{title} vs ADT (median arcsinh(ADT/5) inside vs outside the type):\n")
        print(md_table(pd.DataFrame(rows).set_index("type").fillna("")))
    adt_only = {t: {"proteins": list(ref.get(t, "protein"))} for t in ref.types}
    pcalls = smo.annotate.annotate(mdata, markers=adt_only, inplace=False).cell_type.astype(str)
    print("\nCalls from RNA markers only (rows) vs ADT markers only (columns):\n")
    print(md_table(pd.crosstab(calls.rename("RNA only"), pcalls.rename("ADT only"))))
    same = float(np.mean(calls.to_numpy() == pcalls.to_numpy()))
    print(
        f"\nRNA-only and ADT-only calls agree on {same:.3f} of the cells; joint vs RNA-only "
        f"{np.mean(joint.to_numpy() == calls.to_numpy()):.3f}, joint vs ADT-only "
        f"{np.mean(joint.to_numpy() == pcalls.to_numpy()):.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="tissue,calibration,one_modality,cycif,citeseq")
    ap.add_argument("--seeds", default="0,1,2", help="synthetic tissue seeds")
    args = ap.parse_args()
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    print(
        f"# bench_real_data {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores, spatialmultiomics {smo.__version__}"
    )
    if "tissue" in sections:
        section_tissue([int(s) for s in args.seeds.split(",")])
    if "calibration" in sections:
        section_calibration()
    if "one_modality" in sections:
        section_one_modality()
    if "cycif" in sections:
        if CYCIF.is_dir():
            section_cycif()
        else:
            print(f"\n(skipped CyCIF: {CYCIF} not found)")
    if "citeseq" in sections:
        if CITESEQ.is_dir():
            section_citeseq()
        else:
            print(f"\n(skipped CITE-seq: {CITESEQ} not found)")


if __name__ == "__main__":
    main()
