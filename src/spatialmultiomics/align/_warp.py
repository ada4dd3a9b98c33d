"""Smooth non-rigid refinement after the rigid registration: affine + thin-plate spline on matched cells.

Sections stretch and shear when they are cut, mounted and stained, so one rigid transform leaves residuals that
grow across the tissue (several µm at the far edge of a large section). After the rigid step the cells that pair
up serve as landmarks: their displacements are fitted by a smoothing thin-plate spline with an affine part
(:class:`scipy.interpolate.RBFInterpolator`, ``kernel='thin_plate_spline'``, ``degree=1``), evaluated on a grid
and interpolated to every cell, and the cells are matched again.

A warp is only applied when it predicts held-out pairs better: the pairs are split 80/20 (seeded); the smoothing
is chosen on the 80 % from a log grid, and the warp is kept only when it lowers the squared residuals of the held-out
20 % against the rigid fit (paired one-sided test at the 1 % level). Jitter between two segmentations (independent per cell)
cannot be predicted from the other cells, so on unwarped sections no warp is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Warp", "fit_warp", "refine", "tile_shifts"]

#: one-sided 1 % level of the paired test on held-out pairs that a warp must pass to be applied
_Z_ONE_PERCENT = 2.326
_MAX_CONTROL = 1500
_GRID = 128
_MIN_PAIRS = 50


@dataclass
class Warp:
    """A displacement field given on a regular grid (µm), bilinearly interpolated between grid nodes.

    Attributes
    ----------
    origin
        Lower-left corner of the grid (x, y).
    step
        Grid spacing (x, y) in µm.
    field
        (ny, nx, 2) displacement (dx, dy) at the grid nodes.
    """

    origin: np.ndarray
    step: np.ndarray
    field: np.ndarray

    def apply(self, xy: Any) -> np.ndarray:
        """Move points by the field (outside the grid: the displacement at the nearest edge)."""
        from scipy.ndimage import map_coordinates

        xy = np.asarray(xy, dtype=np.float64)[:, :2]
        ny, nx = self.field.shape[:2]
        gx = np.clip((xy[:, 0] - self.origin[0]) / self.step[0], 0, nx - 1)
        gy = np.clip((xy[:, 1] - self.origin[1]) / self.step[1], 0, ny - 1)
        out = xy.copy()
        for d in range(2):
            out[:, d] += map_coordinates(self.field[:, :, d], [gy, gx], order=1, mode="nearest")
        return out

    def then(self, other: Warp) -> Warp:
        """This warp followed by ``other``, on this warp's grid."""
        ny, nx = self.field.shape[:2]
        gx = self.origin[0] + self.step[0] * np.arange(nx)
        gy = self.origin[1] + self.step[1] * np.arange(ny)
        nodes = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        field = other.apply(self.apply(nodes)) - nodes
        return Warp(origin=self.origin.copy(), step=self.step.copy(), field=field.reshape(ny, nx, 2))

    def magnitude(self) -> tuple[float, float]:
        """RMS and largest displacement (µm) over the grid."""
        norm = np.linalg.norm(self.field, axis=2)
        return float(np.sqrt(np.mean(norm**2))), float(norm.max())

    def to_dict(self) -> dict[str, Any]:
        return {"origin": self.origin.tolist(), "step": self.step.tolist(), "field": self.field}


def _fit(src: np.ndarray, disp: np.ndarray, smoothing: float) -> Any:
    from scipy.interpolate import RBFInterpolator

    return RBFInterpolator(src, disp, kernel="thin_plate_spline", degree=1, smoothing=smoothing)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(x**2, axis=1)))) if x.size else float("nan")


