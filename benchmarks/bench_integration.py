"""Integration of modalities measured on different cells (issue: serial sections, cells that do not pair).

``smo.align.integrate_unpaired`` (linked features, smoothing, CCA joint space, matching by expression; MaxFuse-like)
against the nearest-cell transfer of route ``'adjacent'``, RNA alone, and MaxFuse itself.

Sections (all by default; pick with ``--only``):

``adjacent``
    ``synthetic_tissue(10,000)`` split into two disjoint halves: RNA on one half of the cells, proteins on the
    other half, displaced by N(0, 5 µm) per axis, rotated 5° and shifted (50, -50) µm (about 70 µm), new ids.
    Same-type fraction of the matches (the best partner of each RNA cell has the RNA cell's true type), with and
    without the spatial prior; then the macro-F1 of the pipeline's typing (``run_pipeline``: preprocess, joint
    NMF, annotate) on the RNA cells: RNA alone, the former route ``'adjacent'`` (nearest protein cells),
    ``run_pipeline(align='adjacent')`` (now matching by expression), and the RNA cells with the protein profiles
    transferred from their matches (``transfer_profiles``).
``eccite``
    Real ECCITE-seq PBMCs (500 cells, RNA + 49 ADT) split into an RNA-only half and an ADT-only half (different
    cells). Truth per cell from its own held-out other modality: ADT gates (CD3/CD4/CD8/CD56/CD16/CD19/CD14/CD11b)
    and clusters of the full RNA (k-means on PCA). Same-type fraction of the matches, and chance.
``maxfuse``
    MaxFuse 0.0.2 (PyPI) run on the same splits in its own virtual environment (it needs scipy < 1.14), the
    tutorial pipeline (scanpy preprocessing, ``Fusor``: batches, graphs, initial pivots, refinement, filtering,
    propagation), same linked pairs. Set ``MAXFUSE_PYTHON`` (default ``/tmp/mf/bin/python``).
``eccite_missing``
    Real ECCITE-seq PBMCs with RNA + ADT on the same cells, the ADT of 15 % of the cells removed (seeds 0-2): the
    pipeline imputes their ADT; accuracy on those cells against ADT gates on their held-out ADT, for the types
    learnt with the imputed profiles (``annotate`` on every cell) and the default (``annotate_measured``: types
    from the fully measured cells, the others by vote), and for the run on the full data.
``scale``
    Time and peak memory of ``integrate_unpaired`` on a generated two-modality data set of n x n cells (1,000
    genes sparse counts, 30 proteins, 22 linked pairs, 12 types), for ``--scale-cells`` sizes.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_integration.py [--only adjacent,eccite,maxfuse]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics import Keys
from spatialmultiomics._demo import score_labels
from spatialmultiomics.align import Transform, integrate_unpaired, register, transfer_profiles
from spatialmultiomics.align._links import resolve_links

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_data import read_citeseq  # ECCITE RNA + ADT (its dummy grid is not used here)

MAXFUSE_PYTHON = os.environ.get("MAXFUSE_PYTHON", "/tmp/mf/bin/python")


def md_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def fmt(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- data


def adjacent_sections(n_cells: int = 10_000, seed: int = 2, notch: bool = False) -> dict:
    """RNA on a random half of the cells, proteins on the other half, moved to another frame. ``notch``: cut a
    disc out of one corner, so that the outline has one orientation (the square tissue's density is symmetric
    under quarter turns, which leaves the registration ambiguous)."""
    mdata = smo.datasets.synthetic_tissue(n_cells=n_cells, seed=seed)
    truth = mdata.obs["true_cell_type"].astype(str)
    rng = np.random.default_rng(0)
    in_rna = rng.random(mdata.n_obs) < 0.5
    xy = np.asarray(mdata.obsm[Keys.SPATIAL])
    keep = np.ones(mdata.n_obs, dtype=bool)
    if notch:
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        keep = np.hypot(*(xy - (lo + 0.8 * (hi - lo))).T) > 0.3 * (hi - lo).min()
    t = Transform.from_params(rotation_deg=5.0, translation=(50.0, -50.0), center=xy.mean(axis=0))
    in_prot = ~in_rna & keep
    in_rna &= keep
    rna = mdata["rna"][in_rna].copy()
    prot = mdata["protein"][in_prot].copy()
    prot.obsm[Keys.SPATIAL] = t.apply(xy[in_prot] + rng.normal(0.0, 5.0, size=(in_prot.sum(), 2)))
    true_prot = truth[in_prot].to_numpy()
    prot.obs_names = [f"p{i}" for i in range(prot.n_obs)]
    return {
        "rna": rna,
        "protein": prot,
        "truth_rna": truth[in_rna],
        "truth_protein": pd.Series(true_prot, index=prot.obs_names),
        "transform": t,
        "markers": dict(mdata.uns["markers"]),
    }


def adt_gates(prot) -> np.ndarray:
    """Coarse PBMC types from the ADT of each cell (CLR per antibody, positive = above the antibody's 60th
    percentile of CLR among cells expressing it): a truth independent of the RNA."""
    X = np.asarray(prot.X, dtype=np.float64)
    clr = np.log1p(X) - np.log1p(X).mean(axis=1, keepdims=True)
    df = pd.DataFrame(clr, columns=prot.var_names)

    def pos(name: str) -> np.ndarray:
        v = df[name].to_numpy()
        lo, hi = np.quantile(v, [0.05, 0.95])
        return v > lo + 0.5 * (hi - lo)

    cd3, cd4, cd8 = pos("CD3"), pos("CD4"), pos("CD8")
    nk, b, mono = (pos("CD56") | pos("CD16")) & ~cd3, pos("CD19") & ~cd3, (pos("CD14") | pos("CD11b")) & ~cd3
    out = np.full(X.shape[0], "other", dtype=object)
    out[mono] = "Monocytes"
    out[nk & ~mono] = "NK cells"
    out[b] = "B cells"
    out[cd3 & cd8 & ~cd4] = "CD8 T cells"
    out[cd3 & cd4 & ~cd8] = "CD4 T cells"
    return out.astype(str)


def rna_clusters(rna, n_clusters: int = 6, seed: int = 0) -> np.ndarray:
    """k-means clusters of the full RNA (library-size normalised log1p, 1,000 most variable genes, 20 PCs)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    X = rna.X.toarray().astype(np.float64)
    X = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    X = X[:, np.argsort(-X.var(axis=0))[:1000]]
    Z = PCA(20, random_state=seed).fit_transform((X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8))
    return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(Z).astype(str)


