"""Cell-type accuracy of the whole pipeline on built-in data with known truth (issue: the paper's pipeline).

Side by side in one process, on the same data:
  * ours, default annotation (``annotation_method='cluster'``), and the factor naming (``'auto'``),
  * ours with the seed's rule (``annotation_method='paper'``),
  * the seed's own skill-file method with its crashes fixed (min-max scaling, sklearn NMF ``nndsvd`` on the
    stacked blocks, each factor named by the Pearson correlation of its activity with the mean of each type's
    marker genes, no ``abs``), re-written here from the description in ``../shared/seed`` as the peer.

Run: ``.venv/bin/python benchmarks/bench_annotation.py [--seeds 20] [--tissue-cells 5000]``
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.decomposition import NMF
from sklearn.metrics import f1_score

import spatialmultiomics as smo
from spatialmultiomics._demo import score_labels


def seed_method(mdata, n_factors: int) -> pd.Series:
    """The seed skill file's pipeline, crash fixes only (hstack instead of vstack, best_corr from -inf)."""

    def minmax(X):
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        return (X - X.min(0)) / (X.max(0) - X.min(0) + 1e-10)

    rna, prot = minmax(mdata["rna"].X), minmax(mdata["protein"].X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W = NMF(n_components=n_factors, init="nndsvd", max_iter=500, random_state=42).fit_transform(
            np.hstack([rna, prot])
        )
    genes = list(mdata["rna"].var_names)
    markers = mdata.uns["markers"]
    names = []
    for k in range(n_factors):
        best, best_r = "Unknown", -np.inf
        for ct, m in markers.items():
            idx = [genes.index(g) for g in m["genes"] if g in genes]
            if idx:
                r = np.corrcoef(W[:, k], rna[:, idx].mean(1))[0, 1]
                if np.isfinite(r) and r > best_r:
                    best, best_r = ct, r
        names.append(best)
    return pd.Series(np.array(names)[W.argmax(1)], index=mdata.obs_names)


def run_ours(mdata, n_factors: int, method: str, seed: int = 0):
    t0 = time.perf_counter()
    res = smo.run_pipeline(
        mdata["rna"],
        mdata["protein"],
        n_factors=n_factors,
        markers=dict(mdata.uns["markers"]),
        annotation_method=method,
        seed=seed,
    )
    return res.shared_labels.set_index("cell_id")["cell_type"], time.perf_counter() - t0


def per_type_f1(truth: pd.Series, pred: pd.Series) -> pd.Series:
    labels = sorted(truth.unique())
    return pd.Series(
        f1_score(truth, pred.reindex(truth.index), labels=labels, average=None, zero_division=0), index=labels
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--tissue-cells", type=int, default=5000)
    ap.add_argument("--tissue-factors", type=int, default=20)
    args = ap.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.processor() or platform.machine()}, "
        f"spatialmultiomics {smo.__version__}"
    )

    print(f"\n## Paper benchmark (Section 3.1), {args.seeds} seeds, n_factors=4, its markers")
    rows = []
    for seed in range(args.seeds):
        mdata = smo.datasets.paper_benchmark(seed=seed)
        truth = mdata.obs["true_cell_type"].astype(str)
        row = {"seed": seed}
        for method in ("cluster", "auto", "paper"):
            pred, secs = run_ours(mdata, 4, method)
            row[f"acc_{method}"] = score_labels(truth, pred)["accuracy"]
            row[f"s_{method}"] = secs
        row["acc_seed_code"] = score_labels(truth, seed_method(mdata, 4))["accuracy"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"min accuracy: ours(default, cluster) {frame.acc_cluster.min():.3f}, ours(auto) {frame.acc_auto.min():.3f}, "
        f"ours(paper rule) {frame.acc_paper.min():.3f}, seed code {frame.acc_seed_code.min():.3f}; "
        f"median end-to-end seconds (default) {frame.s_cluster.median():.3f}"
    )

    print(f"\n## Hard synthetic tissue, {args.tissue_cells} cells, n_factors={args.tissue_factors}")
    mdata = smo.datasets.synthetic_tissue(n_cells=args.tissue_cells, seed=0)
    truth = mdata.obs["true_cell_type"].astype(str)
    n_types = truth.nunique()
    table = {}
    for name, (pred, secs) in {
        "ours_default_cluster": run_ours(mdata, args.tissue_factors, "cluster"),
        "ours_auto": run_ours(mdata, args.tissue_factors, "auto"),
        "ours_paper_rule_k=types": run_ours(mdata, n_types, "paper"),
        "ours_paper_rule_k=factors": run_ours(mdata, args.tissue_factors, "paper"),
        "seed_code_k=types": (seed_method(mdata, n_types), float("nan")),
    }.items():
        s = score_labels(truth, pred)
        f1 = per_type_f1(truth, pred)
        table[name] = {**s, "seconds": secs, "types_predicted": int((f1 > 0).sum()), **f1.round(3).to_dict()}
    out = pd.DataFrame(table)
    print(
        f"{n_types} types; fractions: "
        + ", ".join(f"{k} {v:.3f}" for k, v in truth.value_counts(normalize=True).items())
    )
    print(out.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
