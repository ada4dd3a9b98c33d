from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics import InputError, Keys
from spatialmultiomics._demo import score_labels
from spatialmultiomics._mudata import read_h5mu, write_h5mu
from spatialmultiomics._warnings import SpatialMultiOmicsWarning
from spatialmultiomics.align import Transform, align


def _modality(xy: np.ndarray, ids: list[str], n_vars: int, seed: int, *, counts: bool = False) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    if counts:
        X = sp.csr_matrix(rng.poisson(1.0, size=(xy.shape[0], n_vars)).astype(np.float32))
    else:
        X = rng.gamma(2.0, 1.0, size=(xy.shape[0], n_vars)).astype(np.float32)
    adata = ad.AnnData(X, obs=pd.DataFrame(index=ids))
    adata.var_names = [f"f{seed}_{j}" for j in range(n_vars)]
    adata.obsm[Keys.SPATIAL] = xy.copy()
    return adata


def _pair(
    jittered_grid,
    disk_jitter,
    *,
    n: int = 1200,
    seed: int = 0,
    transform: Transform | None = None,
    missing: float = 0.1,
    jitter: float = 3.0,
):
    """RNA on ``n`` cells; protein on 90 % of the same cells, jittered, shuffled, new ids, optionally moved."""
    rng = np.random.default_rng(seed)
    xy = jittered_grid(n, rng)
    rna = _modality(xy, [f"r{i}" for i in range(n)], 6, seed, counts=True)
    keep = np.sort(rng.choice(n, int((1 - missing) * n), replace=False))
    pxy = (xy + disk_jitter(n, jitter, rng))[keep]
    if transform is not None:
        pxy = transform.apply(pxy)
    order = rng.permutation(keep.size)
    prot = _modality(pxy[order], [f"p{i}" for i in range(keep.size)], 4, seed + 1)
    truth = pd.Series([f"r{i}" for i in keep[order]], index=prot.obs_names)  # protein id -> true rna id
    return rna, prot, truth


def _check_partners(out, prot: ad.AnnData, truth: pd.Series) -> float:
    """Share of matched rows whose protein partner is the true cell, and X equals that partner's row."""
    status = out.obs["protein_status"].astype(str).to_numpy()
    pid = out.obs["protein_id"].to_numpy()
    matched = status == "matched"
    np.testing.assert_array_equal(out["protein"].X[matched], prot[pid[matched]].X)
    return float(np.mean(truth.loc[pid[matched]].to_numpy() == out.obs_names.to_numpy()[matched]))


def test_auto_joins_on_ids() -> None:
    mdata = smo.datasets.paper_benchmark(seed=0)
    out = align({"rna": mdata["rna"], "protein": mdata["protein"]})
    info = out.uns["alignment"]
    assert info["route"] == "ids" and info["requested"] == "auto" and info["n_shared"] == 200
    assert info["reasons"]["protein"] == "100% of ids shared"
    assert list(out.obs_names) == list(mdata.obs_names)


def test_auto_matches_cells_in_the_same_frame(jittered_grid, disk_jitter) -> None:
    rna, prot, truth = _pair(jittered_grid, disk_jitter)
    out = align({"rna": rna, "protein": prot})
    info = out.uns["alignment"]
    assert info["route"] == "match" and info["reference"] == "rna"
    entry = info["modalities"]["protein"]
    assert entry["route"] == "match" and "same frame" in entry["reason"]
    assert list(out.obs_names) == list(rna.obs_names)  # every row keeps its real id, in the reference order
    assert _check_partners(out, prot, truth) >= 0.97
    assert entry["n_matched"] >= 0.95 * prot.n_obs
    assert entry["n_matched"] + entry["n_imputed"] == rna.n_obs
    assert set(out.obs["protein_status"].astype(str)) == {"matched", "imputed"}
    assert (out.obs.loc[out.obs["protein_status"] == "matched", "protein_distance_um"] <= 5.0).all()
    np.testing.assert_array_equal(out.obsm[Keys.SPATIAL], rna.obsm[Keys.SPATIAL])
    np.testing.assert_array_equal(out["protein"].obsm["spatial_source"], prot[out.obs["protein_id"]].obsm["spatial"])
    # dropping instead of imputing keeps only matched cells
    dropped = align({"rna": rna, "protein": prot}, unmatched="drop")
    assert dropped.n_obs == entry["n_matched"]
    assert set(dropped.obs["protein_status"].astype(str)) == {"matched"}
    assert dropped.uns["alignment"]["dropped"]["rna"] == rna.n_obs - entry["n_matched"]


