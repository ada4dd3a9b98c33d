from __future__ import annotations

import numpy as np
import pytest

from spatialmultiomics import InputError
from spatialmultiomics._warnings import SpatialMultiOmicsWarning
from spatialmultiomics.align import RegistrationResult, Transform, fit_transform, register


def _error_um(est: Transform, truth: Transform, pts: np.ndarray) -> float:
    """RMS distance (µm) by which est(truth(p)) misses p: the registration error over the cells."""
    return float(np.sqrt(((est.apply(truth.apply(pts)) - pts) ** 2).sum(axis=1).mean()))


@pytest.mark.parametrize("kind", ["rigid", "similarity", "affine"])
def test_landmarks_recover_planted_transform(kind: str) -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 1000, size=(12, 2))
    params = {"rigid": {}, "similarity": {"scale": 1.1}, "affine": {"scale": 0.9}}[kind]
    truth = Transform.from_params(rotation_deg=37.0, translation=(250.0, -80.0), **params)
    if kind == "affine":
        truth = Transform(np.array([[1.0, 0.15, 0.0], [0.0, 1.0, 0.0], [0, 0, 1]])) @ truth
    dst = truth.apply(src)
    t = fit_transform(src, dst, kind=kind)
    assert t.kind == kind
    np.testing.assert_allclose(t.matrix, truth.matrix, atol=1e-8)
    res = register(np.zeros((3, 2)), np.zeros((3, 2)), kind=kind, landmarks=(src, dst + rng.normal(0, 0.5, dst.shape)))
    assert res.success and res.method == "landmarks" and res.n_pairs == 12
    assert 0.1 < res.residual_um < 1.0
    assert np.sqrt(((res.transform.apply(src) - truth.apply(src)) ** 2).sum(axis=1).mean()) < 0.5