def chance(a: np.ndarray, b: np.ndarray) -> float:
    """Same-type fraction of random pairs: sum over types of p_a(t) p_b(t)."""
    pa = pd.Series(a).value_counts(normalize=True)
    pb = pd.Series(b).value_counts(normalize=True)
    return float((pa * pb.reindex(pa.index).fillna(0)).sum())


def same_type_at(res, truth_ref: np.ndarray, truth_other: np.ndarray, coverage: float) -> float:
    """Same-type fraction of the best-scoring ``coverage`` share of the reference cells' best matches."""
    best, score = res.best()
    top = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[: max(1, round(coverage * best.size))]
    return float(np.mean(truth_other[best[top]] == truth_ref[top]))


def same_type(res, truth_ref: np.ndarray, truth_other: np.ndarray) -> dict:
    best, _ = res.best()
    ok = best >= 0
    trusted = res.trusted()
    return {
        "matched": float(ok.mean()),
        "same_type": float(np.mean(truth_other[best[ok]] == truth_ref[ok])),
        "trusted": float(trusted.mean()),
        "same_type_trusted": float(np.mean(truth_other[best[trusted]] == truth_ref[trusted]))
        if trusted.any()
        else np.nan,
    }


# ---------------------------------------------------------------------------------------------- MaxFuse

