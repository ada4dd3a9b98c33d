"""Estimating the transform that puts one point cloud (cell or spot centres, µm) onto another.

Two ways in:

* **landmarks**: pairs of corresponding points; the least-squares rigid / similarity transform (Umeyama 1991) or
  the least-squares affine transform;
* **automatic**, from the two clouds alone:

  1. *density search*: both clouds are rasterised into smoothed density images (about 128 px across); for every
     rotation in a grid over ``±max_rotation_deg`` (and scales, for ``'similarity'`` / ``'affine'``) the best shift
     comes from one FFT cross-correlation, scored by the normalised correlation. The distinct peaks over the angle
     are the candidates (a symmetric tissue outline gives several);
  2. *pyramid refinement* of each candidate: bins halve down to ``fine_bin_um`` (default 2 µm); at each level a
     window of at most 256 x 256 px around the overlap is cross-correlated over a small grid of angles around the
     current estimate, with the shift confined near the previous level's;
  3. *ICP*: iterative closest point with a KD-tree on mutual nearest pairs closer than ``max_pair_distance``
     (trimmed: farther pairs are outliers), over a region that grows from the refinement window to the whole cloud,
     fitting the transform family each time;
  4. *verdict*: the share of cells that found a partner is compared with the share found at a deliberately
     wrong offset (a null for unrelated point patterns at the same density). When the clouds are the same cells,
     the right candidate stands out and the residual is the RMS distance of the matched pairs. When no candidate's
     cells match (adjacent sections: different cells), only the density alignment remains; it is accepted for
     ``sections='adjacent'`` / ``'auto'`` when one density peak clearly wins, and reported as such.

  Whenever the answer is not unique (symmetric layout, periodic lattice) or the clouds do not overlap, the result
  says so (``success=False`` with the reason) and, by default, :func:`register` raises instead of returning a
  transform that might be wrong.

  5. *overlap*: after the transform, each cloud's *footprint* is the area within two of its own cell spacings of
     one of its cells; ``overlap_fixed`` is the share of the fixed cells inside the moved footprint and
     ``overlap_moving`` the share of the moved cells inside the fixed footprint. A fit on tissue density alone is
     refused when ``min(overlap_fixed, overlap_moving) < 0.5`` or its density score is below 0.3: a small dense
     patch "registered" somewhere on a large section, or two sections that share only an edge, would otherwise be
     half-used. Cell-to-cell fits are not refused for a small overlap (a region of interest inside a larger
     section is a valid design); the overlap is reported.

References
----------
Umeyama, S. (1991). Least-squares estimation of transformation parameters between two point patterns. IEEE TPAMI
13(4), 376-380. Besl, P. J. & McKay, N. D. (1992). A method for registration of 3-D shapes. IEEE TPAMI 14(2).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger
from spatialmultiomics._random import check_random_state
from spatialmultiomics._validate import check_option, check_positive
from spatialmultiomics._warnings import warn
from spatialmultiomics.align._match import check_coords
from spatialmultiomics.align._transform import KINDS, Transform

__all__ = ["RegistrationResult", "fit_transform", "register"]

_SECTIONS = ("auto", "same", "adjacent")
_COARSE_PX = 64  # half-width of the coarse density image, in bins
_COARSE_STEP = 2.0 / _COARSE_PX  # angle step (rad) of the coarse search: the edge moves by two bins
_WINDOW_PX = 128  # half-width of the refinement windows, in bins
_MAX_COARSE_POINTS = 50_000
_MAX_ICP_POINTS = 400_000
_MAX_CANDIDATE_POINTS = 20_000
_MAX_OVERLAP_POINTS = 200_000
#: a fit on tissue density alone needs the two clouds to cover each other at least this far ...
MIN_OVERLAP = 0.5
#: ... and at least this normalised density correlation
MIN_DENSITY_SCORE = 0.3


class RegistrationResult(NamedTuple):
    """What :func:`register` found.

    Attributes
    ----------
    transform
        :class:`Transform` mapping the moving coordinates onto the fixed frame (µm).
    residual_um
        RMS distance (µm) between the matched pairs after registration: landmark pairs, or the cell pairs that ICP
        matched. NaN when the clouds matched only as densities (no cell-to-cell pairs).
    n_pairs
        Number of pairs behind ``residual_um``.
    success
        False when the transform could not be determined reliably; ``message`` says why.
    message
        One line: how the transform was found, or why it failed.
    method
        ``'landmarks'``, ``'points'`` (cells matched one to one) or ``'density'`` (tissue density only).
    matched_fraction
        Share of the moving cells inside the overlap that found a partner within ``max_pair_distance``.
    null_fraction
        The same share at a deliberately wrong offset: what unrelated point patterns of this density give.
    density_score
        Normalised density correlation of the chosen candidate (1 = identical density images).
    candidates
        One row per refined candidate: rotation (deg), scale, density score, matched fraction.
    overlap_fixed
        Share of the fixed cells inside the moved cloud's footprint after the transform (module documentation).
    overlap_moving
        Share of the moved cells inside the fixed cloud's footprint after the transform.
    """

    transform: Transform
    residual_um: float
    n_pairs: int
    success: bool
    message: str
    method: str
    matched_fraction: float = float("nan")
    null_fraction: float = float("nan")
    density_score: float = float("nan")
    candidates: tuple[tuple[float, float, float, float], ...] = ()
    overlap_fixed: float = float("nan")
    overlap_moving: float = float("nan")

    @property
    def overlap(self) -> float:
        """``min(overlap_fixed, overlap_moving)``: how far the two clouds cover each other after the transform."""
        return float(min(self.overlap_fixed, self.overlap_moving))

    def to_dict(self) -> dict[str, Any]:
        """Plain, ``.h5mu``-storable summary (the transform as :meth:`Transform.to_dict`)."""
        return {
            "transform": self.transform.to_dict(),
            "residual_um": float(self.residual_um),
            "n_pairs": int(self.n_pairs),
            "success": bool(self.success),
            "message": self.message,
            "method": self.method,
            "matched_fraction": float(self.matched_fraction),
            "null_fraction": float(self.null_fraction),
            "density_score": float(self.density_score),
            "overlap_fixed": float(self.overlap_fixed),
            "overlap_moving": float(self.overlap_moving),
            "overlap": self.overlap,
            "reflected": bool(np.linalg.det(self.transform.matrix[:2, :2]) < 0),
        }


# ---------------------------------------------------------------------------------------------------------------
# least-squares fits
# ---------------------------------------------------------------------------------------------------------------
def fit_transform(src: Any, dst: Any, *, kind: str = "rigid") -> Transform:
    """Least-squares transform of the given family mapping ``src`` points onto ``dst`` points (pairs by row).

    Rigid and similarity use the closed form of Umeyama (1991) (no reflection); affine solves the linear least
    squares problem. Needs at least 2 pairs (3 non-collinear ones for affine).

    Parameters
    ----------
    src, dst
        Corresponding points, arrays of shape (n, 2) in µm.
    kind
        ``'rigid'``, ``'similarity'`` or ``'affine'``.

    Returns
    -------
    The :class:`Transform` minimising ``sum |T(src_i) - dst_i|^2``.
    """
    kind = check_option(kind, KINDS, name="kind")
    a = check_coords(src, name="src")
    b = check_coords(dst, name="dst")
    if a.shape != b.shape:
        msg = f"src and dst must hold the same number of points, got {a.shape[0]} and {b.shape[0]}."
        raise InputError(msg)
    need = 3 if kind == "affine" else 2
    if a.shape[0] < need:
        msg = f"a {kind} transform needs at least {need} point pairs, got {a.shape[0]}."
        raise InputError(msg)
    return _fit(a, b, kind)


def _fit(a: np.ndarray, b: np.ndarray, kind: str) -> Transform:
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    da, db = a - ca, b - cb
    m = np.eye(3)
    if kind == "affine":
        if np.linalg.matrix_rank(da, tol=1e-9 * max(1.0, float(np.abs(da).max()))) < 2:
            msg = "the points are collinear; an affine transform needs 3 or more non-collinear point pairs."
            raise InputError(msg)
        lin, *_ = np.linalg.lstsq(da, db, rcond=None)
        m[:2, :2] = lin.T
    else:
        cov = db.T @ da / a.shape[0]
        u, s, vt = np.linalg.svd(cov)
        d = np.ones(2)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            d[1] = -1.0
        rot = u @ np.diag(d) @ vt
        scale = 1.0
        if kind == "similarity":
            var_a = float((da**2).sum() / a.shape[0])
            if var_a <= 0:
                msg = "all source points coincide; cannot estimate a scale."
                raise InputError(msg)
            scale = float((s * d).sum() / var_a)
        m[:2, :2] = scale * rot
    m[:2, 2] = cb - m[:2, :2] @ ca
    return Transform(m, kind=kind)


# ---------------------------------------------------------------------------------------------------------------
# density images and FFT cross-correlation
# ---------------------------------------------------------------------------------------------------------------
def _raster(xy: np.ndarray, origin: np.ndarray, bin_um: float, n: int) -> np.ndarray:
    """Counts of points per bin on an n x n grid whose corner is ``origin`` (float32)."""
    ij = np.floor((xy - origin) / bin_um).astype(np.int64)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < n) & (ij[:, 1] >= 0) & (ij[:, 1] < n)
    flat = ij[ok, 1] * n + ij[ok, 0]
    return np.bincount(flat, minlength=n * n).reshape(n, n).astype(np.float32)


class _Correlator:
    """FFT cross-correlation of moving density images against one fixed image (Gaussian-smoothed, padded)."""

    def __init__(self, fixed_img: np.ndarray, sigma_px: float = 1.0) -> None:
        import scipy.fft

        self.fft = scipy.fft
        self.n = fixed_img.shape[0]
        self.size = 2 * self.n
        fy = np.fft.fftfreq(self.size)[:, None]
        fx = np.fft.rfftfreq(self.size)[None, :]
        self.kernel = np.exp(-2.0 * np.pi**2 * sigma_px**2 * (fx**2 + fy**2)).astype(np.float32)
        w = np.full(fx.shape[1], 2.0)
        w[0] = 1.0
        if self.size % 2 == 0:
            w[-1] = 1.0
        self.weights = w[None, :]
        self.f_hat = self.fft.rfft2(fixed_img, s=(self.size, self.size)) * self.kernel
        self.f_energy = self._energy(self.f_hat)

    def _energy(self, x_hat: np.ndarray) -> float:
        return float((np.abs(x_hat) ** 2 * self.weights).sum() / self.size**2)

    def correlate(self, moving_img: np.ndarray) -> tuple[np.ndarray, float]:
        """Correlation over shifts (index k -> shift k, or k - size when k >= n) and the normalising energy."""
        m_hat = self.fft.rfft2(moving_img, s=(self.size, self.size)) * self.kernel
        corr = self.fft.irfft2(self.f_hat * np.conj(m_hat), s=(self.size, self.size))
        norm = float(np.sqrt(max(self.f_energy * self._energy(m_hat), 1e-30)))
        return corr, norm

    def best_shift(self, moving_img: np.ndarray, max_shift_px: int | None = None) -> tuple[np.ndarray, float]:
        """Best shift (px, x then y) of the moving image onto the fixed one and its normalised score."""
        corr, norm = self.correlate(moving_img)
        if max_shift_px is not None:
            k = int(max_shift_px)
            idx = np.r_[0 : k + 1, self.size - k : self.size]
            sub = corr[np.ix_(idx, idx)]
            flat = int(np.argmax(sub))
            iy, ix = divmod(flat, sub.shape[1])
            sy, sx = idx[iy], idx[ix]
            peak = float(sub[iy, ix])
        else:
            flat = int(np.argmax(corr))
            sy, sx = divmod(flat, corr.shape[1])
            peak = float(corr[sy, sx])
        shift = np.array([sx, sy], dtype=np.float64)
        shift[shift >= self.n] -= self.size
        return shift, peak / norm


def _rotation(theta: float, scale: float = 1.0) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return scale * np.array([[c, -s], [s, c]])


def _similarity(theta: float, scale: float, center: np.ndarray, shift: np.ndarray) -> Transform:
    """``p -> sR(p - center) + center + shift`` as a Transform."""
    a = _rotation(theta, scale)
    m = np.eye(3)
    m[:2, :2] = a
    m[:2, 2] = center - a @ center + shift
    return Transform(m, kind="rigid" if np.isclose(scale, 1.0) else "similarity")


def _local_maxima(scores: np.ndarray, circular: bool) -> np.ndarray:
    """Indices of local maxima of a 1-D profile (plateaus give their first index)."""
    n = scores.size
    if n == 1:
        return np.array([0])
    left = np.roll(scores, 1)
    right = np.roll(scores, -1)
    if not circular:
        left[0] = -np.inf
        right[-1] = -np.inf
    return np.flatnonzero((scores > left) & (scores >= right))


def _coarse_candidates(
    mov: np.ndarray,
    fix: np.ndarray,
    *,
    max_rotation: float,
    scales: np.ndarray,
    candidate_ratio: float,
    max_candidates: int,
    spacing: float,
) -> tuple[list[tuple[Transform, float]], float, float]:
    """Density search over rotations (and scales); returns distinct candidate transforms with their scores."""
    cm, cf = mov.mean(axis=0), fix.mean(axis=0)
    r_m = float(np.sqrt(((mov - cm) ** 2).sum(axis=1).max()))
    r_f = float(np.sqrt(((fix - cf) ** 2).sum(axis=1).max()))
    radius = max(r_m * scales.max(), r_f, 1e-6)
    bin_um = radius / _COARSE_PX
    n = 2 * _COARSE_PX + 2
    origin = -(n / 2.0) * bin_um
    # smooth over ~2 cell spacings: the density, not the individual cells, is compared here
    corr = _Correlator(
        _raster(fix - cf, np.array([origin, origin]), bin_um, n), sigma_px=max(1.0, 2 * spacing / bin_um)
    )
    step = _COARSE_STEP  # radians: the cloud's edge moves by two bins
    n_steps = max(1, int(np.ceil(max_rotation / step)))
    full_circle = max_rotation >= np.pi - 1e-9
    if full_circle:
        angles = np.linspace(-np.pi, np.pi, 2 * n_steps, endpoint=False)
    else:
        angles = np.linspace(-max_rotation, max_rotation, 2 * n_steps + 1)
    rows = []
    for scale in scales:
        shifts = np.empty((angles.size, 2))
        scores = np.empty(angles.size)
        for i, theta in enumerate(angles):
            pts = (mov - cm) @ _rotation(theta, scale).T
            shifts[i], scores[i] = corr.best_shift(_raster(pts, np.array([origin, origin]), bin_um, n))
        rows.append((scale, shifts, scores))
    # best scale per angle, then local maxima over the angle
    all_scores = np.stack([r[2] for r in rows])
    best_scale = np.argmax(all_scores, axis=0)
    prof = all_scores[best_scale, np.arange(angles.size)]
    peaks = _local_maxima(prof, full_circle)
    peaks = peaks[np.argsort(-prof[peaks], kind="stable")]
    top = float(prof[peaks[0]])
    out: list[tuple[Transform, float]] = []
    for p in peaks:
        if prof[p] < candidate_ratio * top or len(out) >= max_candidates:
            break
        scale, shifts, _ = rows[best_scale[p]]
        t = _similarity(float(angles[p]), float(scale), cm, cf - cm + shifts[p] * bin_um)
        out.append((t, float(prof[p])))
    # the given frames as they are (no transform), scored the same way
    # (allowing the same +-2 bin shifts that the candidates' peaks enjoy)
    _, identity_score = corr.best_shift(_raster(mov - cf, np.array([origin, origin]), bin_um, n), max_shift_px=2)
    return out, bin_um, identity_score


def _refine(
    mov: np.ndarray,
    fix: np.ndarray,
    start: Transform,
    *,
    coarse_bin: float,
    fine_bin: float,
    scales_rel: np.ndarray,
    prev_step: float = _COARSE_STEP,
) -> tuple[Transform, np.ndarray, float, float, float]:
    """Pyramid refinement of ``start`` on windows around the overlap.

    Returns the transform, the last window's centre and half-width (µm), the last bin (µm) and angle step (rad).
    """
    t = start
    bin_um = coarse_bin
    center = fix.mean(axis=0)
    half = _COARSE_PX * coarse_bin
    while bin_um > fine_bin * 1.0001:
        bin_um = max(bin_um / 2.0, fine_bin)
        moved = t.apply(mov)
        center = _overlap_center(moved, fix, 2.0 * bin_um * 2)
        half = min(_WINDOW_PX * bin_um, _extent_from(fix, center))
        n = int(np.ceil(2 * half / bin_um))
        origin = center - half
        inside_f = np.all(np.abs(fix - center) <= half * 1.5, axis=1)
        corr = _Correlator(_raster(fix[inside_f], origin, bin_um, n))
        step = bin_um / half
        n_ang = int(np.ceil(2.0 * prev_step / step))
        thetas = np.linspace(-2.0 * prev_step, 2.0 * prev_step, 2 * n_ang + 1) if n_ang > 0 else np.zeros(1)
        near = np.all(np.abs(moved - center) <= half * 1.5, axis=1)
        base = moved[near] - center
        best = (-np.inf, 0.0, 1.0, np.zeros(2))
        for scale in scales_rel:
            for theta in thetas:
                pts = base @ _rotation(theta, scale).T + center
                shift, score = corr.best_shift(_raster(pts, origin, bin_um, n), max_shift_px=6)
                if score > best[0]:
                    best = (score, float(theta), float(scale), shift)
        _, theta, scale, shift = best
        t = _similarity(theta, scale, center, shift * bin_um).compose(t)
        prev_step = step
    return t, center, half, bin_um, prev_step


def _density_fit(t: Transform, mov: np.ndarray, fix: np.ndarray, bin_um: float, spacing: float) -> float:
    """Normalised correlation of the two tissue densities as placed by ``t`` (no shift), on ``bin_um`` bins over
    the fixed cloud's extent, smoothed over ~2 cell spacings."""
    lo, hi = fix.min(axis=0), fix.max(axis=0)
    bin_um = max(bin_um, float((hi - lo).max()) / 1024.0)
    n = int(np.ceil((hi - lo).max() / bin_um)) + 2
    origin = lo - bin_um
    corr = _Correlator(_raster(fix, origin, bin_um, n), sigma_px=max(1.0, 2.0 * spacing / bin_um))
    return corr.best_shift(_raster(t.apply(mov), origin, bin_um, n), max_shift_px=0)[1]


