"""Alignment acceptance numbers (issue 5): registration, matching, end to end, adjacent sections, Visium spots, speed.

All on ``smo.datasets.synthetic_tissue`` (known cell types and positions). The protein table is moved out of the
RNA frame the way a second instrument would see it: a rigid rotation and shift, every cell jittered, 10 % of the
cells missing, new ids, shuffled rows.

Sections
  1. automatic registration over a grid of rotations (±30°) and shifts (hundreds of µm): RMS error over the cells
     (µm), residual, time; and the cases it must refuse;
  2. cell matching precision / recall (match_radius 5 µm) for several jitter models, both methods;
  3. end to end: macro-F1 of the pipeline with the moved protein table vs the same-frame result;
  4. adjacent sections (different cells in each modality): registration error and end-to-end macro-F1;
  5. Visium-like spots (100 µm hexagonal lattice, 55 µm spots) with a single-cell protein table;
  6. matching time at 1,000,000 x 1,000,000 cells;
  7. the match radius from the data (``match_radius='auto'``): the radius chosen and precision / recall for
     Gaussian jitter, and end to end the jitter case of the issue (12° rotation, sigma = 3 µm per axis, 10 %
     missing, new ids): macro-F1 same frame vs moved frame at 5 µm and 'auto', and with the true pairs (oracle);
  8. refusals: frames that do not overlap (a 50 µm patch 10^6 µm away), and a partner section covering part of
     the reference (nothing dropped beyond 5 % unless ``unmatched='drop'``).

Run: ``.venv/bin/python benchmarks/bench_align.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import pandas as pd

import spatialmultiomics as smo
from spatialmultiomics import InputError, Keys
from spatialmultiomics._demo import score_labels
from spatialmultiomics.align import Transform, align, match_cells, register
from spatialmultiomics.align._match import estimate_match_radius


def disk_jitter(n: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    ang, r = rng.uniform(0, 2 * np.pi, n), radius * np.sqrt(rng.random(n))
    return np.c_[r * np.cos(ang), r * np.sin(ang)]


def jitter(n: int, model: str, rng: np.random.Generator) -> np.ndarray:
    kind, value = model.split(":")
    if kind == "disk":
        return disk_jitter(n, float(value), rng)
    return rng.normal(0.0, float(value), size=(n, 2))  # gauss:<sd per axis>


def moved_protein(mdata, *, rotation: float, shift, seed: int, jitter_model: str = "disk:3", missing: float = 0.1):
    rng = np.random.default_rng(seed)
    prot = mdata["protein"]
    n = prot.n_obs
    xy = np.asarray(prot.obsm[Keys.SPATIAL])
    keep = np.sort(rng.choice(n, round((1 - missing) * n), replace=False))
    truth = Transform.from_params(rotation_deg=rotation, translation=shift, center=xy.mean(axis=0))
    out = prot[keep].copy()
    out.obsm[Keys.SPATIAL] = truth.apply(xy[keep] + jitter(keep.size, jitter_model, rng))
    order = rng.permutation(out.n_obs)
    out = out[order].copy()
    true_ids = out.obs_names.to_numpy().copy()
    out.obs_names = [f"codex_{i}" for i in range(out.n_obs)]
    return out, truth, pd.Series(true_ids, index=out.obs_names)


def error_um(est: Transform, truth: Transform, pts: np.ndarray) -> float:
    return float(np.sqrt(((est.apply(truth.apply(pts)) - pts) ** 2).sum(axis=1).mean()))


def section_registration(n_cells: int, quick: bool) -> None:
    print(f"\n## 1. Automatic registration, synthetic_tissue({n_cells}), 10 % missing, jitter <= 3 µm (disk)")
    mdata = smo.datasets.synthetic_tissue(n_cells=n_cells, seed=0)
    xy = np.asarray(mdata["rna"].obsm[Keys.SPATIAL])
    rotations = [-30, 0, 30] if quick else [-30, -20, -10, -5, 0, 5, 10, 20, 30]
    shifts = [(250, -150), (-500, 400)] if quick else [(0, 0), (250, -150), (-500, 400), (800, 800)]
    rows = []
    for i, rot in enumerate(rotations):
        for j, sh in enumerate(shifts):
            prot, truth, _ = moved_protein(mdata, rotation=rot, shift=sh, seed=100 * i + j)
            t0 = time.perf_counter()
            res = register(prot.obsm[Keys.SPATIAL], xy, on_failure="ignore")
            rows.append(
                {
                    "rotation_deg": rot,
                    "shift_um": f"{sh[0]},{sh[1]}",
                    "success": res.success,
                    "method": res.method,
                    "error_um": error_um(res.transform, truth, xy),
                    "residual_um": res.residual_um,
                    "seconds": time.perf_counter() - t0,
                }
            )
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        f"max error {frame.error_um.max():.3f} µm, all success: {frame.success.all()}, "
        f"median {frame.seconds.median():.2f} s"
    )

    print("\n### cases that must be refused (on_failure='ignore' to see the message)")
    side = 1500.0
    lattice = []
    for r in range(int(side / 86.6) + 1):
        xs = np.arange((r % 2) * 50.0, side, 100.0)
        lattice.append(np.c_[xs, np.full(xs.size, r * 86.6)])
    lattice = np.vstack(lattice)
    t = Transform.from_params(rotation_deg=20.0, translation=(300.0, 100.0))
    cases = {
        "hexagonal lattice (periodic), rotated 20°": (t.apply(lattice), lattice, {"max_pair_distance": 20.0}),
        "another tissue, sections='same'": (
            np.asarray(smo.datasets.synthetic_tissue(n_cells=3000, seed=7).obsm[Keys.SPATIAL]) + 4000.0,
            np.asarray(smo.datasets.synthetic_tissue(n_cells=3000, seed=8).obsm[Keys.SPATIAL]),
            {"sections": "same"},
        ),
        "another tissue (uniform square), auto": (
            np.asarray(smo.datasets.synthetic_tissue(n_cells=3000, seed=7).obsm[Keys.SPATIAL]) + 4000.0,
            np.asarray(smo.datasets.synthetic_tissue(n_cells=3000, seed=8).obsm[Keys.SPATIAL]),
            {},
        ),
    }
    for name, (mov, fix, kw) in cases.items():
        res = register(mov, fix, on_failure="ignore", **kw)
        print(f"- {name}: success={res.success}: {res.message}")


def section_matching(n_cells: int) -> None:
    print(f"\n## 2. Matching precision / recall, synthetic_tissue({n_cells}) positions, 10 % missing, radius 5 µm")
    xy = np.asarray(smo.datasets.synthetic_tissue(n_cells=n_cells, seed=1).obsm[Keys.SPATIAL])
    rows = []
    for model in ("disk:3", "gauss:1", "gauss:1.5", "gauss:2", "gauss:3"):
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(xy.shape[0], int(0.9 * xy.shape[0]), replace=False))
        b = (xy + jitter(xy.shape[0], model, rng))[keep]
        for method in ("mutual", "optimal"):
            m = match_cells(xy, b, match_radius=5.0, method=method)
            correct = int((keep[m.b_index] == m.a_index).sum())
            rows.append(
                {
                    "jitter": model,
                    "method": method,
                    "precision": correct / max(1, m.n_matched),
                    "recall": correct / b.shape[0],
                    "n_matched": m.n_matched,
                }
            )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("disk:3 = every cell moved by at most 3 µm (uniform in a disk, RMS 2.1 µm); gauss:s = normal, s µm per axis")


def section_end_to_end(n_cells: int, seeds: list[int], n_factors: int) -> None:
    print(
        f"\n## 3. End to end, synthetic_tissue({n_cells}), n_factors={n_factors}: moved protein (rotation 20°, "
        "shift (300, -450) µm, jitter <= 3 µm, 10 % missing, new ids) vs same frame"
    )
    rows = []
    for seed in seeds:
        mdata = smo.datasets.synthetic_tissue(n_cells=n_cells, seed=seed)
        markers = dict(mdata.uns["markers"])
        truth = mdata.obs["true_cell_type"].astype(str)

        def f1(res, idx=None, truth=truth):
            lab = res.shared_labels.set_index("cell_id")["cell_type"]
            t = truth if idx is None else truth.loc[idx]
            return score_labels(t, lab)["macro_f1"]

        same = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=n_factors, markers=markers, seed=0)
        prot, _, _ = moved_protein(mdata, rotation=20.0, shift=(300.0, -450.0), seed=seed)
        row = {"seed": seed, "same_frame": f1(same)}
        for label, kw in (("impute_expression", {"impute": "expression"}), ("impute_nearest", {"impute": "nearest"})):
            t0 = time.perf_counter()
            aligned = align({"rna": mdata["rna"], "protein": prot}, **kw)
            t_align = time.perf_counter() - t0
            res = smo.run_pipeline(
                aligned["rna"], aligned["protein"], n_factors=n_factors, markers=markers, align="ids", seed=0
            )
            row[label] = f1(res)
            row["align_s"] = t_align
            row["route"] = aligned.uns["alignment"]["route"]
        drop = smo.run_pipeline(mdata["rna"], prot, n_factors=n_factors, markers=markers, unmatched="drop", seed=0)
        kept = drop.shared_labels["cell_id"]
        row["drop(kept cells)"] = f1(drop, kept)
        row["same_frame(kept cells)"] = f1(same, kept)
        rows.append(row)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    gap = (frame.same_frame - frame.impute_expression).max()
    print(f"largest macro-F1 gap to same frame (default impute='expression'): {gap:.3f}")


def section_adjacent(n_cells: int, n_factors: int) -> None:
    print(
        f"\n## 4. Adjacent sections: synthetic_tissue({n_cells}); the RNA section holds a random half of the cells, "
        "the protein section an independent random half, displaced by N(0, 5 µm) per axis (another section of the "
        "same tissue: mostly other cells, same structure), then rotated 15° and shifted (200, -100) µm"
    )
    mdata = smo.datasets.synthetic_tissue(n_cells=n_cells, seed=2)
    markers = dict(mdata.uns["markers"])
    truth = mdata.obs["true_cell_type"].astype(str)
    rng = np.random.default_rng(0)
    in_rna, in_prot = rng.random(mdata.n_obs) < 0.5, rng.random(mdata.n_obs) < 0.5
    xy = np.asarray(mdata.obsm[Keys.SPATIAL])
    prot_xy = xy[in_prot] + rng.normal(0.0, 5.0, size=(in_prot.sum(), 2))
    t = Transform.from_params(rotation_deg=15.0, translation=(200.0, -100.0), center=xy.mean(axis=0))
    rna = mdata["rna"][in_rna].copy()
    prot = mdata["protein"][in_prot].copy()
    prot.obsm[Keys.SPATIAL] = t.apply(prot_xy)
    prot.obs_names = [f"p{i}" for i in range(prot.n_obs)]
    for max_rot in (180.0, 30.0):
        res = register(prot.obsm[Keys.SPATIAL], rna.obsm[Keys.SPATIAL], on_failure="ignore", max_rotation_deg=max_rot)
        print(
            f"- registration, max_rotation_deg={max_rot:g}: success={res.success}, error "
            f"{error_um(res.transform, t, xy):.1f} µm: {res.message}"
        )
    same = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=n_factors, markers=markers)
    f_same = score_labels(truth.loc[rna.obs_names], same.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"]
    rows = [{"setting": "same cells, same frame (reference)", "macro_f1": f_same, "registration_error_um": 0.0}]
    oracle = prot.copy()
    oracle.obsm[Keys.SPATIAL] = prot_xy
    for label, p, kw in (
        ("true frame, transfer", oracle, {"route": "adjacent", "transforms": {"protein": Transform.identity()}}),
        ("registered (max_rotation_deg=30), transfer", prot, {"route": "adjacent", "max_rotation_deg": 30.0}),
    ):
        for k in (1, 3, 5):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                aligned = align({"rna": rna, "protein": p}, n_neighbors=k, **kw)
            tr = Transform.from_dict(aligned.uns["alignment"]["modalities"]["protein"]["transform"])
            err = error_um(tr, t, xy) if p is prot else 0.0
            res = smo.run_pipeline(
                aligned["rna"], aligned["protein"], n_factors=n_factors, markers=markers, align="ids"
            )
            f = score_labels(truth.loc[rna.obs_names], res.shared_labels.set_index("cell_id")["cell_type"])
            rows.append({"setting": f"{label}, k={k}", "macro_f1": f["macro_f1"], "registration_error_um": err})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def section_spots(n_cells: int, n_factors: int) -> None:
    print(
        f"\n## 5. Visium-like spots (100 µm hexagonal lattice, 55 µm spots) over synthetic_tissue({n_cells}); "
        f"RNA = sum of the spot's cells' counts, protein = the single-cell table; n_factors={n_factors}. "
        "Dominant type right = the spot's label is one of its most frequent true types (several when tied)."
    )
    rows = []
    for seed in (0, 1):
        for spacing in (1.0, 1.6):
            data = smo.datasets.visium_like(n_cells=n_cells, seed=seed, cell_spacing=spacing)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = smo.run_pipeline(data.rna, data.protein, n_factors=n_factors, markers=data.markers)
            m = res.mdata
            ids = data.rna.obs_names
            top = data.dominant_types()
            unique = np.array([len(t) == 1 for t in top])
            label = res.shared_labels.set_index("cell_id")["cell_type"].loc[ids].to_numpy()
            before = m.obs["cell_type_from_factors"].astype(str).loc[ids].to_numpy()
            ok = np.array([lab in t for lab, t in zip(label, top, strict=True)])
            ok_before = np.array([lab in t for lab, t in zip(before, top, strict=True)])
            cells = m.uns[Keys.SPOT_CELLS]
            cell_acc = np.mean(cells["cell_type"].to_numpy() == data.cell_types.loc[cells["cell_id"]].to_numpy())
            comp = m.obsm[Keys.COMPOSITION].loc[ids].reindex(columns=data.composition.columns, fill_value=0.0)
            truth = data.composition.to_numpy()
            W = np.asarray(m.obsm[Keys.NMF])
            W = W / np.maximum(W.sum(axis=1, keepdims=True), 1e-12)
            cats = list(data.composition.columns)
            prop = np.zeros((W.shape[0], len(cats)))
            for f, name in enumerate(res.factor_annotation["cell_type"].astype(str)):
                if name in cats:
                    prop[:, cats.index(name)] += W[:, f]
            prop /= np.maximum(prop.sum(axis=1, keepdims=True), 1e-12)
            n = m.obs["protein_n_cells"].to_numpy()
            rows.append(
                {
                    "seed": seed,
                    "cell_spacing_x": spacing,
                    "route": m.uns["alignment"]["route"],
                    "spots": int(m.n_obs),
                    "cells/spot": f"{n.min()}-{int(np.median(n))}-{n.max()}",
                    "tied spots": float(np.mean(~unique)),
                    "acc (cells)": float(ok.mean()),
                    "acc (cells, unique top)": float(ok[unique].mean()),
                    "acc (factors only)": float(ok_before.mean()),
                    "cell acc": float(cell_acc),
                    "corr comp (cells)": float(np.corrcoef(comp.to_numpy().ravel(), truth.ravel())[0, 1]),
                    "corr comp (factor W)": float(np.corrcoef(prop.ravel(), truth.ravel())[0, 1]),
                }
            )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def section_speed(n: int) -> None:
    print(f"\n## 6. Matching time, {n:,} x {n:,} cells (10 % missing, jitter <= 3 µm)")
    rng = np.random.default_rng(0)
    side = np.sqrt(n * 150.0)
    m = int(np.ceil(np.sqrt(n)))
    step = side / m
    grid = np.stack(np.meshgrid(np.arange(m), np.arange(m)), axis=-1).reshape(-1, 2)
    a = (grid[np.sort(rng.choice(grid.shape[0], n, replace=False))] + 0.5 + rng.uniform(-0.35, 0.35, (n, 2))) * step
    keep = rng.random(n) > 0.1
    b = (a + disk_jitter(n, 3.0, rng))[keep]
    truth = np.flatnonzero(keep)
    for method in ("mutual", "optimal"):
        for n_jobs in (1, 2):
            t0 = time.perf_counter()
            res = match_cells(a, b, match_radius=5.0, method=method, n_jobs=n_jobs)
            dt = time.perf_counter() - t0
            correct = int((truth[res.b_index] == res.a_index).sum())
            print(
                f"- {method}, n_jobs={n_jobs}: {dt:.2f} s; precision {correct / res.n_matched:.4f}, "
                f"recall {correct / b.shape[0]:.4f}"
            )


def jittered_grid(n: int, rng: np.random.Generator, spacing: float) -> np.ndarray:
    """``n`` cells on a jittered square grid (as tests/align/conftest.py); median neighbour distance ~0.74 spacing."""
    m = int(np.ceil(np.sqrt(n / 0.95)))
    grid = np.stack(np.meshgrid(np.arange(m), np.arange(m)), axis=-1).reshape(-1, 2)
    pick = np.sort(rng.choice(grid.shape[0], size=n, replace=False))
    return (grid[pick] + 0.5 + rng.uniform(-0.35, 0.35, size=(n, 2))) * spacing


def section_radius(n_cells: int) -> None:
    print(
        "\n## 7a. Match radius from the data: positions only (same frame), 10 % missing, Gaussian jitter per axis; "
        "P / R of the true pairs at the fixed 5 µm and at the chosen radius"
    )
    layouts = {
        f"synthetic_tissue({n_cells})": np.asarray(
            smo.datasets.synthetic_tissue(n_cells=n_cells, seed=1).obsm[Keys.SPATIAL]
        ),
        "jittered grid, 16 µm": jittered_grid(n_cells, np.random.default_rng(1), 16.0),
    }
    rows = []
    for layout, xy in layouts.items():
        from scipy.spatial import cKDTree

        nn = float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))
        for sd in (1.0, 2.0, 3.0, 4.0):
            rng = np.random.default_rng(0)
            keep = np.sort(rng.choice(xy.shape[0], int(0.9 * xy.shape[0]), replace=False))
            b = (xy + rng.normal(0.0, sd, size=xy.shape))[keep]
            t0 = time.perf_counter()
            choice = estimate_match_radius(xy, b)
            dt = time.perf_counter() - t0
            row = {
                "layout": layout,
                "median NN µm": nn,
                "sigma": sd,
                "radius": choice.radius,
                "rule": choice.bound,
                "sigma_fit": choice.sigma,
                "fit_s": dt,
            }
            for method in ("mutual", "optimal"):
                for label, r in (("5um", 5.0), ("auto", choice.radius)):
                    m = match_cells(xy, b, match_radius=r, method=method)
                    correct = int((keep[m.b_index] == m.a_index).sum())
                    row[f"{method} {label} P/R"] = f"{correct / max(1, m.n_matched):.3f}/{correct / b.shape[0]:.3f}"
            rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(
        "With sigma = 3 µm per axis the displacement between the two images is 4.2 µm RMS; on the synthetic tissue "
        "(9 µm median neighbour distance, some cells 4 µm apart) neighbours swap, which caps position-only "
        "matching near 0.95 whatever the radius."
    )


def section_jitter_end_to_end(n_cells: int, seeds: list[int], n_factors: int) -> None:
    print(
        f"\n## 7b. End to end, the jitter case: synthetic_tissue({n_cells}), protein rotated 12°, shifted (300, -450) µm, "
        "Gaussian jitter sigma = 3 µm per axis, 10 % missing, new ids; macro-F1 vs same frame"
    )
    rows = []
    for seed in seeds:
        mdata = smo.datasets.synthetic_tissue(n_cells=n_cells, seed=seed)
        markers = dict(mdata.uns["markers"])
        truth = mdata.obs["true_cell_type"].astype(str)

        def f1(res, truth=truth):
            return score_labels(truth, res.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"]

        same = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=n_factors, markers=markers, seed=0)
        prot, _, true_ids = moved_protein(
            mdata, rotation=12.0, shift=(300.0, -450.0), seed=seed, jitter_model="gauss:3"
        )
        row = {"seed": seed, "same_frame": f1(same)}
        # the first two: align() then the pipeline on the aligned tables (the pipeline cannot choose the method);
        # the others: the pipeline on the moved table, as a user runs it (it knows which cells are not paired)
        settings = (
            ("5um mutual (old default)", {"match_radius": 5.0, "method": "mutual"}),
            ("auto mutual", {"method": "mutual"}),
            ("auto optimal, rigid only", {"warp": "none"}),
            ("auto optimal + warp (default)", {}),
        )
        for label, kw in settings:
            if "method" in kw:
                aligned = align({"rna": mdata["rna"], "protein": prot}, **kw)
                res = smo.run_pipeline(
                    aligned["rna"], aligned["protein"], n_factors=n_factors, markers=markers, align="ids", seed=0
                )
            else:
                res = smo.run_pipeline(mdata["rna"], prot, n_factors=n_factors, markers=markers, seed=0, **kw)
                aligned = res.mdata
            entry = aligned.uns["alignment"]["modalities"]["protein"]
            matched = (aligned.obs["protein_status"] == "matched").to_numpy()
            pid = aligned.obs["protein_id"].to_numpy()[matched]
            correct = true_ids.loc[pid].to_numpy() == aligned.obs_names.to_numpy()[matched]
            row[f"F1 {label}"] = f1(res)
            row[f"P/R {label}"] = f"{correct.mean():.3f}/{correct.sum() / prot.n_obs:.3f}"
            row[f"radius {label}"] = entry["match_radius_um"]
        oracle = prot.copy()
        oracle.obs_names = true_ids.to_numpy()  # the true pairs; the 10 % missing are imputed from alike cells
        res = smo.run_pipeline(mdata["rna"], oracle, n_factors=n_factors, markers=markers, seed=0)
        row["F1 true pairs"] = f1(res)
        rows.append(row)
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for label, _ in settings:
        print(f"largest macro-F1 gap to same frame, {label}: {(frame.same_frame - frame[f'F1 {label}']).max():.3f}")


def bend(xy: np.ndarray, amp: float) -> np.ndarray:
    """A smooth warp of the section: up to ``amp`` µm, changing over ~1 mm (as tests/align/test_warp.py)."""
    out = xy.copy()
    out[:, 0] += amp * np.sin(2 * np.pi * xy[:, 1] / 900.0)
    out[:, 1] += 0.7 * amp * np.sin(2 * np.pi * xy[:, 0] / 1100.0)
    return out


def section_bent(n_cells: int, seeds: list[int], n_factors: int) -> None:
    print(
        f"\n## 7c. A bent section: synthetic_tissue({n_cells}), protein section bent by up to 10 µm (sinusoids over "
        "~1 mm), rotated 12°, shifted (300, -450) µm, Gaussian jitter sigma = 1 µm per axis, 10 % missing, new ids"
    )
    rows = []
    for seed in seeds:
        mdata = smo.datasets.synthetic_tissue(n_cells=n_cells, seed=seed)
        markers = dict(mdata.uns["markers"])
        truth = mdata.obs["true_cell_type"].astype(str)
        rng = np.random.default_rng(seed)
        xy = np.asarray(mdata.obsm[Keys.SPATIAL])
        keep = np.sort(rng.choice(mdata.n_obs, int(0.9 * mdata.n_obs), replace=False))
        t = Transform.from_params(rotation_deg=12.0, translation=(300.0, -450.0), center=xy.mean(axis=0))
        prot = mdata["protein"][keep].copy()
        prot.obsm[Keys.SPATIAL] = t.apply(bend(xy, 10.0)[keep] + rng.normal(0.0, 1.0, (keep.size, 2)))
        true_ids = pd.Series(mdata.obs_names[keep].to_numpy(), index=[f"q{i}" for i in range(keep.size)])
        prot.obs_names = true_ids.index
        same = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=n_factors, markers=markers, seed=0)
        row = {
            "seed": seed,
            "same_frame": score_labels(truth, same.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"],
        }
        for label, kw in (("rigid only", {"warp": "none"}), ("+ warp (default)", {})):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the square synthetic tissue is symmetric under quarter turns: the orientation is given
                aligned = align({"rna": mdata["rna"], "protein": prot}, max_rotation_deg=30.0, **kw)
            secs = time.perf_counter() - t0
            entry = aligned.uns["alignment"]["modalities"]["protein"]
            row[f"route {label}"] = entry["route"]
            if entry["route"] not in ("match", "register"):
                row[f"P/R {label}"] = "-"  # not matched one to one (adjacent: by expression; separate: not joined)
            else:
                matched = (aligned.obs["protein_status"] == "matched").to_numpy()
                pid = aligned.obs["protein_id"].to_numpy()[matched]
                correct = true_ids.loc[pid].to_numpy() == aligned.obs_names.to_numpy()[matched]
                row[f"P/R {label}"] = f"{correct.mean():.3f}/{correct.sum() / prot.n_obs:.3f}"
            if entry["route"] == "separate":
                continue
            with warnings.catch_warnings():  # the pipeline aligns again, as a user's run does
                warnings.simplefilter("ignore")
                res = smo.run_pipeline(
                    mdata["rna"], prot, n_factors=n_factors, markers=markers, seed=0, max_rotation_deg=30.0, **kw
                )
            row[f"F1 {label}"] = score_labels(truth, res.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"]
            row[f"align s {label}"] = secs
            if "warp" in entry:
                row["warp max µm"] = entry["warp"].get("max_displacement_um", float("nan"))
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def section_refusals() -> None:
    print("\n## 8. Refusals: frames that do not overlap; nothing dropped beyond 5 % unless unmatched='drop'")
    mdata = smo.datasets.paper_benchmark(seed=0)
    rng = np.random.default_rng(0)
    prot = mdata["protein"].copy()
    prot.obsm[Keys.SPATIAL] = 1e6 + rng.uniform(0.0, 50.0, size=(prot.n_obs, 2))
    prot.obs_names = [f"p{i}" for i in range(prot.n_obs)]
    for kw in ({}, {"route": "adjacent"}):
        try:
            align({"rna": mdata["rna"], "protein": prot}, **kw)
            print(f"- 50 µm patch 10^6 µm away, {kw or 'auto'}: NOT refused")
        except InputError as err:
            print(f"- 50 µm patch 10^6 µm away, {kw or 'auto'}: refused: {err}")
    xy = np.asarray(mdata["rna"].obsm[Keys.SPATIAL])
    left = xy[:, 0] < np.quantile(xy[:, 0], 0.6)
    half = mdata["protein"][left].copy()
    half.obs_names = [f"p{i}" for i in range(half.n_obs)]
    half.obsm[Keys.SPATIAL] = xy[left] + 7.0  # other cells of an adjacent section, covering 60 % of the RNA
    for kw in ({}, {"unmatched": "drop"}):
        try:
            out = align(
                {"rna": mdata["rna"], "protein": half},
                route="adjacent",
                transforms={"protein": Transform.identity()},
                **kw,
            )
            info = out.uns["alignment"]
            print(
                f"- adjacent section over 60 % of the reference, {kw or 'impute'}: kept {info['n_shared']} of "
                f"{info['n_reference']} ({info['n_reference_dropped']} dropped)"
            )
        except InputError as err:
            print(f"- adjacent section over 60 % of the reference, {kw or 'impute'}: refused: {err}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller grid and sizes")
    ap.add_argument("--cells", type=int, default=5000)
    ap.add_argument("--factors", type=int, default=20)
    ap.add_argument("--speed-cells", type=int, default=1_000_000)
    ap.add_argument(
        "--only", choices=["spots", "radius", "jitter", "bent", "refusals"], help="run one section (or 7-8) only"
    )
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"load {load:.2f}, numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )
    n = 2000 if args.quick else args.cells
    if args.only == "spots":
        section_spots(n if args.quick else 8000, 12)
        return
    if args.only == "radius":
        section_radius(n)
        section_jitter_end_to_end(n, [0] if args.quick else [0, 1, 2], args.factors)
        return
    if args.only == "jitter":
        section_jitter_end_to_end(n, [0] if args.quick else [0, 1, 2], args.factors)
        return
    if args.only == "bent":
        section_bent(n, [0] if args.quick else [0, 1, 2], args.factors)
        return
    if args.only == "refusals":
        section_refusals()
        return
    section_registration(n, args.quick)
    section_matching(n)
    section_end_to_end(n, [0] if args.quick else [0, 1, 2], args.factors)
    section_adjacent(n, args.factors)
    section_spots(n if args.quick else 8000, 12)
    section_speed(100_000 if args.quick else args.speed_cells)
    section_radius(n)
    section_jitter_end_to_end(n, [0] if args.quick else [0, 1, 2], args.factors)
    section_bent(n, [0] if args.quick else [0, 1, 2], args.factors)
    section_refusals()


if __name__ == "__main__":
    main()