def test_imputation_nearest_or_alike_in_expression(jittered_grid, disk_jitter) -> None:
    rng = np.random.default_rng(8)
    rna, prot, truth = _pair(jittered_grid, disk_jitter, n=1000, seed=8)
    # two planted types, mixed in space: type decides RNA (gene 0 vs 1) and protein (channel 0 vs 1)
    rtype = pd.Series(rng.integers(0, 2, rna.n_obs), index=rna.obs_names)
    counts = rng.poisson(1.0, size=(rna.n_obs, 6)).astype(np.float32)
    counts[np.arange(rna.n_obs), rtype.to_numpy()] += 30
    rna.X = sp.csr_matrix(counts)
    ptype = rtype.loc[truth.loc[prot.obs_names]].to_numpy()
    pX = rng.gamma(2.0, 1.0, size=(prot.n_obs, 4)).astype(np.float32)
    pX[np.arange(prot.n_obs), ptype] += 50
    prot.X = pX
    alike = align({"rna": rna, "protein": prot})
    imputed = (alike.obs["protein_status"] == "imputed").to_numpy()
    assert imputed.sum() >= 0.08 * rna.n_obs
    assert alike.uns["alignment"]["modalities"]["protein"]["impute"] == "expression"
    guess = np.argmax(alike["protein"].X[imputed, :2], axis=1)
    assert np.mean(guess == rtype.to_numpy()[imputed]) >= 0.95  # the type comes from alike cells
    near = align({"rna": rna, "protein": prot}, impute="nearest")
    imputed = (near.obs["protein_status"] == "imputed").to_numpy()
    pid = near.obs["protein_id"].to_numpy()
    np.testing.assert_array_equal(near["protein"].X, prot[pid].X)  # a copy of the nearest cell, right or wrong
    d = np.linalg.norm(near["protein"].obsm["spatial_source"][imputed] - rna.obsm[Keys.SPATIAL][imputed], axis=1)
    np.testing.assert_allclose(d, near.obs["protein_distance_um"].to_numpy()[imputed])
    guess = np.argmax(near["protein"].X[imputed, :2], axis=1)
    assert np.mean(guess == rtype.to_numpy()[imputed]) < 0.8  # a random neighbour: about half right


def test_auto_registers_when_the_frames_differ(jittered_grid, disk_jitter) -> None:
    truth_t = Transform.from_params(rotation_deg=-25.0, translation=(350.0, -420.0), center=(200.0, 200.0))
    rna, prot, truth = _pair(jittered_grid, disk_jitter, transform=truth_t, seed=4)
    out = align({"rna": rna, "protein": prot}, method="optimal")
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "register", entry["reason"]
    t = Transform.from_dict(entry["transform"])
    assert t.rotation_deg == pytest.approx(25.0, abs=0.2)
    assert 1.5 < entry["residual_um"] < 2.5
    assert _check_partners(out, prot, truth) >= 0.97
    assert entry["registration"]["success"]
    # the alignment record survives .h5mu
    # (checked in test_h5mu_round_trip below for the full object)


def test_landmarks_replace_the_search(jittered_grid, disk_jitter) -> None:
    truth_t = Transform.from_params(rotation_deg=40.0, translation=(100.0, 50.0))
    rna, prot, truth = _pair(jittered_grid, disk_jitter, transform=truth_t, seed=5, jitter=1.0)
    ref_pts = np.array([[50.0, 50.0], [350.0, 60.0], [200.0, 380.0]])
    out = align({"rna": rna, "protein": prot}, landmarks={"protein": (truth_t.apply(ref_pts), ref_pts)})
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["registration"]["method"] == "landmarks"
    assert _check_partners(out, prot, truth) >= 0.97


