"""Non-rigid refinement after the rigid registration (affine + thin-plate spline)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._keys import Keys
from spatialmultiomics._warnings import SpatialMultiOmicsWarning
from spatialmultiomics.align import Transform, align
from spatialmultiomics.align._warp import fit_warp, tile_shifts


def _bend(xy: np.ndarray, amp: float) -> np.ndarray:
    """A smooth warp of a section: up to ``amp`` µm, changing over ~1 mm."""
    out = xy.copy()
    out[:, 0] += amp * np.sin(2 * np.pi * xy[:, 1] / 900.0)
    out[:, 1] += 0.7 * amp * np.sin(2 * np.pi * xy[:, 0] / 1100.0)
    return out


def _section(cells: np.ndarray, ids: list[str]) -> ad.AnnData:
    adata = ad.AnnData(np.ones((cells.shape[0], 2), dtype=np.float32), obs=pd.DataFrame(index=ids))
    adata.var_names = ["a", "b"]
    adata.obsm[Keys.SPATIAL] = cells
    return adata


def _pair(jittered_grid, amp: float, jitter: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    cells = jittered_grid(4000, rng, spacing=12.0)
    cells = cells[np.hypot(*(cells - [600.0, 600.0]).T) > 150.0]
    keep = np.flatnonzero(rng.random(cells.shape[0]) > 0.1)
    t = Transform.from_params(rotation_deg=12.0, translation=(300.0, -200.0), center=cells.mean(axis=0))
    other = t.apply(_bend(cells, amp) + rng.normal(0.0, jitter, cells.shape))[keep]
    shuffle = rng.permutation(keep.size)
    rna = _section(cells, [f"r{i}" for i in range(cells.shape[0])])
    prot = _section(other[shuffle], [f"p{i}" for i in range(keep.size)])
    truth = dict(zip(prot.obs_names, rna.obs_names[keep[shuffle]], strict=True))
    return rna, prot, truth


def _precision_recall(out, truth: dict[str, str], n_other: int) -> tuple[float, float]:
    status = out.obs["protein_status"].astype(str).to_numpy()
    matched = status == "matched"
    right = np.array([truth[p] == r for p, r in zip(out.obs["protein_id"], out.obs_names, strict=True)])
    return float(right[matched].mean()), float(right[matched].sum() / n_other)


def test_fit_warp_recovers_a_planted_field() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 1000, size=(3000, 2))
    dst = _bend(src, 8.0) + rng.normal(0.0, 1.0, src.shape)
    warp, rep = fit_warp(src, dst, extent=np.array([[0.0, 0.0], [1000.0, 1000.0]]), seed=0)
    # held-out pairs: from 6.8 µm (the bend) to the noise of the pairs (1 µm per axis: sqrt(2) RMS)
    assert warp is not None and rep["applied"] and rep["heldout_rms_warp_um"] < 1.6 < rep["heldout_rms_rigid_um"]
    probe = rng.uniform(50, 950, size=(500, 2))
    err = np.linalg.norm(warp.apply(probe) - _bend(probe, 8.0), axis=1)
    assert np.sqrt(np.mean(err**2)) < 0.5  # 8 µm planted, 1 µm noise per pair
    # independent jitter only: nothing to predict, no warp
    none, rep = fit_warp(src, src + rng.normal(0.0, 3.0, src.shape), extent=np.array([[0.0, 0.0], [1e3, 1e3]]))
    assert none is None and not rep["applied"] and "jitter" in rep["reason"]


def test_tile_shifts_find_a_planted_shift(jittered_grid) -> None:
    cells = jittered_grid(3000, np.random.default_rng(2))
    centres, shifts, _ = tile_shifts(cells + np.array([7.0, -5.0]), cells, spacing=12.0)
    assert centres.shape[0] >= 30
    np.testing.assert_allclose(np.median(shifts, axis=0), [-7.0, 5.0], atol=1.0)


def test_warped_section_pairs_after_the_refinement(jittered_grid) -> None:
    rna, prot, truth = _pair(jittered_grid, amp=10.0, jitter=1.0)
    # 10 µm of bending: after the best rigid transform most cells lie nearer another cell than their own, so
    # without the warp the section is taken for an adjacent one (and set apart: no linked features here)
    with pytest.warns(SpatialMultiOmicsWarning, match="the sections are treated as adjacent"):
        rigid = align({"rna": rna, "protein": prot}, warp="none", unmatched="drop")
    assert rigid.uns["alignment"]["modalities"]["protein"]["route"] == "separate"
    out = align({"rna": rna, "protein": prot}, unmatched="drop")
    p1, r1 = _precision_recall(out, truth, prot.n_obs)
    entry = out.uns["alignment"]["modalities"]["protein"]
    assert entry["route"] == "register" and "non-rigid refinement" in entry["reason"]
    assert p1 >= 0.98 and r1 >= 0.95
    warp = entry["warp"]
    assert warp["applied"] and 5.0 < warp["max_displacement_um"] < 20.0
    assert warp["n_matched_warped"] > warp["n_matched_rigid"] and "tiles: applied" in warp["rounds"]
    assert warp["field"].shape == (128, 128, 2)


def test_unwarped_section_is_left_rigid(jittered_grid) -> None:
    rna, prot, truth = _pair(jittered_grid, amp=0.0, jitter=1.0, seed=3)
    out = align({"rna": rna, "protein": prot}, unmatched="drop")
    warp = out.uns["alignment"]["modalities"]["protein"]["warp"]
    p, r = _precision_recall(out, truth, prot.n_obs)
    assert p >= 0.99 and r >= 0.98
    assert not warp["applied"] or warp["max_displacement_um"] < 2.0