def _overlap_center(moved: np.ndarray, fix: np.ndarray, tol: float) -> np.ndarray:
    """Mean of the fixed points that have a moved point within ``tol`` µm (all fixed points when none)."""
    from scipy.spatial import cKDTree

    sub = fix[:: max(1, fix.shape[0] // 20000)]
    d, _ = cKDTree(moved[:: max(1, moved.shape[0] // 200000)]).query(sub, k=1, distance_upper_bound=tol)
    ok = np.isfinite(d)
    return sub[ok].mean(axis=0) if ok.sum() >= 3 else fix.mean(axis=0)


def _extent_from(points: np.ndarray, center: np.ndarray) -> float:
    return float(np.abs(points - center).max()) + 1e-6


def _mutual_pairs(moved: np.ndarray, tree_f: Any, tol: float) -> tuple[np.ndarray, ...]:
    """Pairs (moved index, fixed index, distance) of nearest fixed points within ``tol`` that no other moved point
    claims (one to one without a second tree)."""
    d, j = tree_f.query(moved, k=1, distance_upper_bound=tol)
    has = np.flatnonzero(np.isfinite(d))
    if has.size == 0:
        return has, has, np.empty(0)
    claimed = np.bincount(j[has], minlength=tree_f.n)
    keep = has[claimed[j[has]] == 1]
    return keep, j[keep], d[keep]


def _icp(
    mov: np.ndarray,
    fix: np.ndarray,
    tree_f: Any,
    start: Transform,
    *,
    kind: str,
    tol: float,
    center: np.ndarray,
    half: float,
    max_iter: int = 60,
) -> tuple[Transform, int, float]:
    """Trimmed ICP on mutual nearest pairs within ``tol``, over a region growing from ``center``."""
    t = start
    radius = max(half, 4 * tol)
    full = float(np.sqrt(((t.apply(mov) - center) ** 2).sum(axis=1).max()))
    rms, n_pairs = np.nan, 0
    stable = 0
    for _ in range(max_iter):
        moved = t.apply(mov)
        dist_c = np.sqrt(((moved - center) ** 2).sum(axis=1))
        sel = np.flatnonzero(dist_c <= radius)
        ia, jf, d = _mutual_pairs(moved[sel], tree_f, tol)
        need = 3 if kind == "affine" else 2
        if ia.size < max(need, 3):
            break
        new = _fit(mov[sel[ia]], fix[jf], kind)
        delta = float(np.sqrt(((new.apply(mov[sel[ia]]) - moved[sel[ia]]) ** 2).sum(axis=1).mean()))
        t = new
        rms, n_pairs = float(np.sqrt(np.mean(d**2))), int(ia.size)
        if radius < full:
            radius *= 1.6
            continue
        stable = stable + 1 if delta < 1e-3 * tol else 0
        if stable >= 2:
            break
    moved = t.apply(mov)
    ia, jf, d = _mutual_pairs(moved, tree_f, tol)
    if ia.size:
        rms, n_pairs = float(np.sqrt(np.mean(d**2))), int(ia.size)
    return t, n_pairs, rms


def _matched_fraction(moved: np.ndarray, fix: np.ndarray, tree_f: Any, tol: float, spacing: float) -> float:
    """Share of moved points in the overlap (a fixed point within 2 spacings) with a mutual partner within ``tol``."""
    d_any, _ = tree_f.query(moved, k=1, distance_upper_bound=2.0 * spacing + tol)
    in_overlap = np.isfinite(d_any)
    if in_overlap.sum() < 3:
        return 0.0
    ia, _, _ = _mutual_pairs(moved[in_overlap], tree_f, tol)
    return float(ia.size / in_overlap.sum())


def _null_fraction(moved: np.ndarray, fix: np.ndarray, tree_f: Any, tol: float, spacing: float) -> float:
    """Matched fraction after wrong offsets of ~2-3 cell spacings (what unrelated patterns give)."""
    vals = []
    for v in ((2.5, 1.5), (-1.5, 2.5), (-2.5, -1.5)):
        vals.append(_matched_fraction(moved + np.array(v) * spacing, fix, tree_f, tol, spacing))
    return float(np.mean(vals))


def _spacing(points: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    sub = points[:: max(1, points.shape[0] // 20000)]
    d, _ = cKDTree(sub).query(sub, k=2)
    return float(np.median(d[:, 1])) * float(np.sqrt(sub.shape[0] / points.shape[0]))


def _rms_displacement(a: Transform, b: Transform, pts: np.ndarray) -> float:
    return float(np.sqrt(((a.apply(pts) - b.apply(pts)) ** 2).sum(axis=1).mean()))


def register(
    moving: Any,
    fixed: Any,
    *,
    kind: str = "rigid",
    landmarks: tuple[Any, Any] | None = None,
    sections: str = "auto",
    max_rotation_deg: float = 180.0,
    scale_range: tuple[float, float] | None = None,
    max_pair_distance: float = 5.0,
    fine_bin_um: float = 2.0,
    ambiguity_margin: float = 0.25,
    on_failure: str = "raise",
    allow_reflection: bool | str = False,
    seed: int | None = 0,
) -> RegistrationResult:
    """Estimate the transform that maps the ``moving`` point cloud onto the ``fixed`` one.

    Parameters
    ----------
    moving, fixed
        Cell (or spot) centres (x, y) in µm, shapes (n_moving, 2) and (n_fixed, 2); e.g. the protein and RNA
        ``obsm['spatial']``.
    kind
        Transform family: ``'rigid'`` (rotation + shift), ``'similarity'`` (+ isotropic scale) or ``'affine'``.
    landmarks
        Optional ``(moving_points, fixed_points)``, two arrays of shape (m, 2) of corresponding points (µm). When
        given, the least-squares transform of the landmarks is returned and the clouds are not searched.
    sections
        ``'same'``: both clouds are the same cells (one section imaged twice), so cells must match one to one;
        ``'adjacent'``: different cells (serial sections), registered on tissue density only; ``'auto'``: try
        cells, fall back to density, and say which (``method``).
    max_rotation_deg
        Rotations searched: ``±max_rotation_deg`` (180 = any rotation).
    scale_range
        (min, max) scales searched for ``'similarity'`` / ``'affine'``; default (0.8, 1.25). Ignored for rigid.
    max_pair_distance
        Largest distance (µm) between two cells paired by ICP; farther pairs are treated as outliers.
    fine_bin_um
        Bin size (µm) of the finest density image of the refinement.
    ambiguity_margin
        Two distinct density candidates are called ambiguous when the worse one's mismatch (1 - density score) is
        less than ``1 + ambiguity_margin`` times the better one's; two cell-matching candidates when their matched
        fractions differ by less than 0.05.
    on_failure
        ``'raise'`` (default): raise :class:`~spatialmultiomics.InputError` when the transform cannot be determined
        reliably; ``'warn'``: warn and return the result with ``success=False``; ``'ignore'``: just return it.
    allow_reflection
        ``True``: also search the mirror image of ``moving`` (a section mounted face down) and keep whichever fits
        (refusing when both fit equally well); ``'auto'``: search the mirror image only when the plain fit does not
        pair the cells one to one, and keep it only when it does (the message says so); ``False``: never.
    seed
        Seed for the subsampling of very large clouds.

    Returns
    -------
    :class:`RegistrationResult`: the transform (moving -> fixed), the residual (RMS µm over the matched pairs),
    the number of pairs, a success flag with its reason, and the diagnostics of the search.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fixed = rng.uniform(0, 500, size=(1500, 2))
    >>> truth = Transform.from_params(rotation_deg=20.0, translation=(150.0, -80.0))
    >>> res = register(truth.inverse().apply(fixed), fixed)
    >>> bool(res.success), round(res.transform.rotation_deg, 3)
    (True, 20.0)
    """
    kind = check_option(kind, KINDS, name="kind")
    sections = check_option(sections, _SECTIONS, name="sections")
    on_failure = check_option(on_failure, ("raise", "warn", "ignore"), name="on_failure")
    tol = check_positive(max_pair_distance, name="max_pair_distance")
    fine_bin = check_positive(fine_bin_um, name="fine_bin_um")
    max_rot = np.deg2rad(min(check_positive(max_rotation_deg, name="max_rotation_deg", allow_zero=True), 180.0))
    margin = check_positive(ambiguity_margin, name="ambiguity_margin", allow_zero=True)
    mov = check_coords(moving, name="moving")
    fix = check_coords(fixed, name="fixed")
    if allow_reflection not in (True, False, "auto"):
        msg = f"allow_reflection must be True, False or 'auto', got {allow_reflection!r}."
        raise InputError(msg)
    if landmarks is not None:
        result = _from_landmarks(landmarks, mov, fix, kind=kind, tol=tol)
    else:
        for name, pts in (("moving", mov), ("fixed", fix)):
            if pts.shape[0] < 10:
                msg = f"{name} has {pts.shape[0]} points; automatic registration needs at least 10 (or landmarks)."
                raise InputError(msg)
        if kind == "rigid":
            scales = np.array([1.0])
        else:
            lo, hi = scale_range if scale_range is not None else (0.8, 1.25)
            lo, hi = check_positive(lo, name="scale_range[0]"), check_positive(hi, name="scale_range[1]")
            if lo > hi:
                msg = f"scale_range must be (min, max) with min <= max, got {scale_range!r}."
                raise InputError(msg)
            scales = np.geomspace(lo, hi, max(1, int(np.ceil(np.log(hi / lo) / np.log(1.04))) + 1))
        options = {
            "kind": kind,
            "sections": sections,
            "max_rot": max_rot,
            "scales": scales,
            "tol": tol,
            "fine_bin": fine_bin,
            "margin": margin,
            "seed": seed,
        }
        result = _auto(mov, fix, **options)
        if allow_reflection is True:
            result = _better_of(result, _mirrored(mov, fix, options))
        elif allow_reflection == "auto" and not (result.success and result.method == "points"):
            result = _mirror_if_it_pairs(result, _mirrored(mov, fix, options))
    result = _check_overlap(result, mov, fix, kind=kind)
    logger.info("registration: %s", result.message)
    if not result.success:
        if on_failure == "raise":
            msg = f"registration failed: {result.message}"
            raise InputError(msg)
        if on_failure == "warn":
            warn(f"registration failed: {result.message}")
    return result


def _mirrored(mov: np.ndarray, fix: np.ndarray, options: dict[str, Any]) -> RegistrationResult:
    """Register the mirror image of ``mov`` (x -> 2 cx - x about its centre) and compose the reflection back in."""
    cx = float(mov[:, 0].mean())
    flip = Transform(np.array([[-1.0, 0.0, 2.0 * cx], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), kind="affine")
    res = _auto(flip.apply(mov), fix, **options)
    return res._replace(
        transform=res.transform.compose(flip),
        message=f"mirrored section (x reflected about x = {cx:.1f} µm), then: {res.message}",
    )


def _mirror_if_it_pairs(plain: RegistrationResult, mirrored: RegistrationResult) -> RegistrationResult:
    """``allow_reflection='auto'``: the mirrored fit when it pairs the cells one to one and clearly better than the
    plain one (a layout that matches its own mirror image stays refused)."""
    plain_fraction = plain.matched_fraction if plain.method == "points" else 0.0
    if mirrored.success and mirrored.method == "points" and mirrored.matched_fraction >= plain_fraction + 0.05:
        why = (
            f"{plain.matched_fraction:.0%} of cells paired vs {plain.null_fraction:.0%} by chance"
            if np.isfinite(plain.matched_fraction)
            else plain.message
        )
        return mirrored._replace(message=f"{mirrored.message} (the unreflected section fit poorly: {why})")
    return plain


def _coverage(moved: np.ndarray, fix: np.ndarray) -> tuple[float, float]:
    """Share of the fixed points inside the moved footprint, and of the moved points inside the fixed footprint
    (a cloud's footprint: within two of its own cell spacings of one of its points)."""
    from scipy.spatial import cKDTree

    m = moved[:: max(1, moved.shape[0] // _MAX_OVERLAP_POINTS)]
    f = fix[:: max(1, fix.shape[0] // _MAX_OVERLAP_POINTS)]
    d_f, _ = cKDTree(m).query(f, k=1, distance_upper_bound=2.0 * _spacing(m))
    d_m, _ = cKDTree(f).query(m, k=1, distance_upper_bound=2.0 * _spacing(f))
    return float(np.isfinite(d_f).mean()), float(np.isfinite(d_m).mean())


def _extent(points: np.ndarray) -> str:
    size = np.ptp(points, axis=0)
    return f"{points.shape[0]} cells over {size[0]:.3g} x {size[1]:.3g} µm"


def _check_overlap(result: RegistrationResult, mov: np.ndarray, fix: np.ndarray, *, kind: str) -> RegistrationResult:
    """Add the overlap of the two clouds after the transform; refuse a density-only fit that barely overlaps."""
    moved = result.transform.apply(mov)
    cover_f, cover_m = _coverage(moved, fix)
    result = result._replace(overlap_fixed=cover_f, overlap_moving=cover_m)
    if not result.success or result.method != "density":
        return result
    low_overlap = min(cover_f, cover_m) < MIN_OVERLAP
    low_score = not result.density_score >= MIN_DENSITY_SCORE
    if not (low_overlap or low_score):
        return result
    t = result.transform
    where = (
        "in the given frames (no transform fits the tissue density better)"
        if t.allclose(Transform.identity())
        else f"after the best {kind} fit of the tissue density (rotation {t.rotation_deg:.1f}°, shift "
        f"({t.translation[0]:.1f}, {t.translation[1]:.1f}) µm)"
    )
    msg = (
        f"{'the frames do not overlap' if low_overlap else 'no convincing overlap found'}: {where}, "
        f"{cover_f:.0%} of the fixed cells ({_extent(fix)}) lie within the moving "
        f"cloud's footprint and {cover_m:.0%} of the moving cells ({_extent(mov)}) within the fixed one's: overlap "
        f"{min(cover_f, cover_m):.0%} (need >= {MIN_OVERLAP:.0%}), density score {result.density_score:.2f} (need "
        f">= {MIN_DENSITY_SCORE:.2f}), and the cells do not pair one to one; give landmarks or a transform, or check "
        "the coordinates (units, which section)"
    )
    return result._replace(success=False, message=msg)


def _better_of(plain: RegistrationResult, mirrored: RegistrationResult) -> RegistrationResult:
    """The plain or the mirrored registration, whichever fits; a failure when both fit equally well."""
    if plain.success != mirrored.success:
        return plain if plain.success else mirrored
    if not plain.success:
        return plain
    if plain.method == "points" or mirrored.method == "points":
        a = plain.matched_fraction if plain.method == "points" else 0.0
        b = mirrored.matched_fraction if mirrored.method == "points" else 0.0
        if abs(a - b) < 0.05:
            msg = f"ambiguous: the section and its mirror image match equally well ({a:.0%} vs {b:.0%} of cells)"
            return plain._replace(success=False, message=msg)
        return plain if a > b else mirrored
    # density only: keep the clearly better one (mismatch 1 - score at least 25 % lower), else it is ambiguous
    ma, mb = 1.0 - plain.density_score, 1.0 - mirrored.density_score
    if ma <= 0.8 * mb:
        return plain
    if mb <= 0.8 * ma:
        return mirrored
    msg = (
        f"ambiguous: the section and its mirror image fit the tissue density about equally well (scores "
        f"{plain.density_score:.3f} vs {mirrored.density_score:.3f}); give landmarks"
    )
    return plain._replace(success=False, message=msg)


def _from_landmarks(landmarks: Any, mov: np.ndarray, fix: np.ndarray, *, kind: str, tol: float) -> RegistrationResult:
    if not isinstance(landmarks, tuple | list) or len(landmarks) != 2:
        msg = "landmarks must be a pair (moving_points, fixed_points) of arrays of shape (m, 2)."
        raise InputError(msg)
    src = check_coords(landmarks[0], name="landmarks[0]")
    dst = check_coords(landmarks[1], name="landmarks[1]")
    t = fit_transform(src, dst, kind=kind)
    resid = float(np.sqrt(((t.apply(src) - dst) ** 2).sum(axis=1).mean()))
    dof = {"rigid": 3, "similarity": 4, "affine": 6}[kind]
    note = "" if 2 * src.shape[0] > dof else " (exactly determined: the residual says nothing about accuracy)"
    msg = f"{kind} transform from {src.shape[0]} landmark pairs, RMS residual {resid:.3g} µm{note}"
    return RegistrationResult(t, resid, int(src.shape[0]), True, msg, "landmarks")


def _auto(
    mov_all: np.ndarray,
    fix_all: np.ndarray,
    *,
    kind: str,
    sections: str,
    max_rot: float,
    scales: np.ndarray,
    tol: float,
    fine_bin: float,
    margin: float,
    seed: int | None,
) -> RegistrationResult:
    from scipy.spatial import cKDTree

    rng = check_random_state(seed)

    def sub(x: np.ndarray, k: int) -> np.ndarray:
        return x if x.shape[0] <= k else x[np.sort(rng.choice(x.shape[0], k, replace=False))]

    mov, fix = sub(mov_all, _MAX_COARSE_POINTS), sub(fix_all, _MAX_COARSE_POINTS)
    spacing = max(_spacing(fix_all), _spacing(mov_all))
    coarse, coarse_bin, identity_score = _coarse_candidates(
        mov,
        fix,
        max_rotation=max_rot,
        scales=scales,
        candidate_ratio=0.8,
        max_candidates=8,
        spacing=spacing,
    )
    density_bin = max(fine_bin, 2.0 * spacing)  # below this, a density comparison fits noise
    icp_mov, icp_fix = sub(mov_all, _MAX_CANDIDATE_POINTS), fix_all
    tree_f = cKDTree(icp_fix)
    scales_rel = np.array([1.0]) if kind == "rigid" else np.array([1 / 1.02, 1.0, 1.02])
    refined: list[dict[str, Any]] = []
    for t0, score in coarse:
        t_dens, center, half, bin_um, step = _refine(
            mov_all, fix_all, t0, coarse_bin=coarse_bin, fine_bin=density_bin, scales_rel=scales_rel
        )
        entry: dict[str, Any] = {
            "density": t_dens,
            "score": score,
            "t": t_dens,
            "fraction": 0.0,
            "null": 1.0,
            "n_pairs": 0,
            "rms": np.nan,
        }
        if sections != "adjacent":
            t_ref, center, half, _, _ = _refine(
                mov_all, fix_all, t_dens, coarse_bin=bin_um, fine_bin=fine_bin, scales_rel=scales_rel, prev_step=step
            )
            t_icp, n_pairs, rms = _icp(icp_mov, icp_fix, tree_f, t_ref, kind=kind, tol=tol, center=center, half=half)
            moved = t_icp.apply(icp_mov)
            entry.update(
                t=t_icp,
                n_pairs=n_pairs,
                rms=rms,
                fraction=_matched_fraction(moved, icp_fix, tree_f, tol, spacing),
                null=_null_fraction(moved, icp_fix, tree_f, tol, spacing),
            )
        refined.append(entry)
    probe = sub(mov_all, 5000)
    cands = tuple((e["t"].rotation_deg, e["t"].scale, float(e["score"]), float(e["fraction"])) for e in refined)

    def distinct(a: Transform, b: Transform, *, density: bool = False) -> bool:
        limit = max(3.0 * tol, 2.0 * coarse_bin, 2.0 * density_bin if density else 0.0)
        return _rms_displacement(a, b, probe) > limit

    point_ok = [e for e in refined if e["fraction"] >= max(0.3, e["null"] + 0.2)]
    if point_ok:
        best = max(point_ok, key=lambda e: e["fraction"])
        if mov_all.shape[0] > icp_mov.shape[0]:  # polish the winner on (up to _MAX_ICP_POINTS of) all the cells
            full = sub(mov_all, _MAX_ICP_POINTS)
            t_full, n_pairs, rms = _icp(
                full,
                icp_fix,
                tree_f,
                best["t"],
                kind=kind,
                tol=tol,
                center=best["t"].apply(full.mean(axis=0)[None])[0],
                half=np.inf,
            )
            best.update(t=t_full, n_pairs=n_pairs, rms=rms)
        rivals = [
            e
            for e in point_ok
            if e is not best and distinct(e["t"], best["t"]) and e["fraction"] >= best["fraction"] - 0.05
        ]
        base = {
            "matched_fraction": best["fraction"],
            "null_fraction": best["null"],
            "density_score": best["score"],
            "candidates": cands,
        }
        if rivals:
            r = rivals[0]["t"]
            msg = (
                f"ambiguous: two different transforms match the cells equally well (rotation "
                f"{best['t'].rotation_deg:.1f}° vs {r.rotation_deg:.1f}°, {best['fraction']:.0%} vs "
                f"{rivals[0]['fraction']:.0%} matched); the layout is symmetric or periodic, give landmarks"
            )
            return RegistrationResult(best["t"], best["rms"], best["n_pairs"], False, msg, "points", **base)
        msg = (
            f"{kind} transform from the point clouds: rotation {best['t'].rotation_deg:.2f}°, shift "
            f"({best['t'].translation[0]:.1f}, {best['t'].translation[1]:.1f}) µm, {best['n_pairs']} cell pairs, "
            f"RMS residual {best['rms']:.3g} µm, {best['fraction']:.0%} of cells matched (null {best['null']:.0%})"
        )
        return RegistrationResult(best["t"], best["rms"], best["n_pairs"], True, msg, "points", **base)
    best = max(refined, key=lambda e: e["score"])
    base = {
        "matched_fraction": best["fraction"],
        "null_fraction": best["null"],
        "density_score": best["score"],
        "candidates": cands,
    }
    if sections == "same":
        msg = (
            f"the cells do not match one to one under any candidate ({best['fraction']:.0%} matched within "
            f"{tol:g} µm vs {best['null']:.0%} by chance): the clouds do not overlap or are not the same cells; "
            "give landmarks or use sections='adjacent'"
        )
        return RegistrationResult(best["density"], np.nan, 0, False, msg, "density", **base)
    # the coarse scores allow shifts of a few coarse bins and cannot tell the given frames from an offset of tens of
    # µm: compare the two at the fine density resolution, as placed (no shift)
    identity_fine = _density_fit(Transform.identity(kind), mov_all, fix_all, density_bin, spacing)
    best_fine = _density_fit(best["density"], mov_all, fix_all, density_bin, spacing)
    logger.debug(
        "density mismatch: best %.4f (fine %.4f), identity %.4f (fine %.4f)",
        1 - best["score"],
        1 - best_fine,
        1 - identity_score,
        1 - identity_fine,
    )
    if (1.0 - identity_fine) <= (1.0 + margin) * (1.0 - best_fine):
        msg = (
            f"the given frames already agree on tissue density (score {identity_score:.3f} vs {best['score']:.3f} for "
            "the best transform) and the cells do not match one to one (adjacent sections?); no transform applied"
        )
        base["density_score"] = identity_score
        return RegistrationResult(Transform.identity(kind), np.nan, 0, True, msg, "density", **base)
    rivals = [
        e
        for e in refined
        if e is not best
        and distinct(e["density"], best["density"], density=True)
        and (1.0 - e["score"]) < (1.0 + margin) * (1.0 - best["score"])
    ]
    if rivals:
        msg = (
            f"ambiguous: the tissue density fits equally well at rotations {best['density'].rotation_deg:.1f}° and "
            f"{rivals[0]['density'].rotation_deg:.1f}° (scores {best['score']:.3f} vs {rivals[0]['score']:.3f}) "
            "and the cells do not match one to one; give landmarks"
        )
        return RegistrationResult(best["density"], np.nan, 0, False, msg, "density", **base)
    t = best["density"]
    msg = (
        f"{kind} transform from tissue density only (cells do not match one to one: adjacent sections?): rotation "
        f"{t.rotation_deg:.2f}°, shift ({t.translation[0]:.1f}, {t.translation[1]:.1f}) µm, density score "
        f"{best['score']:.3f}; expect errors of a few cell diameters"
    )
    return RegistrationResult(t, np.nan, 0, True, msg, "density", **base)