def fit_warp(
    moved: np.ndarray, fixed: np.ndarray, *, extent: np.ndarray, seed: int | None = 0, min_pairs: int = _MIN_PAIRS
) -> tuple[Warp | None, dict[str, Any]]:
    """Fit a smooth displacement from matched pairs (``moved[i]`` should lie on ``fixed[i]``).

    Parameters
    ----------
    moved, fixed
        (n, 2) coordinates of the paired cells after the rigid step, in the reference frame.
    extent
        (2, 2) lower and upper corners of the region the warp must cover (the moved cells' bounding box).
    seed
        Seed of the held-out split and of the choice of control points.

    Returns
    -------
    The warp (None when it does not predict held-out pairs better than the rigid fit, or when there are too few
    pairs) and a report: ``applied``, ``reason``, ``n_pairs``, ``smoothing``,
    ``heldout_rms_rigid_um``, ``heldout_rms_warp_um``, ``rms_displacement_um``, ``max_displacement_um``.
    """
    moved = np.asarray(moved, dtype=np.float64)[:, :2]
    fixed = np.asarray(fixed, dtype=np.float64)[:, :2]
    n = moved.shape[0]
    report: dict[str, Any] = {"applied": False, "n_pairs": int(n)}
    if n < min_pairs:
        report["reason"] = f"too few matched pairs for a warp ({n} < {min_pairs})"
        return None, report
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = max(5, n // 5)
    test, train = order[:n_test], order[n_test:]
    if train.size > _MAX_CONTROL:
        train = train[:_MAX_CONTROL]
    disp = fixed - moved
    # the rigid fit already centred the residuals; its held-out error is the residual itself
    rigid = _rms(disp[test])
    scale = float(np.mean(np.ptp(moved[train], axis=0))) ** 2  # the TPS kernel r^2 log r grows with the extent^2
    best = (np.inf, np.nan)
    for factor in 10.0 ** np.arange(-4, 3):
        s = factor * scale
        err = _rms(disp[test] - _fit(moved[train], disp[train], s)(moved[test]))
        if err < best[0]:
            best = (err, s)
    err, s = best
    report.update(smoothing=float(s), heldout_rms_rigid_um=rigid, heldout_rms_warp_um=float(err))
    # paired one-sided test on the held-out pairs: squared error without minus with the warp
    gain = np.sum(disp[test] ** 2, axis=1) - np.sum(
        (disp[test] - _fit(moved[train], disp[train], s)(moved[test])) ** 2, axis=1
    )
    se = float(gain.std(ddof=1) / np.sqrt(gain.size)) if gain.size > 1 else np.inf
    if not float(gain.mean()) > _Z_ONE_PERCENT * se:
        report["reason"] = (
            f"a warp does not predict held-out pairs better (RMS {err:.3g} vs {rigid:.3g} µm rigid): residuals are "
            "jitter, not deformation"
        )
        return None, report
    # refit on every control point, evaluate on a grid over the region
    control = order[: min(n, _MAX_CONTROL)]
    rbf = _fit(moved[control], disp[control], s)
    lo, hi = np.asarray(extent, dtype=np.float64)
    step = np.maximum((hi - lo) / (_GRID - 1), 1e-6)
    gx = lo[0] + step[0] * np.arange(_GRID)
    gy = lo[1] + step[1] * np.arange(_GRID)
    nodes = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    field = rbf(nodes).reshape(_GRID, _GRID, 2)
    warp = Warp(origin=lo, step=step, field=field)
    rms, largest = warp.magnitude()
    report.update(
        applied=True,
        reason=f"held-out residual {rigid:.3g} -> {err:.3g} µm",
        rms_displacement_um=rms,
        max_displacement_um=largest,
    )
    return warp, report


def _groups(xy: np.ndarray, lo: np.ndarray, side: float, shape: tuple[int, int]) -> dict[tuple[int, int], np.ndarray]:
    """Indices of the points in each tile (tiles of ``side`` µm from ``lo``; points outside are left out)."""
    ij = np.floor((xy - lo) / side).astype(np.int64)
    ok = np.flatnonzero((ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1]))
    key = ij[ok, 0] * shape[1] + ij[ok, 1]
    order = np.argsort(key, kind="stable")
    key, idx = key[order], ok[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], key.size]
    return {(int(key[b] // shape[1]), int(key[b] % shape[1])): idx[b:e] for b, e in zip(starts, ends, strict=True)}


def tile_shifts(
    moved: np.ndarray, fixed: np.ndarray, *, spacing: float, max_shift: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local shift of ``moved`` onto ``fixed`` per tile, by FFT cross-correlation of the cells' point patterns.

    Robust where one global transform leaves the cells several µm off (nearest cells are then mostly the wrong
    ones): within a tile the two point patterns are the same cells, shifted, so their correlation peaks at the
    local shift. Tiles are ~15 cell spacings wide (at least 6 x 6 over the overlap, at most 30 x 30); bins of a
    sixth of the spacing; shifts up to ``max_shift`` (default 3 spacings, at most one tile).

    Returns
    -------
    Tile centres (m, 2), shifts (m, 2) to add to the moved cells, and each tile's normalised correlation peak.
    """
    from spatialmultiomics.align._register import _Correlator, _raster

    empty = (np.empty((0, 2)), np.empty((0, 2)), np.empty(0))
    lo = np.maximum(moved.min(axis=0), fixed.min(axis=0))
    hi = np.minimum(moved.max(axis=0), fixed.max(axis=0))
    size = hi - lo
    if size.min() <= 0 or spacing <= 0:
        return empty
    side = float(np.clip(15.0 * spacing, size.max() / 30.0, size.min() / 6.0))
    max_shift = min(3.0 * spacing if max_shift is None else float(max_shift), side)
    bin_um = spacing / 6.0
    n = int(np.ceil((side + 2 * max_shift) / bin_um))
    max_px = int(np.ceil(max_shift / bin_um))
    shape = (max(1, int(size[0] // side)), max(1, int(size[1] // side)))
    tiles_m = _groups(moved, lo, side, shape)
    tiles_f = _groups(fixed, lo - side, side, (shape[0] + 2, shape[1] + 2))  # shifted by one tile: margins fit
    centres, shifts, scores = [], [], []
    for (i, j), idx_m in tiles_m.items():
        if idx_m.size < 30:
            continue
        near = [tiles_f.get((i + di, j + dj)) for di in range(3) for dj in range(3)]
        idx_f = np.concatenate([x for x in near if x is not None]) if any(x is not None for x in near) else None
        if idx_f is None or idx_f.size < 30:
            continue
        origin = lo + np.array([i, j]) * side - max_shift
        corr = _Correlator(_raster(fixed[idx_f], origin, bin_um, n), sigma_px=2.0)
        shift, score = corr.best_shift(_raster(moved[idx_m], origin, bin_um, n), max_shift_px=max_px)
        centres.append(moved[idx_m].mean(axis=0))
        shifts.append(shift * bin_um)
        scores.append(score)
    return np.asarray(centres).reshape(-1, 2), np.asarray(shifts).reshape(-1, 2), np.asarray(scores)


def refine(
    moved: np.ndarray, fixed: np.ndarray, *, spacing: float, seed: int | None = 0, n_jobs: int = 1
) -> tuple[np.ndarray, Warp | None, dict[str, Any]]:
    """Non-rigid refinement of cells already rigidly registered onto ``fixed`` (the same cells, other frame).

    One round of tile shifts (:func:`tile_shifts`, a smoothing TPS through them), then up to two rounds on the
    cells that pair within the data-chosen match radius (:func:`fit_warp` on the pairs); each round is kept only
    when it predicts held-out tiles / pairs better (module documentation), and the whole warp only when at least
    as many cells pair afterwards.

    Returns
    -------
    The moved cells after the warp (``moved`` itself when none is applied), the warp, and a report: ``applied``,
    ``rounds`` (one report per round), ``n_matched_rigid`` / ``n_matched_warped``, ``rms_displacement_um``,
    ``max_displacement_um``, ``heldout_rms_rigid_um`` / ``heldout_rms_warp_um`` of the last applied round.
    """
    from spatialmultiomics.align._match import estimate_match_radius, match_cells

    moved = np.asarray(moved, dtype=np.float64)[:, :2]
    fixed = np.asarray(fixed, dtype=np.float64)[:, :2]
    extent = np.array([moved.min(axis=0), moved.max(axis=0)])

    def pairs(xy: np.ndarray) -> Any:
        radius = estimate_match_radius(fixed, xy, n_jobs=n_jobs).radius
        return match_cells(fixed, xy, match_radius=radius, method="mutual", n_jobs=n_jobs)

    rounds: list[dict[str, Any]] = []
    warp: Warp | None = None
    current = moved
    centres, shifts, _ = tile_shifts(moved, fixed, spacing=spacing)
    w, rep = fit_warp(centres, centres + shifts, extent=extent, seed=seed, min_pairs=20)
    rounds.append({"stage": "tiles", **rep})
    if w is not None:
        warp, current = w, w.apply(moved)
    for _ in range(2):
        m = pairs(current)
        w, rep = fit_warp(current[m.b_index], fixed[m.a_index], extent=extent, seed=seed)
        rounds.append({"stage": "pairs", **rep})
        if w is None:
            break
        warp = w if warp is None else warp.then(w)
        current = warp.apply(moved)
    report: dict[str, Any] = {"applied": False, "rounds": rounds}
    if warp is None:
        return moved, None, report
    n_rigid, n_warped = pairs(moved).n_matched, pairs(current).n_matched
    report.update(n_matched_rigid=int(n_rigid), n_matched_warped=int(n_warped))
    if n_warped < n_rigid:
        report["reason"] = f"fewer cells pair after the warp ({n_warped} vs {n_rigid}): not applied"
        return moved, None, report
    last = [r for r in rounds if r["applied"]][-1]
    rms, largest = warp.magnitude()
    report.update(
        applied=True,
        rms_displacement_um=rms,
        max_displacement_um=largest,
        heldout_rms_rigid_um=last["heldout_rms_rigid_um"],
        heldout_rms_warp_um=last["heldout_rms_warp_um"],
    )
    return current, warp, report