def test_fit_transform_errors() -> None:
    with pytest.raises(InputError, match="a rigid transform needs at least 2 point pairs, got 1"):
        fit_transform([[0.0, 0.0]], [[1.0, 1.0]])
    with pytest.raises(InputError, match="the points are collinear"):
        fit_transform([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], kind="affine")
    with pytest.raises(InputError, match="src and dst must hold the same number of points, got 3 and 2"):
        fit_transform(np.zeros((3, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("rotation", "shift"), [(-30.0, (-300.0, 450.0)), (12.0, (250.0, 120.0)), (30.0, (-600.0, -200.0))]
)
def test_automatic_registration_recovers_rotation_and_shift(jittered_grid, disk_jitter, rotation, shift) -> None:
    rng = np.random.default_rng(int(rotation) + 100)
    fixed = jittered_grid(1500, rng)
    keep = np.sort(rng.choice(1500, 1350, replace=False))  # 10 % missing
    truth = Transform.from_params(rotation_deg=rotation, translation=shift, center=fixed.mean(axis=0))
    moving = truth.apply((fixed + disk_jitter(1500, 3.0, rng))[keep])
    res = register(moving, fixed)
    assert isinstance(res, RegistrationResult)
    assert res.success and res.method == "points", res.message
    assert _error_um(res.transform, truth, fixed) <= 2.0
    assert res.transform.rotation_deg == pytest.approx(-rotation, abs=0.2)
    assert 1.5 < res.residual_um < 2.5  # RMS of the planted 3 µm jitter (uniform disk: 3 / sqrt(2))
    assert res.n_pairs >= 0.9 * keep.size
    assert res.matched_fraction > res.null_fraction + 0.3
    d = res.to_dict()
    assert d["success"] is True and d["transform"]["kind"] == "rigid"


def test_symmetric_lattice_is_refused(hex_spots) -> None:
    lattice = hex_spots(1500.0, spacing_um=100.0)
    truth = Transform.from_params(rotation_deg=20.0, translation=(300.0, 100.0))
    moving = truth.apply(lattice)
    with pytest.raises(InputError, match="registration failed: ambiguous"):
        register(moving, lattice, max_pair_distance=20.0)
    with pytest.warns(SpatialMultiOmicsWarning, match="registration failed: ambiguous"):
        res = register(moving, lattice, max_pair_distance=20.0, on_failure="warn")
    assert not res.success


def test_unrelated_clouds_are_refused(jittered_grid) -> None:
    rng = np.random.default_rng(7)
    a, b = jittered_grid(1200, rng), jittered_grid(1200, rng)
    res = register(b, a, sections="same", on_failure="ignore")
    assert not res.success
    assert "do not match one to one" in res.message
    # in the same frame they could be adjacent sections: the given frame is kept, no transform
    res = register(b, a, sections="adjacent", on_failure="ignore")
    assert res.success and res.transform == Transform.identity() and "no transform applied" in res.message
    # elsewhere, a square of uniform density is 4-fold symmetric: refused as ambiguous
    res = register(b + 3000.0, a, sections="adjacent", on_failure="ignore")
    assert not res.success and "ambiguous" in res.message


def test_adjacent_sections_register_on_density(jittered_grid) -> None:
    rng = np.random.default_rng(11)
    cells = jittered_grid(3000, rng)
    cells = cells[np.hypot(*(cells - [300.0, 250.0]).T) > 120.0]  # a hole in the tissue breaks the symmetry
    half = rng.random(cells.shape[0]) < 0.5  # different cells in the two sections
    truth = Transform.from_params(rotation_deg=10.0, translation=(200.0, -100.0), center=cells.mean(axis=0))
    res = register(truth.apply(cells[half]), cells[~half], on_failure="ignore")
    assert res.success and res.method == "density", res.message
    assert np.isnan(res.residual_um)
    assert _error_um(res.transform, truth, cells) < 25.0  # a couple of cell diameters: density only


def test_register_input_errors() -> None:
    xy = np.zeros((5, 2))
    with pytest.raises(InputError, match="moving has 5 points; automatic registration needs at least 10"):
        register(xy, np.zeros((20, 2)))
    with pytest.raises(InputError, match=r"sections must be one of \['auto', 'same', 'adjacent'\]"):
        register(xy, xy, sections="serial")
    with pytest.raises(InputError, match="landmarks must be a pair"):
        register(xy, xy, landmarks=(xy,))
    with pytest.raises(InputError, match=r"scale_range must be \(min, max\) with min <= max"):
        register(np.zeros((20, 2)), np.zeros((20, 2)), kind="similarity", scale_range=(1.2, 0.8))


def test_mirrored_section_is_found_only_when_allowed(jittered_grid, disk_jitter) -> None:
    rng = np.random.default_rng(21)
    fixed = jittered_grid(1500, rng)
    keep = np.sort(rng.choice(1500, 1350, replace=False))
    center = fixed.mean(axis=0)
    flip = Transform(np.array([[-1.0, 0.0, 2.0 * center[0]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), kind="affine")
    truth = Transform.from_params(rotation_deg=25.0, translation=(300.0, -200.0), center=center).compose(flip)
    moving = truth.apply((fixed + disk_jitter(1500, 3.0, rng))[keep])
    # not searched: no transform matches the cells one to one, and it says so instead of returning a wrong one
    plain = register(moving, fixed, on_failure="ignore")
    assert not plain.success, plain.message
    res = register(moving, fixed, allow_reflection=True)
    assert res.success and res.method == "points", res.message
    assert "mirrored" in res.message
    assert np.linalg.det(res.transform.linear) < 0
    assert _error_um(res.transform, truth, fixed) <= 2.0
    # an unmirrored section still gets the plain transform when reflections are allowed
    plain_truth = Transform.from_params(rotation_deg=-15.0, translation=(100.0, 50.0), center=center)
    res = register(plain_truth.apply(fixed[keep]), fixed, allow_reflection=True)
    assert res.success and np.linalg.det(res.transform.linear) > 0, res.message
    assert _error_um(res.transform, plain_truth, fixed) <= 2.0


def test_align_passes_allow_reflection(jittered_grid, disk_jitter) -> None:
    import anndata as ad

    from spatialmultiomics.align import align

    rng = np.random.default_rng(5)
    xy = jittered_grid(1200, rng)
    center = xy.mean(axis=0)
    flip = Transform(np.array([[-1.0, 0.0, 2.0 * center[0]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), kind="affine")
    truth = Transform.from_params(rotation_deg=10.0, translation=(400.0, 0.0), center=center).compose(flip)
    rna = ad.AnnData(rng.random((1200, 5)).astype(np.float32))
    rna.obs_names = [f"r{i}" for i in range(1200)]
    rna.obsm["spatial"] = xy
    prot = ad.AnnData(rng.random((1200, 3)).astype(np.float32))
    prot.obs_names = [f"p{i}" for i in range(1200)]
    prot.obsm["spatial"] = truth.apply(xy + disk_jitter(1200, 2.0, rng))
    out = align({"rna": rna, "protein": prot}, route="register", allow_reflection=True)
    info = out.uns["alignment"]["modalities"]["protein"]
    assert "mirrored" in info["registration"]["message"]
    assert np.array_equal(out.obs["protein_id"].to_numpy(), [f"p{i}" for i in range(1200)])


def test_small_patch_far_away_is_refused_with_the_overlap(jittered_grid) -> None:
    """A dense 50 µm patch 10^6 µm away from a 500 µm section: no density fit may "register" it."""
    rng = np.random.default_rng(31)
    fixed = jittered_grid(1500, rng)
    moving = 1e6 + rng.uniform(0.0, 50.0, size=(300, 2))
    res = register(moving, fixed, on_failure="ignore")
    assert not res.success and res.method == "density"
    assert res.message.startswith("the frames do not overlap"), res.message
    assert res.overlap < 0.1 and res.overlap_fixed < 0.1
    assert "need >= 50%" in res.message and "density score" in res.message and "need >= 0.30" in res.message
    assert "300 cells over" in res.message and "1500 cells over" in res.message
    stored = res.to_dict()
    assert stored["overlap"] == pytest.approx(res.overlap) and not stored["reflected"]
    with pytest.raises(InputError, match=r"registration failed: the frames do not overlap: .* overlap \d+% \(need"):
        register(moving, fixed)


def test_overlap_is_reported_for_a_good_fit(jittered_grid, disk_jitter) -> None:
    rng = np.random.default_rng(32)
    fixed = jittered_grid(1200, rng)
    truth = Transform.from_params(rotation_deg=12.0, translation=(200.0, -100.0))
    res = register(truth.apply(fixed + disk_jitter(1200, 2.0, rng)), fixed)
    assert res.success and res.overlap_fixed > 0.95 and res.overlap_moving > 0.95


def test_mirror_is_tried_automatically_when_the_plain_fit_is_poor(jittered_grid, disk_jitter) -> None:
    rng = np.random.default_rng(21)
    fixed = jittered_grid(1500, rng)
    center = fixed.mean(axis=0)
    flip = Transform(np.array([[-1.0, 0.0, 2.0 * center[0]], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), kind="affine")
    truth = Transform.from_params(rotation_deg=25.0, translation=(300.0, -200.0), center=center).compose(flip)
    moving = truth.apply(fixed + disk_jitter(1500, 3.0, rng))
    res = register(moving, fixed, allow_reflection="auto")
    assert res.success and res.method == "points" and res.to_dict()["reflected"], res.message
    assert "mirrored section" in res.message and "the unreflected section fit poorly" in res.message
    assert _error_um(res.transform, truth, fixed) <= 2.0
    # a section that fits without the mirror is not searched again and keeps its plain transform
    plain = Transform.from_params(rotation_deg=-15.0, translation=(100.0, 50.0), center=center)
    res = register(plain.apply(fixed), fixed, allow_reflection="auto")
    assert res.success and np.linalg.det(res.transform.linear) > 0 and "mirror" not in res.message
    with pytest.raises(InputError, match="allow_reflection must be True, False or 'auto', got 'yes'"):
        register(moving, fixed, allow_reflection="yes")