def test_generated_ids_are_checked_against_positions(jittered_grid, disk_jitter) -> None:
    rna, prot, _ = _pair(jittered_grid, disk_jitter, missing=0.0, jitter=1.0)
    prot.obs_names = [f"cell_{i}" for i in range(prot.n_obs)]  # row numbers: same names, different cells
    rna.obs_names = [f"cell_{i}" for i in range(rna.n_obs)]
    for adata in (rna, prot):
        adata.uns[Keys.PROVENANCE] = {"platform": "generic", "id_column": ""}
    out = align({"rna": rna, "protein": prot})
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "match"
    assert out.uns["alignment"]["route"] == "match"


def test_auto_aggregates_cells_into_visium_spots(hex_spots, jittered_grid) -> None:
    rng = np.random.default_rng(2)
    cells_xy = jittered_grid(2500, rng)
    side = float(cells_xy.max())
    spots_xy = hex_spots(side)
    rna = _modality(spots_xy, [f"BC{i}-1" for i in range(spots_xy.shape[0])], 5, 0, counts=True)
    prot = _modality(cells_xy, [f"c{i}" for i in range(2500)], 3, 1)
    out = align({"protein": prot, "rna": rna})  # the spots become the reference even when listed second
    info = out.uns["alignment"]
    assert info["reference"] == "rna" and info["route"] == "spots"
    d = np.linalg.norm(spots_xy[:, None] - cells_xy[None], axis=2)
    member = d <= 27.5
    n_cells = member.sum(axis=1)
    assert (n_cells > 0).all() and n_cells.max() <= 25
    np.testing.assert_array_equal(out.obs["protein_n_cells"].to_numpy(), n_cells)
    np.testing.assert_allclose(out["protein"].X, (member @ prot.X) / n_cells[:, None], rtol=1e-5)
    entry = info["modalities"]["protein"]
    assert entry["how"] == "mean" and entry["n_aggregated"] == spots_xy.shape[0]
    assert entry["n_other_in_spots"] == member.any(axis=0).sum()
    # counts are summed
    prot.uns[Keys.PROVENANCE] = {"kind": "counts"}
    summed = align({"protein": prot, "rna": rna}, route="spots")
    np.testing.assert_allclose(summed["protein"].X, member @ prot.X, rtol=1e-5)


def test_empty_spots_follow_impute_or_drop(hex_spots, jittered_grid) -> None:
    rng = np.random.default_rng(3)
    cells_xy = jittered_grid(2500, rng)
    spots_xy = hex_spots(float(cells_xy.max()))
    hole = np.linalg.norm(cells_xy - spots_xy[10], axis=1) < 40.0  # spot 10 has no cells
    prot = _modality(cells_xy[~hole], [f"c{i}" for i in range((~hole).sum())], 3, 1)
    rna = _modality(spots_xy, [f"BC{i}-1" for i in range(spots_xy.shape[0])], 5, 0, counts=True)
    rna.uns[Keys.PROVENANCE] = {"platform": "visium"}
    kept = align({"rna": rna, "protein": prot})
    assert kept.n_obs == spots_xy.shape[0]
    assert kept.obs["protein_status"].iloc[10] == "imputed" and kept.obs["protein_n_cells"].iloc[10] == 0
    nearest = np.argmin(np.linalg.norm(prot.obsm[Keys.SPATIAL] - spots_xy[10], axis=1))
    np.testing.assert_allclose(kept["protein"].X[10], prot.X[nearest])
    dropped = align({"rna": rna, "protein": prot}, unmatched="drop")
    assert dropped.n_obs == spots_xy.shape[0] - 1 and "BC10-1" not in dropped.obs_names


