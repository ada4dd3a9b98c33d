"""Cell types on real labelled tissue: our pipeline's defaults vs the clustering a user would run.

On every labelled real set in ``../shared/data`` (loaders and label maps in ``benchmarks/_real_sets.py``), side by
side on the same cells:

``smo <method>``
    ``smo.run_pipeline(protein_path=adata, platform_prot=..., n_factors='auto', annotation_method=<method>)`` with
    the built-in marker reference (``markers=None``); one row per ``--methods`` entry (a method the installed
    package does not accept is skipped with a note). ``--extra-kwargs '{"protein_transform": "log1p"}'`` passes
    further options to every one of these runs.
``scanpy Leiden``
    the platform's standard transform (imaging: ``arcsinh(x / 5)``, ADT counts: CLR as muon's ``prot.pp.clr``, i.e.
    per antibody across cells), the non-marker channels the pipeline also drops (DNA, DAPI, autofluorescence,
    mass channels: ``smo.pp.non_marker_channels``) left out, ``sc.pp.scale``, ``sc.pp.neighbors`` with its defaults
    (15 neighbours, exact kNN; on the scaled channels, as scanpy does below 50 variables; PCA above), ``sc.tl.leiden``
    (``flavor='igraph', n_iterations=2, directed=False``: scanpy's announced default) at resolution 1.0 (its default),
    0.3, and the best of ``--grid`` (ARI and macro-F1 each maximised over the grid against the reference: an
    oracle choice no user has).
``KMeans``
    scikit-learn ``KMeans(k = number of reference labels, n_init=10, random_state=0)`` on the same matrix.

Scores, on the cells the reference names (``None`` in a set's map = not scored):

* **ARI** against the reference's own labels (no mapping);
* **named-type macro-F1** over the reference's lineages with >= 5 cells (``OTHER`` = "none of the named types" is
  not averaged, but a named call on such a cell is a false positive): our types are mapped by the set's explicit
  map, clusters by majority vote onto the reference lineage (best-mapped, again an advantage of the peers);
* **macro-F1 best-mapped**: our labels majority-mapped like clusters (how good the partition is, names aside);
* **Unknown** share of our calls (clusters call every cell); cells; wall time in seconds (after a warm-up that
  compiles numba code on both sides; the peers' time includes the transform and the neighbour graph).

Run: ``.venv/bin/python benchmarks/bench_real_annotation.py [--sets cycif,vectra,eccite,ark]
[--methods auto,cluster] [--extra-kwargs JSON] [--tag NAME]``. Writes ``benchmarks/results/real_annotation[_TAG].json``
and ``benchmarks/figures/real_annotation[_TAG].png``. Needs scanpy + igraph (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, f1_score
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _real_sets as rsets
from bench_real_data import md_table

import spatialmultiomics as smo

HERE = Path(__file__).resolve().parent
MIN_CELLS = 5  #: a reference lineage enters the macro-F1 with at least this many scored cells
COFACTOR = 5.0  #: arcsinh cofactor of the peers' imaging transform (the pipeline's own default too)


# ---------------------------------------------------------------------------------------------------- scoring
def f1_labels(ref_lin: pd.Series) -> list[str]:
    counts = ref_lin.value_counts()
    return sorted(str(k) for k, n in counts.items() if k != rsets.OTHER and n >= MIN_CELLS)


def majority_map(clusters: pd.Series, ref_lin: pd.Series) -> pd.Series:
    """Each cluster -> the most frequent reference lineage among its (scored) cells."""
    best = pd.crosstab(clusters, ref_lin).idxmax(axis=1)
    return clusters.map(best)


def score(ref: pd.Series, ref_lin: pd.Series, pred: pd.Series, pred_lin: pd.Series) -> dict:
    """ARI on the raw labels, macro-F1 and per-lineage F1 on the lineages; all on the scored cells."""
    labels = f1_labels(ref_lin)
    per = f1_score(ref_lin, pred_lin, labels=labels, average=None, zero_division=0)
    return {
        "ARI": float(adjusted_rand_score(ref.to_numpy(), pred.astype(str).to_numpy())),
        "macro-F1": float(np.mean(per)),
        "macro-F1 best-mapped": float(np.mean(per)),  # the same for clusters; ours overwrite it
        "per-lineage F1": {lab: round(float(v), 4) for lab, v in zip(labels, per, strict=True)},
        "n predicted labels": int(pred.nunique()),
    }


# ------------------------------------------------------------------------------------------------------- ours
class MethodNotAccepted(Exception):
    pass


def run_ours(rs: rsets.RealSet, method: str, extra: dict) -> tuple[pd.Series, float, dict]:
    t0 = time.perf_counter()
    try:
        res = smo.run_pipeline(
            protein_path=rs.adata.copy(),
            platform_prot=rs.platform_prot,
            n_factors="auto",
            annotation_method=method,
            seed=0,
            **extra,
        )
    except Exception as err:  # an annotation_method the installed package does not know yet
        if "annotation_method" in str(err) and method not in ("auto", "paper"):
            raise MethodNotAccepted(str(err).splitlines()[0]) from err
        raise
    secs = time.perf_counter() - t0
    labels = res.shared_labels.set_index("cell_id")["cell_type"].reindex(rs.adata.obs_names).astype(str)
    sel = res.mdata.uns["nmf"].get("k_selection", {})
    info = {"k": int(res.H_shared.shape[0]), "k_reason": str(sel.get("reason", ""))}
    return labels, secs, info


# ------------------------------------------------------------------------------------------------------ peers
def peer_matrix(rs: rsets.RealSet):
    """The peers' input: marker channels, the platform's standard transform, z-scored (an AnnData for scanpy)."""
    import anndata as ad

    a = rs.adata
    keep = ~smo.pp.non_marker_channels(a.var_names)
    X = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X, dtype=np.float64)[:, keep]
    if rs.peer_transform == "clr":  # muon.prot.pp.clr(axis=0): each antibody against its geometric mean over cells
        X = np.log1p(X / np.exp(np.log1p(X).sum(axis=0, keepdims=True) / X.shape[0]))
    else:
        X = np.arcsinh(X / COFACTOR)
    p = ad.AnnData(X.astype(np.float32), obs=pd.DataFrame(index=a.obs_names.copy()))
    p.var_names = [str(v) for v in a.var_names[keep]]
    import scanpy as sc

    sc.pp.scale(p)
    return p


def run_peers(rs: rsets.RealSet, grid: list[float], k_true: int, ref, ref_lin, scored) -> list[dict]:
    import scanpy as sc

    rows = []
    t0 = time.perf_counter()
    p = peer_matrix(rs)
    t_transform = time.perf_counter() - t0
    t0 = time.perf_counter()
    if p.n_vars > 50:  # scanpy's own rule: neighbours on PCA above 50 variables
        sc.tl.pca(p, random_state=0)
    # exact kNN (transformer='sklearn'): scanpy's default from 8,192 cells on (pynndescent) fails in scanpy 1.11.5 with
    # the sparse arrays of this scipy (1.17: 'csr_array' has no 'getnnz'); below 8,192 cells scanpy uses exact kNN anyway
    sc.pp.neighbors(p, random_state=0, transformer="sklearn")
    t_graph = time.perf_counter() - t0
    results = {}
    for r in sorted(set(grid) | {1.0, 0.3}):
        t0 = time.perf_counter()
        sc.tl.leiden(p, resolution=r, flavor="igraph", n_iterations=2, directed=False, random_state=0, key_added="l")
        secs = time.perf_counter() - t0
        clusters = p.obs["l"].astype(str)[scored]
        mapped = majority_map(clusters, ref_lin)
        results[r] = (score(ref, ref_lin, clusters, mapped), secs)
    for r, name in ((1.0, "scanpy Leiden r=1.0 (default)"), (0.3, "scanpy Leiden r=0.3")):
        s, secs = results[r]
        rows.append({"method": name, **s, "Unknown": None, "seconds": t_transform + t_graph + secs})
    in_grid = {r: v for r, v in results.items() if r in grid}
    best_ari = max(in_grid, key=lambda r: in_grid[r][0]["ARI"])
    best_f1 = max(in_grid, key=lambda r: in_grid[r][0]["macro-F1"])
    s = dict(in_grid[best_ari][0])
    s["macro-F1"] = in_grid[best_f1][0]["macro-F1"]
    s["per-lineage F1"] = in_grid[best_f1][0]["per-lineage F1"]
    rows.append(
        {
            "method": "scanpy Leiden best of grid",
            **s,
            "resolution": best_ari,
            "resolution F1": best_f1,
            "Unknown": None,
            "seconds": t_transform + t_graph + sum(v[1] for v in in_grid.values()),
            "grid ARI": {str(r): round(v[0]["ARI"], 4) for r, v in in_grid.items()},
            "grid macro-F1": {str(r): round(v[0]["macro-F1"], 4) for r, v in in_grid.items()},
            "grid clusters": {str(r): v[0]["n predicted labels"] for r, v in in_grid.items()},
        }
    )
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k_true, n_init=10, random_state=0).fit_predict(np.asarray(p.X))
    secs = time.perf_counter() - t0
    clusters = pd.Series(km.astype(str), index=p.obs_names)[scored]
    s = score(ref, ref_lin, clusters, majority_map(clusters, ref_lin))
    rows.append({"method": "KMeans (true k)", **s, "k": k_true, "Unknown": None, "seconds": t_transform + secs})
    return rows


# --------------------------------------------------------------------------------------------------- warm-up
def warm_up() -> None:
    """Compile numba code on both sides before anything is timed."""
    import anndata as ad
    import scanpy as sc

    mdata = smo.datasets.paper_benchmark(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smo.run_pipeline(protein_path=mdata["protein"], n_factors="auto")
    rng = np.random.default_rng(0)
    p = ad.AnnData(rng.normal(size=(300, 8)).astype(np.float32))
    sc.pp.neighbors(p, random_state=0, transformer="sklearn")
    sc.tl.leiden(p, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    KMeans(n_clusters=3, n_init=1, random_state=0).fit(np.asarray(p.X))


# ------------------------------------------------------------------------------------------------------- main
def bench_set(rs: rsets.RealSet, methods: list[str], extra: dict, grid: list[float], skipped: dict) -> dict:
    ref_lin_all = rs.ref_lineages()
    scored = ref_lin_all.notna().to_numpy()
    ref = rs.reference[scored]
    ref_lin = ref_lin_all[scored].astype(str)
    k_true = int(ref.nunique())
    out = {
        "title": rs.title,
        "cells": int(rs.adata.n_obs),
        "scored cells": int(scored.sum()),
        "channels": [str(v) for v in rs.adata.var_names],
        "reference": rs.reference_source,
        "reference counts": {str(k): int(v) for k, v in rs.reference.value_counts().items()},
        "lineage counts (scored)": {str(k): int(v) for k, v in ref_lin.value_counts().items()},
        "F1 lineages": f1_labels(ref_lin),
        "notes": rs.notes,
        "rows": [],
        "confusion": {},
    }
    print(f"\n## {rs.title}\n")
    print(
        f"{rs.adata.n_obs} cells ({int(scored.sum())} scored) x {rs.adata.n_vars} channels; reference: "
        f"{rs.reference_source}"
    )
    print("reference labels: " + ", ".join(f"{k} {v}" for k, v in out["reference counts"].items()))
    print(f"macro-F1 over: {', '.join(out['F1 lineages'])}")
    if hasattr(rs, "rna_clusters"):
        print("\nRNA clusters of the reference (cluster means of log1p CP10k):\n")
        print(md_table(rs.rna_clusters, ".2f"))
    for method in methods:
        if method in skipped:
            continue
        try:
            labels, secs, info = run_ours(rs, method, extra)
        except MethodNotAccepted as err:
            skipped[method] = str(err)
            print(f"\n(note: annotation_method={method!r} is not accepted by this package, skipped: {err})")
            continue
        pred = labels[scored]
        unmapped = sorted(set(pred) - set(rs.ours_lineage) - {"Unknown"})
        if unmapped:
            print(
                f"\n(smo {method} calls types outside this set's named lineages, counted as {rsets.OTHER!r}: {unmapped})"
            )
        s = score(ref, ref_lin, pred, rs.ours_to_lineage(pred))
        # our labels treated as clusters and majority-mapped like the peers': the partition without its names
        s["macro-F1 best-mapped"] = score(ref, ref_lin, pred, majority_map(pred, ref_lin))["macro-F1"]
        unknown = float(np.mean(labels.to_numpy() == "Unknown"))
        info["unmapped types"] = unmapped
        out["rows"].append({"method": f"smo {method}", **s, "Unknown": unknown, "seconds": secs, **info})
        conf = pd.crosstab(ref.rename("reference"), pred.rename(f"smo {method}"))
        out["confusion"][f"smo {method}"] = {str(i): {str(c): int(v) for c, v in r.items()} for i, r in conf.iterrows()}
        print(f"\nsmo {method}: k = {info['k']} ({info['k_reason']}); reference (rows) vs our calls (columns):\n")
        print(md_table(conf, ".0f"))
    out["rows"].extend(run_peers(rs, grid, k_true, ref, ref_lin, scored))
    table = pd.DataFrame(out["rows"]).set_index("method")
    table["cells"] = int(scored.sum())
    cols = ["ARI", "macro-F1", "macro-F1 best-mapped", "Unknown", "n predicted labels", "cells", "seconds"]
    print()
    print(md_table(table[cols]))
    best = next(r for r in out["rows"] if r["method"] == "scanpy Leiden best of grid")
    grid_table = (
        pd.DataFrame({"clusters": best["grid clusters"], "ARI": best["grid ARI"], "macro-F1": best["grid macro-F1"]})
        .astype(object)
        .T
    )
    grid_table.index.name = "Leiden resolution"
    print(f"\nLeiden grid (best ARI at r = {best['resolution']}, best macro-F1 at r = {best['resolution F1']}):\n")
    print(md_table(grid_table))
    return out


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    methods: list[str] = []
    for s in sets:
        for r in results[s]["rows"]:
            if r["method"] not in methods:
                methods.append(r["method"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    width = 0.8 / max(len(methods), 1)
    cmap = plt.get_cmap("tab10")
    for ax, metric in zip(axes, ("ARI", "macro-F1"), strict=True):
        for j, m in enumerate(methods):
            vals = [next((r[metric] for r in results[s]["rows"] if r["method"] == m), np.nan) for s in sets]
            ax.bar(np.arange(len(sets)) + (j - (len(methods) - 1) / 2) * width, vals, width, label=m, color=cmap(j))
        ax.set_xticks(np.arange(len(sets)))
        ax.set_xticklabels([f"{s}\n({results[s]['scored cells']} cells)" for s in sets])
        ax.set_title(metric if metric == "ARI" else "named-type macro-F1 (lineage map)")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("agreement with the reference")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Real labelled sets: smo pipeline (built-in reference) vs scanpy Leiden and KMeans")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def code_state() -> dict:
    """Which spatialmultiomics ran: its path, the git HEAD and whether src/ differs from it (read-only git)."""
    import subprocess

    state = {"spatialmultiomics_path": str(Path(smo.__file__).resolve().parent)}
    try:
        git = ["git", "-C", str(HERE.parent)]
        state["git_head"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        diff = subprocess.run([*git, "diff", "--stat", "HEAD", "--", "src"], capture_output=True, text=True).stdout
        state["src_modified_vs_head"] = (diff.strip().splitlines() or ["no"])[-1].strip()
    except OSError:
        pass
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="cycif,vectra,eccite,ark")
    ap.add_argument("--methods", default="auto,cluster", help="annotation_method values of our pipeline")
    ap.add_argument("--extra-kwargs", default="{}", help="JSON dict passed to every smo.run_pipeline call")
    ap.add_argument("--grid", default="0.1,0.2,0.3,0.5,0.7,1.0,1.5,2.0", help="Leiden resolutions for best-of")
    ap.add_argument("--tag", default="", help="suffix of the JSON and figure file names")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP threads for every method")
    ap.add_argument("--no-figure", action="store_true")
    args = ap.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    extra = json.loads(args.extra_kwargs)
    grid = [float(g) for g in args.grid.split(",")]
    suffix = f"_{args.tag}" if args.tag else ""

    import scanpy as sc

    sc.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(
        f"# bench_real_annotation {started} {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"load {load0[0]:.2f}; spatialmultiomics {smo.__version__}, scanpy {sc.__version__}"
    )
    print(f"methods: {methods}; extra kwargs: {extra}; Leiden grid: {grid}")
    t_all = time.perf_counter()
    results, skipped = {}, {}
    # one BLAS / OpenMP thread for everything (ours, scanpy, KMeans): the 2-core machine is shared, and extra threads
    # only made the timings noisier (KMeans on 500 cells took 1-4 s with OpenMP threads under load)
    with threadpool_limits(limits=args.threads):
        warm_up()
        for name in sets:
            if not rsets.FOLDERS[name].is_dir():
                print(f"\n(skipped {name}: {rsets.FOLDERS[name]} not found)")
                continue
            rs = rsets.LOADERS[name]()
            results[name] = bench_set(rs, methods, extra, grid, skipped)

    print("\n## Summary (scored cells; ARI vs the reference labels, macro-F1 over named lineages)\n")
    rows = []
    for name, res in results.items():
        for r in res["rows"]:
            rows.append(
                {
                    "set": name,
                    "method": r["method"]
                    + (f" (ARI r={r['resolution']}, F1 r={r['resolution F1']})" if "resolution" in r else "")
                    + (f" k={r['k']}" if r["method"].startswith("KMeans") else ""),
                    "ARI": r["ARI"],
                    "macro-F1": r["macro-F1"],
                    "F1 best-mapped": r["macro-F1 best-mapped"],
                    "Unknown": r["Unknown"],
                    "cells": res["scored cells"],
                    "seconds": r["seconds"],
                }
            )
    summary = pd.DataFrame(rows).set_index("set")
    print(md_table(summary))
    for m, why in skipped.items():
        print(f"\nskipped annotation_method={m!r}: {why}")
    print("\nNot scored for annotation:")
    for k, why in rsets.NOT_SCORED.items():
        print(f"- {k}: {why}")
    total = time.perf_counter() - t_all
    load1 = os.getloadavg()
    print(f"\ntotal {total:.1f} s (warm-up included); load {load0[0]:.2f} -> {load1[0]:.2f}")

    payload = {
        "date": started,
        "code": code_state(),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "load_start_end": [round(load0[0], 2), round(load1[0], 2)],
        "versions": {
            "spatialmultiomics": smo.__version__,
            "scanpy": sc.__version__,
            "python": platform.python_version(),
        },
        "args": {"sets": sets, "methods": methods, "extra_kwargs": extra, "grid": grid, "threads": args.threads},
        "skipped_methods": skipped,
        "not_scored": rsets.NOT_SCORED,
        "total_seconds": round(total, 1),
        "sets": results,
    }
    out = HERE / "results" / f"real_annotation{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    print(f"wrote {out.relative_to(HERE.parent)}")
    if not args.no_figure and results:
        fig = HERE / "figures" / f"real_annotation{suffix}.png"
        figure(results, fig)
        print(f"wrote {fig.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