_MAXFUSE_RUNNER = r"""
import json, sys, time, warnings
import numpy as np, pandas as pd, scipy.sparse as sp
warnings.filterwarnings("ignore")
import anndata as ad, scanpy as sc, maxfuse as mf
d = sys.argv[1]
cfg = json.load(open(d + "/cfg.json"))
rna = sp.load_npz(d + "/rna.npz").tocsr().astype(np.float32)
prot = np.load(d + "/protein.npy").astype(np.float32)
genes = json.load(open(d + "/genes.json")); proteins = json.load(open(d + "/proteins.json"))
pairs = np.array(json.load(open(d + "/pairs.json")))
t0 = time.perf_counter()
rna_adata = ad.AnnData(rna); rna_adata.var_names = genes
protein_adata = ad.AnnData(prot); protein_adata.var_names = proteins
rna_shared = rna_adata[:, pairs[:, 0]].copy(); protein_shared = protein_adata[:, pairs[:, 1]].copy()
mask = (rna_shared.X.toarray().std(axis=0) > 1e-5) & (protein_shared.X.std(axis=0) > 1e-5)
rna_shared = rna_shared[:, mask].copy(); protein_shared = protein_shared[:, mask].copy()
target_sum = (np.median(rna_shared.X.toarray().sum(axis=1)) + np.median(protein_shared.X.sum(axis=1))) / 2
sc.pp.normalize_total(rna_shared, target_sum=target_sum); sc.pp.log1p(rna_shared); sc.pp.scale(rna_shared)
sc.pp.normalize_total(protein_shared, target_sum=target_sum); sc.pp.log1p(protein_shared); sc.pp.scale(protein_shared)
rna_shared = rna_shared.X.copy(); protein_shared = protein_shared.X.copy()
sc.pp.normalize_total(rna_adata); sc.pp.log1p(rna_adata)
sc.pp.highly_variable_genes(rna_adata, n_top_genes=min(2000, rna_adata.n_vars))
rna_adata = rna_adata[:, rna_adata.var.highly_variable].copy(); sc.pp.scale(rna_adata)
sc.pp.normalize_total(protein_adata); sc.pp.log1p(protein_adata); sc.pp.scale(protein_adata)
rna_active = rna_adata.X; protein_active = protein_adata.X
rna_active = rna_active[:, rna_active.std(axis=0) > 1e-5]
protein_active = protein_active[:, protein_active.std(axis=0) > 1e-5]
fusor = mf.model.Fusor(shared_arr1=rna_shared, shared_arr2=protein_shared, active_arr1=rna_active,
                       active_arr2=protein_active, labels1=None, labels2=None)
fusor.split_into_batches(max_outward_size=5000, matching_ratio=3, metacell_size=2, seed=0, verbose=False)
fusor.construct_graphs(n_neighbors1=15, n_neighbors2=15, svd_components1=cfg["svd1"], svd_components2=cfg["svd2_graph"],
                       resolution1=2, resolution2=2, resolution_tol=0.1, leiden_runs=1, leiden_seed=0, verbose=False)
fusor.find_initial_pivots(wt1=0.3, wt2=0.3, svd_components1=cfg["svd1_init"], svd_components2=cfg["svd2_init"], verbose=False)
fusor.refine_pivots(wt1=0.3, wt2=0.3, svd_components1=cfg["svd1"], svd_components2=None, cca_components=cfg["cca"],
                    n_iters=1, randomized_svd=False, svd_runs=1, verbose=False)
fusor.filter_bad_matches(target="pivot", filter_prop=0.5, verbose=False)
fusor.propagate(svd_components1=cfg["svd1"], svd_components2=None, wt1=0.7, wt2=0.7, verbose=False)
fusor.filter_bad_matches(target="propagated", filter_prop=0.3, verbose=False)
m = fusor.get_matching(order=(1, 2), target="full_data")
secs = time.perf_counter() - t0
np.savez(d + "/matching.npz", rna=np.asarray(m[0]), protein=np.asarray(m[1]), score=np.asarray(m[2]))
json.dump({"seconds": secs}, open(d + "/time.json", "w"))
"""