def test_adjacent_sections_without_linked_features_are_set_apart(jittered_grid) -> None:
    rng = np.random.default_rng(11)
    cells = jittered_grid(3000, rng)
    cells = cells[np.hypot(*(cells - [300.0, 250.0]).T) > 120.0]
    half = rng.random(cells.shape[0]) < 0.5
    truth_t = Transform.from_params(rotation_deg=10.0, translation=(200.0, -100.0), center=cells.mean(axis=0))
    rna = _modality(cells[~half], [f"r{i}" for i in range((~half).sum())], 4, 0, counts=True)
    prot = _modality(truth_t.apply(cells[half]), [f"p{i}" for i in range(half.sum())], 3, 1)
    with pytest.warns(SpatialMultiOmicsWarning, match="sections are treated as adjacent"):
        out = align({"rna": rna, "protein": prot}, n_neighbors=3)
    info = out.uns["alignment"]
    entry = info["modalities"]["protein"]
    # no linked feature: no cell of one section stands in for a cell of the other
    assert entry["route"] == "separate" and entry["registration"]["method"] == "density"
    assert "no linked feature" in entry["reason"] and entry["positions_used"]
    assert info["separate"] == ["protein"] and list(out.mod) == ["rna"]
    assert out.n_obs == rna.n_obs and info["n_reference_dropped"] == 0
    # the transform that places the protein cells on the RNA frame: within a few cell spacings of the truth
    t = Transform.from_dict(entry["transform"])
    err = np.linalg.norm(t.apply(prot.obsm[Keys.SPATIAL]) - cells[half], axis=1)
    assert np.sqrt(np.mean(err**2)) < 30.0


def test_explicit_separate_route_in_the_same_frame(jittered_grid) -> None:
    rng = np.random.default_rng(12)
    cells = jittered_grid(1500, rng)
    cells = cells[np.hypot(*(cells - [150.0, 250.0]).T) > 90.0]
    half = rng.random(cells.shape[0]) < 0.5
    rna = _modality(cells[~half], [f"r{i}" for i in range((~half).sum())], 4, 0, counts=True)
    prot = _modality(cells[half], [f"p{i}" for i in range(half.sum())], 3, 1)
    for route in ("separate", "adjacent"):
        out = align({"rna": rna, "protein": prot}, route=route)
        entry = out.uns["alignment"]["modalities"]["protein"]
        assert entry["route"] == "separate" and list(out.mod) == ["rna"]
        t = Transform.from_dict(entry["transform"])
        assert abs(t.rotation_deg) < 3.0 and np.abs(t.translation).max() < 40.0


def test_h5mu_round_trip(jittered_grid, disk_jitter, tmp_path: Path) -> None:
    rna, prot, _ = _pair(jittered_grid, disk_jitter, n=600)
    out = align({"rna": rna, "protein": prot})
    write_h5mu(out, tmp_path / "a.h5mu")
    back = read_h5mu(tmp_path / "a.h5mu")
    entry = back.uns["alignment"]["modalities"]["protein"]
    assert Transform.from_dict(entry["transform"]).allclose(Transform.identity())
    assert int(entry["n_matched"]) == out.uns["alignment"]["modalities"]["protein"]["n_matched"]
    assert list(back.obs["protein_id"]) == list(out.obs["protein_id"])


def test_three_modalities_and_errors(jittered_grid, disk_jitter) -> None:
    rna, prot, _ = _pair(jittered_grid, disk_jitter, n=600)
    met = _modality(np.asarray(rna.obsm[Keys.SPATIAL]), list(rna.obs_names), 2, 9)  # ids shared with rna
    out = align({"rna": rna, "protein": prot, "metabolite": met})
    info = out.uns["alignment"]
    assert info["route"] == "mixed"
    assert info["modalities"]["metabolite"]["route"] == "ids"
    assert info["modalities"]["protein"]["route"] == "match"
    with pytest.raises(InputError, match=r"route must be one of \['auto', 'ids', 'match', 'register', 'spots', "):
        align({"rna": rna, "protein": prot}, route="nearest")
    with pytest.raises(InputError, match=r"reference='atac' is not one of the modalities \['rna', 'protein'\]"):
        align({"rna": rna, "protein": prot}, reference="atac")
    with pytest.raises(InputError, match="landmarks has an entry for 'atac'"):
        align({"rna": rna, "protein": prot}, landmarks={"atac": (np.zeros((2, 2)), np.zeros((2, 2)))})
    with pytest.raises(InputError, match=r"mods\['protein'\] must be an AnnData, got ndarray"):
        align({"rna": rna, "protein": np.zeros((2, 2))})
    with pytest.raises(InputError, match="mods must be a non-empty mapping"):
        align({})
    bad = prot.copy()
    del bad.obsm[Keys.SPATIAL]
    with pytest.raises(InputError, match=r"mods\['protein'\] has no obsm\['spatial'\] coordinates"):
        align({"rna": rna, "protein": bad})


def test_unrelated_sections_fail_clearly(jittered_grid) -> None:
    rng = np.random.default_rng(21)
    rna = _modality(jittered_grid(800, rng), [f"r{i}" for i in range(800)], 3, 0, counts=True)
    prot = _modality(jittered_grid(800, rng) + 5000.0, [f"p{i}" for i in range(800)], 3, 1)
    with pytest.raises(InputError, match="automatic registration failed: ambiguous"):
        align({"rna": rna, "protein": prot})


def _moved_protein(mdata, seed: int = 0):
    """Protein of ``mdata`` rotated by 20°, shifted by hundreds of µm, jittered by <= 3 µm, 10 % missing, new ids."""
    rng = np.random.default_rng(seed)
    prot = mdata["protein"]
    n = prot.n_obs
    keep = np.sort(rng.choice(n, int(0.9 * n), replace=False))
    xy = np.asarray(prot.obsm[Keys.SPATIAL])
    ang, r = rng.uniform(0, 2 * np.pi, n), 3.0 * np.sqrt(rng.random(n))
    moved = Transform.from_params(rotation_deg=20.0, translation=(300.0, -450.0), center=xy.mean(axis=0)).apply(
        xy + np.c_[r * np.cos(ang), r * np.sin(ang)]
    )
    out = prot[keep].copy()
    out.obsm[Keys.SPATIAL] = moved[keep]
    out = out[rng.permutation(out.n_obs)].copy()
    out.obs_names = [f"codex_{i}" for i in range(out.n_obs)]
    return out