def run_maxfuse(rna, prot, pairs: list[tuple[str, str]], *, svd1: int, svd2: int, cca: int) -> dict | str:
    """Run MaxFuse in its own environment; returns matching arrays and seconds, or the reason it could not run."""
    if not Path(MAXFUSE_PYTHON).exists():
        return f"no MaxFuse environment at {MAXFUSE_PYTHON} (python3 -m venv /tmp/mf && /tmp/mf/bin/pip install maxfuse 'scipy<1.14')"
    with tempfile.TemporaryDirectory() as d:
        sp.save_npz(f"{d}/rna.npz", sp.csr_matrix(rna.X))
        np.save(f"{d}/protein.npy", np.asarray(prot.X, dtype=np.float32))
        folder = Path(d)
        (folder / "genes.json").write_text(json.dumps([str(g) for g in rna.var_names]))
        (folder / "proteins.json").write_text(json.dumps([str(p) for p in prot.var_names]))
        (folder / "pairs.json").write_text(json.dumps([list(p) for p in pairs]))
        cfg = {
            "svd1": svd1,
            "svd2_graph": min(15, svd2),
            "svd1_init": min(25, svd1),
            "svd2_init": min(20, svd2),
            "cca": cca,
        }
        (folder / "cfg.json").write_text(json.dumps(cfg))
        (folder / "run.py").write_text(_MAXFUSE_RUNNER)
        proc = subprocess.run([MAXFUSE_PYTHON, f"{d}/run.py", d], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return "MaxFuse failed: " + proc.stderr.strip().splitlines()[-1]
        m = np.load(f"{d}/matching.npz")
        out = {k: m[k] for k in ("rna", "protein", "score")}
        out["seconds"] = json.loads((folder / "time.json").read_text())["seconds"]
        return out


def maxfuse_pairs(rna, prot) -> list[tuple[str, str]]:
    """Linked (gene, protein) pairs, one row per gene (MaxFuse's correspondence format), from our table."""
    lf = resolve_links(list(rna.var_names), list(prot.var_names))
    return [
        (str(rna.var_names[g]), str(prot.var_names[p[0]]))
        for r, p in zip(lf.ref_features, lf.other_features, strict=True)
        for g in r
    ]


def maxfuse_row(mf: dict | str, truth_ref: np.ndarray, truth_other: np.ndarray, n_ref: int) -> dict:
    if isinstance(mf, str):
        return {"method": "MaxFuse 0.0.2", "note": mf}
    frame = pd.DataFrame({"r": mf["rna"], "p": mf["protein"], "s": mf["score"]})
    best = frame.sort_values("s", ascending=False).drop_duplicates("r")
    return {
        "method": "MaxFuse 0.0.2",
        "matched": best.shape[0] / n_ref,
        "same_type": float(np.mean(truth_other[best.p.to_numpy()] == truth_ref[best.r.to_numpy()])),
        "same_type_all_pairs": float(np.mean(truth_other[frame.p.to_numpy()] == truth_ref[frame.r.to_numpy()])),
        "seconds": mf["seconds"],
    }


# ---------------------------------------------------------------------------------------------- sections


def _f1(result, truth: pd.Series) -> float:
    return score_labels(truth, result.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"]


def section_adjacent(n_cells: int, n_factors: int, with_maxfuse: bool) -> None:
    print(
        f"\n## Adjacent sections: synthetic_tissue({n_cells:,}) split in two disjoint halves (RNA / proteins), "
        "proteins displaced N(0, 5 µm), rotated 5°, shifted (50, -50) µm\n"
    )
    data = adjacent_sections(n_cells)
    rna, prot = data["rna"], data["protein"]
    tr_r, tr_p = data["truth_rna"].to_numpy(), data["truth_protein"].to_numpy()
    print(f"{rna.n_obs:,} RNA cells x {rna.n_vars} genes, {prot.n_obs:,} protein cells x {prot.n_vars} proteins")
    reg = register(prot.obsm[Keys.SPATIAL], rna.obsm[Keys.SPATIAL], max_rotation_deg=30.0, on_failure="ignore")
    print(f"registration: success={reg.success}: {reg.message}")
    rows = []
    # the old route: nearest protein cells after registration
    from scipy.spatial import cKDTree

    moved = reg.transform.apply(np.asarray(prot.obsm[Keys.SPATIAL]))
    _, nn = cKDTree(moved).query(np.asarray(rna.obsm[Keys.SPATIAL]), k=1)
    rows.append(
        {
            "method": "nearest protein cell (route 'adjacent', k=1)",
            "matched": 1.0,
            "same_type": float(np.mean(tr_p[nn] == tr_r)),
            "seconds": np.nan,
        }
    )
    true_frame = data["transform"].inverse()  # protein frame -> RNA frame
    results = {}
    for label, kw in (
        ("integrate_unpaired", {}),
        ("integrate_unpaired, pivot_method='assignment'", {"pivot_method": "assignment"}),
        (
            "integrate_unpaired, spatial prior 60 µm, registered frame",
            {"spatial_prior_um": 60.0, "transform": reg.transform},
        ),
        ("integrate_unpaired, spatial prior 60 µm, true frame", {"spatial_prior_um": 60.0, "transform": true_frame}),
        ("integrate_unpaired, spatial prior 150 µm, true frame", {"spatial_prior_um": 150.0, "transform": true_frame}),
    ):
        t0 = time.perf_counter()
        res = integrate_unpaired(rna, prot, seed=0, names=("rna", "protein"), **kw)
        secs = time.perf_counter() - t0
        results[label] = res
        rows.append({"method": label, **same_type(res, tr_r, tr_p), "seconds": secs})
    if with_maxfuse:
        mf = run_maxfuse(rna, prot, maxfuse_pairs(rna, prot), svd1=40, svd2=prot.n_vars - 1, cca=20)
        rows.append(maxfuse_row(mf, tr_r, tr_p, rna.n_obs))
        if "matched" in rows[-1]:
            cov = rows[-1]["matched"]
            rows.append(
                {
                    "method": f"integrate_unpaired, its best-scoring {cov:.0%} (MaxFuse's coverage)",
                    "matched": cov,
                    "same_type": same_type_at(results["integrate_unpaired"], tr_r, tr_p, cov),
                }
            )
    rows.append({"method": "chance", "same_type": chance(tr_r, tr_p)})
    print(md_table(pd.DataFrame(rows)))
    res = results["integrate_unpaired"]
    keys = ("n_links", "n_pivots", "canonical_correlations", "score_median", "null_score_q99", "fraction_trusted")
    print(f"\ndiagnostics: {json.dumps({k: res.diagnostics[k] for k in (*keys, 'seconds')})}")

    print(f"\n### Typing of the RNA cells (run_pipeline, n_factors={n_factors}, the tissue's markers)\n")
    markers = data["markers"]
    truth = data["truth_rna"]
    f_rows = []

    def joint_f1(protein_rows) -> float:
        p = ad.AnnData(protein_rows, obs=pd.DataFrame(index=rna.obs_names), var=prot.var.copy())
        p.uns.update(prot.uns)
        p.obsm[Keys.SPATIAL] = np.asarray(rna.obsm[Keys.SPATIAL]).copy()
        out = smo.run_pipeline(rna, p, n_factors=n_factors, markers=markers, align="ids", seed=0, figures=False)
        return _f1(out, truth)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = smo.run_pipeline(rna, None, n_factors=n_factors, markers=markers, seed=0, figures=False)
        f_rows.append({"setting": "RNA alone", "macro_f1": _f1(alone, truth)})
        # the former route (profiles of the 5 nearest protein cells after registration, 0.29-0.36) is gone: without
        # linked features the modalities are now typed apart (route 'separate'); its numbers stay in RESULTS.md
        t0 = time.perf_counter()
        piped = smo.run_pipeline(
            rna, prot, n_factors=n_factors, markers=markers, align="adjacent", seed=0, figures=False
        )
        secs = time.perf_counter() - t0
        entry = piped.mdata.uns["alignment"]["modalities"]["protein"]
        f_rows.append(
            {
                "setting": (
                    f"run_pipeline(align='adjacent'), now by expression ({entry['n_integrated']} integrated, "
                    f"{entry['n_imputed']} imputed; {secs:.0f} s in all)"
                ),
                "macro_f1": _f1(piped, truth),
            }
        )
        for label, res in results.items():
            if "registered" in label or "assignment" in label:
                continue
            for untrusted in ("keep", "impute"):
                f_rows.append(
                    {
                        "setting": f"RNA + transfer_profiles(untrusted={untrusted!r}) ({label})",
                        "macro_f1": joint_f1(transfer_profiles(res, np.asarray(prot.X), untrusted=untrusted)),
                    }
                )
    print(md_table(pd.DataFrame(f_rows)))


def section_eccite(with_maxfuse: bool) -> None:
    print("\n## Real ECCITE-seq PBMCs split into an RNA-only half and an ADT-only half (different cells)\n")
    rna, prot = read_citeseq()
    truths = {
        "RNA clusters": rna_clusters(rna),
        "ADT gates": adt_gates(prot),
    }
    rng = np.random.default_rng(0)
    half = rng.permutation(rna.n_obs)
    a, b = np.sort(half[: rna.n_obs // 2]), np.sort(half[rna.n_obs // 2 :])
    r, p = rna[a].copy(), prot[b].copy()
    print(
        f"{r.n_obs} RNA cells x {r.n_vars:,} genes, {p.n_obs} ADT cells x {p.n_vars} antibodies. Truth of every cell "
        "from its own held-out data: k-means clusters of the full RNA (6; the RNA of the ADT cells is hidden "
        "from the integration), ADT gates. Oracle: the ADT cell nearest (correlation of standardised CLR "
        "ADT) to the RNA cell's own held-out ADT profile.\n"
    )
    for name, t in truths.items():
        print(f"- {name}: {pd.Series(t).value_counts().to_dict()}")
    X = np.asarray(prot.X, dtype=np.float64)
    clr = np.log1p(X) - np.log1p(X).mean(axis=1, keepdims=True)
    U = (clr - clr.mean(axis=0)) / (clr.std(axis=0) + 1e-8)
    U -= U.mean(axis=1, keepdims=True)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    oracle = np.argmax(U[a] @ U[b].T, axis=1)
    t0 = time.perf_counter()
    res = integrate_unpaired(r, p, seed=0, names=("rna", "adt"))
    secs = time.perf_counter() - t0
    seeds = [integrate_unpaired(r, p, seed=k) for k in range(5)]  # 250 cells a side: the sampling matters
    mf = run_maxfuse(r, p, maxfuse_pairs(r, p), svd1=40, svd2=min(p.n_vars - 1, 30), cca=20) if with_maxfuse else None
    rows = []
    for truth_name, truth in truths.items():
        rows.append(
            {"truth": truth_name, "method": "integrate_unpaired", **same_type(res, truth[a], truth[b]), "seconds": secs}
        )
        per_seed = [same_type(s_res, truth[a], truth[b])["same_type"] for s_res in seeds]
        rows.append(
            {
                "truth": truth_name,
                "method": f"integrate_unpaired, seeds 0-4: mean (min-max {min(per_seed):.3f}-{max(per_seed):.3f})",
                "matched": 1.0,
                "same_type": float(np.mean(per_seed)),
            }
        )
        if mf is not None:
            rows.append({"truth": truth_name, **maxfuse_row(mf, truth[a], truth[b], r.n_obs)})
            if "matched" in rows[-1]:
                cov = rows[-1]["matched"]
                rows.append(
                    {
                        "truth": truth_name,
                        "method": f"integrate_unpaired, its best-scoring {cov:.0%} (MaxFuse's coverage)",
                        "matched": cov,
                        "same_type": same_type_at(res, truth[a], truth[b], cov),
                    }
                )
        rows.append(
            {
                "truth": truth_name,
                "method": "oracle (own held-out ADT)",
                "same_type": float(np.mean(truth[b][oracle] == truth[a])),
            }
        )
        rows.append({"truth": truth_name, "method": "chance", "same_type": chance(truth[a], truth[b])})
    print()
    print(md_table(pd.DataFrame(rows)))
    print(
        f"\ndiagnostics: {json.dumps({k: res.diagnostics[k] for k in ('n_links', 'n_pivots', 'canonical_correlations', 'score_median', 'null_score_q99', 'fraction_trusted', 'seconds')})}"
    )


def scale_data(n: int, seed: int = 0, n_genes: int = 1000, n_types: int = 12):
    """Two modalities of ``n`` cells each (different cells, same 12 types): sparse Poisson RNA counts with 22
    linked genes among 1,000, 30 protein intensities (22 linked channels)."""

    from spatialmultiomics.align._links import PROTEIN_GENE_LINKS

    rng = np.random.default_rng(seed)
    links = [(p[0], g[0]) for p, g in PROTEIN_GENE_LINKS[:22]]
    proteins = [p for p, _ in links] + [f"P{i}" for i in range(30 - len(links))]
    genes = [g for _, g in links] + [f"G{i:04d}" for i in range(n_genes - len(links))]
    prog_rna = rng.gamma(0.3, 1.0, size=(n_types, n_genes)) * 0.5
    prog_prot = rng.gamma(0.5, 2.0, size=(n_types, 30))
    prog_rna[:, :22] = prog_prot[:, :22] * 0.5  # linked genes follow their protein

    def cells(k: int):
        t = rng.integers(0, n_types, k)
        lib = rng.lognormal(0.0, 0.3, k)
        blocks = []
        for s in range(0, k, 20_000):  # dense only a block at a time
            blocks.append(
                sp.csr_matrix(rng.poisson(prog_rna[t[s : s + 20_000]] * lib[s : s + 20_000, None]).astype(np.float32))
            )
        X = sp.vstack(blocks).tocsr()
        P = (prog_prot[t] + rng.normal(0, 0.5, (k, 30))).clip(0).astype(np.float32)
        return X, P, t

    Xa, _, ta = cells(n)
    _, Pb, tb = cells(n)
    rna = ad.AnnData(Xa, var=pd.DataFrame(index=genes))
    prot = ad.AnnData(Pb, var=pd.DataFrame(index=proteins))
    return rna, prot, ta, tb


def section_scale(sizes: list[int]) -> None:
    print("\n## Scale: integrate_unpaired on n x n generated cells (1,000 genes sparse, 30 proteins, 12 types)\n")
    rows = []
    for n in sizes:
        rna, prot, ta, tb = scale_data(n)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        res = integrate_unpaired(rna, prot, seed=0)
        secs = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        best, _ = res.best()
        rows.append(
            {
                "cells": f"{n:,} x {n:,}",
                "same_type": float(np.mean(tb[best] == ta)),
                "seconds": secs,
                "peak_rss_mib": peak,
                "rss_before_mib": before,
                "knn": res.diagnostics["knn"],
                "steps_s": json.dumps(res.diagnostics["seconds"]),
            }
        )
        del rna, prot, res
    print(md_table(pd.DataFrame(rows)))


def section_eccite_missing() -> None:
    from _real_sets import ECCITE_OURS_LINEAGE, MYELOID_PBMC

    from spatialmultiomics._mudata import mudata_options

    print("\n## Real ECCITE-seq PBMCs, the ADT of 15 % of the cells removed (imputed by the pipeline)\n")
    rna, prot = read_citeseq()
    truth = pd.Series(adt_gates(prot), index=rna.obs_names).replace({"Monocytes": MYELOID_PBMC})

    def lineage(mdata) -> pd.Series:
        labels = mdata.obs[Keys.CELL_TYPE].astype(str).map(ECCITE_OURS_LINEAGE).fillna("other")
        return pd.Series(labels.to_numpy(), index=mdata.obs_names)

    full = lineage(smo.run_pipeline(rna, prot, seed=0, figures=False).mdata)
    rows = []
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        gone = np.sort(rng.choice(rna.n_obs, int(0.15 * rna.n_obs), replace=False))
        keep = np.setdiff1d(np.arange(rna.n_obs), gone)
        res = smo.run_pipeline(rna, prot[keep].copy(), seed=0, figures=False)
        with mudata_options():
            everyone = res.mdata.copy()
        smo.annotate.annotate(everyone, seed=0)  # the former typing: imputed profiles included
        ids = rna.obs_names[gone]
        scored = ids[truth.loc[ids].to_numpy() != "other"]

        def acc(labels: pd.Series, cells=scored) -> float:
            return float((labels.loc[cells] == truth.loc[cells]).mean())

        rows.append(
            {
                "seed": seed,
                "cells without ADT (scored)": f"{ids.size} ({scored.size})",
                "imputed profiles typed": acc(lineage(everyone)),
                "default (annotate_measured)": acc(lineage(res.mdata)),
                "full data, same cells": acc(full),
                "all cells: imputed typed / default": (
                    f"{acc(lineage(everyone), truth.index[truth != 'other']):.3f} / "
                    f"{acc(lineage(res.mdata), truth.index[truth != 'other']):.3f}"
                ),
            }
        )
    print(md_table(pd.DataFrame(rows)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="adjacent,eccite,maxfuse")
    ap.add_argument("--cells", type=int, default=10_000, help="cells of the synthetic tissue (split in two)")
    ap.add_argument("--factors", type=int, default=20)
    ap.add_argument("--scale-cells", default="20000,100000")
    args = ap.parse_args()
    only = set(args.only.split(","))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"load {load:.2f}, numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )
    with_mf = "maxfuse" in only
    if "adjacent" in only:
        section_adjacent(args.cells, args.factors, with_mf)
    if "eccite" in only:
        section_eccite(with_mf)
    if "eccite_missing" in only:
        section_eccite_missing()
    if "scale" in only:
        section_scale([int(s) for s in args.scale_cells.split(",")])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