def test_pipeline_end_to_end_with_moved_protein_frame() -> None:
    # 3,000 cells: at 2,000 (1,800 matched) the default clustering annotation can leave the 54 Tregs inside the
    # CD4 T cells whatever the alignment (docs/markers.md, known limits), which is not what this test is about
    mdata = smo.datasets.synthetic_tissue(n_cells=3000, seed=0)
    markers = dict(mdata.uns["markers"])
    truth = mdata.obs["true_cell_type"].astype(str)
    same = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=20, markers=markers)
    moved = smo.run_pipeline(mdata["rna"], _moved_protein(mdata), n_factors=20, markers=markers)
    info = moved.mdata.uns["alignment"]
    assert info["route"] == "register"
    assert moved.mdata.uns["pipeline"]["params"]["align_route"] == "register"
    f_same = score_labels(truth, same.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"]
    f_moved = score_labels(truth, moved.shared_labels.set_index("cell_id")["cell_type"])["macro_f1"]
    assert list(moved.shared_labels["cell_id"]) == list(mdata.obs_names)
    assert f_moved >= f_same - 0.05, (f_same, f_moved)


def _far_patch(prot: ad.AnnData, seed: int = 0) -> ad.AnnData:
    """The protein table moved into a 50 µm patch 10^6 µm away, under ids that never match."""
    rng = np.random.default_rng(seed)
    out = prot.copy()
    out.obsm[Keys.SPATIAL] = 1e6 + rng.uniform(0.0, 50.0, size=(prot.n_obs, 2))
    out.obs_names = [f"p{i}" for i in range(prot.n_obs)]
    return out


def test_frames_that_do_not_overlap_are_refused() -> None:
    mdata = smo.datasets.paper_benchmark(seed=0)
    prot = _far_patch(mdata["protein"])
    with pytest.raises(
        InputError,
        match=r"alignment of 'protein' onto 'rna': .*automatic registration failed: the frames do not overlap: "
        r".*% of the fixed cells \(200 cells over .*\) lie within the moving cloud's footprint .* overlap \d+% "
        r"\(need >= 50%\), density score 0\.\d+ \(need >= 0\.30\)",
    ):
        align({"rna": mdata["rna"], "protein": prot})
    with pytest.raises(InputError, match="registration failed: the frames do not overlap"):
        align({"rna": mdata["rna"], "protein": prot}, route="adjacent")


def test_cli_refuses_frames_that_do_not_overlap(tmp_path: Path, capsys) -> None:
    from spatialmultiomics.cli._main import main

    mdata = smo.datasets.paper_benchmark(seed=0)
    tables = smo.datasets.write_tables(mdata, tmp_path / "in")
    frame = pd.read_csv(tables["protein"])
    rng = np.random.default_rng(0)
    frame[["x", "y"]] = 1e6 + rng.uniform(0.0, 50.0, size=(len(frame), 2))
    frame["cell_id"] = [f"p{i}" for i in range(len(frame))]
    frame.to_csv(tables["protein"], index=False)
    args = ["run", "--tx", str(tables["rna"]), "--prot", str(tables["protein"]), "-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--quiet", "--no-figures"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "the frames do not overlap" in err and "need >= 50%" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _jittered_moved_pair(jittered_grid, *, n: int = 1500, seed: int = 40, sigma: float = 3.0):
    """Same section imaged twice: Gaussian jitter ``sigma`` per axis, 10 % missing, new ids, rotated 12°."""
    rng = np.random.default_rng(seed)
    xy = jittered_grid(n, rng, spacing=16.0)  # ~12 µm between neighbouring cells
    rna = _modality(xy, [f"r{i}" for i in range(n)], 6, seed, counts=True)
    keep = np.sort(rng.choice(n, int(0.9 * n), replace=False))
    moved = Transform.from_params(rotation_deg=12.0, translation=(250.0, -180.0), center=xy.mean(axis=0))
    pxy = moved.apply((xy + rng.normal(0.0, sigma, size=xy.shape))[keep])
    order = rng.permutation(keep.size)
    prot = _modality(pxy[order], [f"p{i}" for i in range(keep.size)], 4, seed + 1)
    truth = pd.Series([f"r{i}" for i in keep[order]], index=prot.obs_names)
    return rna, prot, truth


def _precision_recall(out, truth: pd.Series) -> tuple[float, float]:
    matched = (out.obs["protein_status"] == "matched").to_numpy()
    pid = out.obs["protein_id"].to_numpy()[matched]
    correct = truth.loc[pid].to_numpy() == out.obs_names.to_numpy()[matched]
    return float(correct.mean()), float(correct.sum() / truth.size)


def test_match_radius_from_the_data_keeps_jittered_pairs(jittered_grid, caplog) -> None:
    import logging

    rna, prot, truth = _jittered_moved_pair(jittered_grid)
    with caplog.at_level(logging.INFO, logger="spatialmultiomics"):
        out = align({"rna": rna, "protein": prot})  # match_radius='auto' is the default
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "register", entry["reason"]
    assert out.uns["alignment"]["params"]["match_radius_um"] == "auto"
    chosen = entry["match_radius"]
    assert chosen["requested"] == "auto" and chosen["found"] and chosen["bound"] in ("recall", "chance")
    assert chosen["sigma_um"] == pytest.approx(3.0, rel=0.15)
    assert 7.5 < entry["match_radius_um"] == chosen["radius_um"] < 12.0
    assert f"match radius {chosen['radius_um']:.3g} µm from the data" in caplog.text
    precision, recall = _precision_recall(out, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert (out.obs.loc[out.obs["protein_status"] == "matched", "protein_distance_um"] <= chosen["radius_um"]).all()
    # the old fixed 5 µm loses about a quarter of the pairs
    fixed = align({"rna": rna, "protein": prot}, match_radius=5.0)
    assert fixed.uns["alignment"]["modalities"]["protein"]["match_radius"]["requested"] == 5.0
    assert _precision_recall(fixed, truth)[1] < 0.8
    with pytest.raises(InputError, match="match_radius must be 'auto' or a positive number of µm, got 'wide'"):
        align({"rna": rna, "protein": prot}, match_radius="wide")


def test_never_drops_more_than_5_percent_unless_asked(jittered_grid, disk_jitter) -> None:
    rng = np.random.default_rng(13)
    cells = jittered_grid(2000, rng)
    rna = _modality(cells, [f"r{i}" for i in range(cells.shape[0])], 4, 0, counts=True)
    # the protein section covers only the left 60 % of the RNA section
    left = cells[:, 0] < 0.6 * cells[:, 0].max()
    other = rng.random(cells.shape[0]) < 0.5
    adjacent = _modality(cells[left & other] + 6.0, [f"a{i}" for i in range((left & other).sum())], 3, 1)
    frame = {"transforms": {"protein": Transform.identity()}}
    # different cells and no linked feature: set apart, nothing dropped
    apart = align({"rna": rna, "protein": adjacent}, route="adjacent", **frame)
    assert apart.n_obs == rna.n_obs and apart.uns["alignment"]["separate"] == ["protein"]
    # same cells: the uncovered ones are imputed from alike cells (kept), or refused when only space may fill them
    same = _modality(cells[left] + disk_jitter(int(left.sum()), 2.0, rng), [f"s{i}" for i in range(left.sum())], 3, 2)
    out = align({"rna": rna, "protein": same})
    assert out.n_obs == rna.n_obs and out.uns["alignment"]["n_reference_dropped"] == 0
    with pytest.raises(InputError, match="unmatched='impute' leaves out at most 5%"):
        align({"rna": rna, "protein": same}, impute="nearest")
    # shared ids for 85 % of the cells: 'auto' imputes the rest instead of joining and dropping 15 %
    ids = _modality(cells[:1700], [f"r{i}" for i in range(1700)], 3, 3)
    out = align({"rna": rna, "protein": ids})
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert out.n_obs == rna.n_obs and entry["route"] == "ids"
    assert entry["n_matched"] == 1700 and entry["n_imputed"] == 300
    assert (out.obs["protein_status"].iloc[:1700] == "id").all() and (
        out.obs["protein_status"].iloc[1700:] == "imputed"
    ).all()
    assert align({"rna": rna, "protein": ids}, unmatched="drop").n_obs == 1700
    assert align({"rna": rna, "protein": ids}, route="ids").n_obs == 1700


def test_auto_route_tries_the_mirror_image(jittered_grid, disk_jitter, caplog) -> None:
    import logging

    rng = np.random.default_rng(6)
    xy = jittered_grid(1200, rng)
    center = xy.mean(axis=0)
    flip = Transform(np.array([[-1.0, 0.0, 2.0 * center[0]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), kind="affine")
    truth = Transform.from_params(rotation_deg=10.0, translation=(400.0, 0.0), center=center).compose(flip)
    rna = _modality(xy, [f"r{i}" for i in range(1200)], 5, 0, counts=True)
    prot = _modality(truth.apply(xy + disk_jitter(1200, 2.0, rng)), [f"p{i}" for i in range(1200)], 3, 1)
    with caplog.at_level(logging.WARNING, logger="spatialmultiomics"):
        out = align({"rna": rna, "protein": prot})
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "register" and entry["registration"]["reflected"], entry["reason"]
    assert "mirrored section" in entry["reason"] and "the unreflected section fit poorly" in entry["reason"]
    assert "the section is mirrored" in caplog.text
    assert np.array_equal(out.obs["protein_id"].to_numpy(), [f"p{i}" for i in range(1200)])
