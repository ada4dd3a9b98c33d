"""Lateral spill-over compensation of segmented imaging intensities, from cell centroids (REDSEA's model).

In densely packed tissue a cell's membrane signal is partly quantified in its touching neighbours: segmentation
masks are never exact and the optics blur the boundary, so the pixels along a shared boundary mix the two cells.
A tumour cell wedged between T cells then reads CD3+, a T cell in a tumour nest reads PanCK+ (Bai et al.,
"Adjacent cell marker lateral spillover compensation and reinforcement for multiplexed images", *Front. Immunol.*
12:652631, 2021, REDSEA). REDSEA works on the segmentation masks: the leak from cell j into cell i is j's
boundary signal times the fraction of j's boundary shared with i; it subtracts that from i ("compensation") and
adds back to i what i lost to its neighbours ("reinforcement"). We only have centroids (and often a cell area), so
:func:`compensate_spillover` keeps the model and approximates the geometry:

* **Touching neighbours.** Per field of view, each cell's ``n_neighbors`` nearest cells within a distance cap,
  symmetrised. The cap is ``radius`` µm, by default 1.75 x the median nearest-neighbour distance of the FOV (in
  a packed section the nearest neighbour is about one cell diameter away, and the cells sharing a boundary with a
  cell lie within ~1.5-2 diameters; further cells cannot touch it).
* **Shared boundary.** Cell i's boundary is split among its touching neighbours in proportion to the angle each
  subtends from i's centre, ``2 arcsin(min(1, r_j / d_ij))``: closer and bigger neighbours take a larger share.
  ``r_j`` is the cell radius: ``sqrt(area_j / median area)`` times half the median nearest-neighbour distance
  when the cells have an area column (``size_key``), half that distance otherwise. ``W[i, j]`` is that share; the
  rows of cells with neighbours sum to 1, the rows of cells without neighbours are empty.
* **Leak per cell.** Intensities are mean intensities per cell. The signal that crosses a boundary scales with its
  length and is spread over the receiving cell's area, so the spill fraction of cell i is
  ``s_i = strength x sqrt(median area / area_i)`` (perimeter / area of a disk; the factor clipped to 0.5-2 and
  ``s_i`` to 0.35), ``strength`` for every cell when there is no area.

The model, per channel, with ``x`` the spill-free signal above background and ``y`` the measured one:
``y_i = (1 - s_i) x_i + s_i sum_j W[i, j] x_j`` (``reinforce=True``, default: the signal moves from one cell to
its neighbours, none is created or lost, a uniform field is left unchanged: what blur and mask errors do) or
``y_i = x_i + s_i sum_j W[i, j] x_j`` (``reinforce=False``: the neighbours' signal is added, nothing is lost; the
model of :func:`smo.datasets.synthetic_tissue`). REDSEA applies one subtraction step (a first-order correction);
here the linear system is solved by fixed-point iteration, projected on non-negative intensities at every step
(a contraction, so it converges geometrically; the projection stops the sign-alternating patterns an unconstrained
inverse amplifies). Background is taken off before and put back after (the per-channel 1st percentile: background
does not leak). Cells without a neighbour and the DNA / background channels (``exclude_channels``) are returned
unchanged; FOVs never mix (the neighbour graph is built per FOV). ``s_i <= 0.35`` bounds the noise amplification of
the inverse (at most ``1 / (1 - 2 s)`` = 3.3x for ``reinforce=True``, ``1 / (1 - s)`` for ``reinforce=False``).

**Estimating the strength** (``strength=None``). Regressing a channel on its neighbours' mean is useless: cells of
one type cluster, so real co-localisation looks like spill (that slope is ~0.8 on spill-free synthetic data).
The estimator uses mutually exclusive marker pairs found in the data. For a channel m, take the cells in the top
10 % of another channel k (a lineage); if those of them that see little m in their neighbourhood have
background-level m (median within 10 % of m's range above its 5th percentile), k and m are exclusive and in
these cells every bit of m above background is spill. Their m is regressed on their exposure
``(s_i / strength) sum_j W[i, j] x_j`` by least absolute deviations (robust to the few m+ cells among them). Each
pair gives a slope, weighted by the spread of exposure it saw relative to m's range; ``f(s)`` is the weighted
median over all pairs when the exposure is computed from the signal compensated with strength ``s`` (with the
measured signal the slope is biased, ~``strength / (1 + strength)`` for ``reinforce=False``). The estimate is the
self-consistent ``s = f(s)`` (regula falsi on [0, 0.35]); when even 0.35 leaves the negatives following their
neighbours (``f(0.35) > 0.35``) the strength is 0.35 and a warning says that the data show more mixing than
spill-over explains (merged masks, regional background). The per-channel estimates (weighted median of the pairs
of channel m) are stored, but one strength is applied to every channel: the leak is geometry, and per-channel
estimates are biased by graded expression (e.g. Vimentin, 0.24 on spill-free synthetic data); pass them back as
a dict to use them. With fewer than 3 qualifying pairs (too few cells or channels, no exclusive lineages) nothing
is compensated and a warning says so.

Measured (estimated strength, default parameters unless said):

* ``synthetic_tissue(3000, seed=1)``, ``protein_spillover`` 0 / 0.1 / 0.2 / 0.3 planted: estimated 0.012 / 0.099
  / 0.191 / 0.284 with ``reinforce=False`` (the generator's model; its neighbours are all cells within 15 µm, ours
  differ slightly); 0.012 / 0.090 / 0.161 / 0.222 with ``reinforce=True`` (a misspecified model there: the same
  leak is explained by a smaller transfer).
* Effect on correlation with the spill-free signal, lineage-implausible positives and marker-based typing, on
  synthetic and on real data (CyCIF, Vectra): ``docs/markers.md``, section "Spill-over compensation".

Limitations: centroids cannot see the real boundary (elongated cells, gaps in the tissue); the model is linear in
the mean intensity; nuclear markers (FOXP3, Ki67) spill less than membrane markers and get the same strength;
graded, non-exclusive expression can look like spill to the estimator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_finite_nonnegative, check_in_range, check_positive, check_positive_int
from spatialmultiomics._warnings import ConvergenceWarning, warn
from spatialmultiomics.pp._channels import NON_MARKER_CHANNELS, check_exclude_channels, non_marker_channels

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["SPILL_LAYER", "SPILL_UNS", "SPILL_VAR", "compensate_spillover"]

SPILL_LAYER = Keys.SPILL_COMPENSATED  # layers: compensated intensities (raw units)
SPILL_UNS = Keys.SPILLOVER  # uns: parameters and estimated strengths
SPILL_VAR = Keys.SPILL_STRENGTH  # var: strength per channel (estimated, NaN without an estimate; or as given)

#: obs columns taken as the cell area by ``size_key='auto'`` (case-insensitive, first match).
SIZE_COLUMNS: tuple[str, ...] = (
    "cell_size",
    "cell_area",
    "area",
    "Entire Cell Area (sq microns)",
    "Cell Area (sq microns)",
    "size",
)

_RADIUS_FACTOR = 1.75  # distance cap = this x median nearest-neighbour distance (per FOV)
_MAX_STRENGTH = 0.35  # per-cell spill fraction cap: noise amplified <= 1 / (1 - 2 x 0.35) = 3.3x by the inverse
_SIZE_FACTOR_RANGE = (0.5, 2.0)
_BACKGROUND_PERCENTILE = 1.0
_TOP_FRACTION = 0.1  # reference lineage: top 10 % of a channel
_EXCLUSIVE_FRACTION = 0.1  # background level: within 10 % of the channel's range above its 5th percentile
_MIN_REF_CELLS = 20
_MAX_REF_CELLS = 2000
_MIN_PAIRS = 3


# ----------------------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------------------
def _fov_groups(fov: np.ndarray | None, n: int) -> list[np.ndarray]:
    """One index array per FOV (all cells when ``fov`` is None)."""
    if fov is None:
        return [np.arange(n)]
    import pandas as pd

    codes, _ = pd.factorize(pd.Series(fov), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes))])
    return [order[bounds[f] : bounds[f + 1]] for f in range(bounds.size - 1)]


def _boundary_graph(
    xy: np.ndarray,
    *,
    fov: np.ndarray | None,
    sizes: np.ndarray | None,
    n_neighbors: int,
    radius: float | None,
) -> tuple[sp.csr_matrix, np.ndarray, list[float]]:
    """Return ``(W, size_factor, caps)``: boundary shares (CSR, rows sum to 1 or 0), per-cell spill factor, caps.

    ``W[i, j]`` is the fraction of cell i's boundary shared with cell j, for touching neighbours (the
    ``n_neighbors`` nearest within the cap, symmetrised) of the same FOV; ``size_factor[i]`` is
    ``sqrt(median area / area_i)`` clipped to ``_SIZE_FACTOR_RANGE`` (1 without sizes); ``caps`` the distance cap
    used in each FOV (µm).
    """
    from scipy.spatial import cKDTree

    n = xy.shape[0]
    rel_r = np.ones(n)
    size_factor = np.ones(n)
    if sizes is not None:
        ok = np.isfinite(sizes) & (sizes > 0)
        med_area = float(np.median(sizes[ok])) if ok.any() else 1.0
        area = np.where(ok, sizes, med_area)
        rel_r = np.sqrt(area / med_area)
        size_factor = np.clip(1.0 / rel_r, *_SIZE_FACTOR_RANGE)
    rows, cols, theta, caps = [], [], [], []
    for idx in _fov_groups(fov, n):
        if idx.size < 2:
            caps.append(float("nan"))
            continue
        pts = xy[idx]
        k = min(n_neighbors + 1, idx.size)
        dist, nb = cKDTree(pts).query(pts, k=k)
        med_nn = float(np.median(dist[:, 1]))
        cap = float(radius) if radius is not None else _RADIUS_FACTOR * med_nn
        caps.append(cap)
        src = np.repeat(np.arange(idx.size), k - 1)
        dst = nb[:, 1:].ravel()
        keep = dist[:, 1:].ravel() <= cap
        src, dst = src[keep], dst[keep]
        pair = sp.coo_matrix((np.ones(src.size), (src, dst)), shape=(idx.size, idx.size)).tocsr()
        pair = (pair + pair.T).tocoo()  # touching is symmetric
        a, b = pair.row, pair.col
        d = np.linalg.norm(pts[a] - pts[b], axis=1)
        r_b = 0.5 * (med_nn if med_nn > 0 else max(cap, 1e-12)) * rel_r[idx[b]]
        ratio = np.divide(r_b, d, out=np.ones_like(d), where=d > 0)
        rows.append(idx[a])
        cols.append(idx[b])
        theta.append(2.0 * np.arcsin(np.minimum(1.0, ratio)))
    if rows:
        r, c, t = np.concatenate(rows), np.concatenate(cols), np.concatenate(theta)
    else:
        r = c = np.zeros(0, dtype=np.int64)
        t = np.zeros(0)
    W = sp.csr_matrix((t, (r, c)), shape=(n, n))
    rs = np.asarray(W.sum(axis=1)).ravel()
    W = sp.diags(np.divide(1.0, rs, out=np.zeros(n), where=rs > 0)) @ W
    return W.tocsr(), size_factor, caps


# ----------------------------------------------------------------------------------------------------------------
# the linear model
# ----------------------------------------------------------------------------------------------------------------
def _spill_fractions(size_factor: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Per cell and channel spill fraction ``s_ic = min(strength_c x size_factor_i, 0.35)`` (n, c)."""
    return np.minimum(np.outer(size_factor, strength), _MAX_STRENGTH)


def _solve(
    R: np.ndarray,
    W: sp.csr_matrix,
    S: np.ndarray,
    *,
    reinforce: bool,
    lower: np.ndarray | None = None,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> tuple[np.ndarray, int, bool]:
    """Solve the spill model for the spill-free signal ``X`` given the measured ``R`` (background removed).

    ``reinforce``: ``R = (1 - S) * X + S * (W @ X)`` on cells with neighbours; else ``R = X + S * (W @ X)``.
    Fixed-point iteration ``X <- max(lower, (R - S * (W @ X)) / (1 - S))`` (or without the division), which
    contracts by ``max S / (1 - max S)`` (``max S``) per step; the projection on ``X >= lower`` (per channel: the
    signal cannot fall below zero intensity) is non-expansive, so it keeps the contraction, and it stops the
    sign-alternating patterns that an unconstrained inverse amplifies. Returns ``(X, n_iter, converged)``.
    """
    has = np.diff(W.indptr) > 0
    denom = (1.0 - S * has[:, None]) if reinforce else 1.0
    scale = max(float(np.abs(R).max()) if R.size else 0.0, 1e-12)
    X = np.array(R, dtype=np.float64, copy=True)
    if lower is not None:
        np.maximum(X, lower, out=X)
    for it in range(1, max_iter + 1):
        X_new = (R - S * (W @ X)) / denom
        if lower is not None:
            np.maximum(X_new, lower, out=X_new)
        delta = float(np.abs(X_new - X).max()) if X.size else 0.0
        X = X_new
        if delta <= tol * scale:
            return X, it, True
    return X, max_iter, False


# ----------------------------------------------------------------------------------------------------------------
# strength estimation from mutually exclusive channel pairs
# ----------------------------------------------------------------------------------------------------------------
def _lad_slopes(x: np.ndarray, y: np.ndarray, n_iter: int = 30) -> np.ndarray:
    """Least-absolute-deviation line ``y ~ a + b x`` per column (IRLS); returns the slopes ``b`` (c,)."""
    w = np.ones_like(x)
    b = np.zeros(x.shape[1])
    for _ in range(n_iter):
        sw, swx, swy = w.sum(0), (w * x).sum(0), (w * y).sum(0)
        swxx, swxy = (w * x * x).sum(0), (w * x * y).sum(0)
        det = sw * swxx - swx**2
        ok = det > 1e-12 * np.maximum(sw * swxx, 1e-300)
        b = np.where(ok, (sw * swxy - swx * swy) / np.where(ok, det, 1.0), np.nan)
        a = np.where(ok, (swy - b * swx) / np.where(sw > 0, sw, 1.0), 0.0)
        res = np.abs(y - a - np.nan_to_num(b) * x)
        floor = 1e-3 * (np.median(res, axis=0) + 1e-12)
        w = 1.0 / np.maximum(res, floor)
    return b


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted median (lower) of ``values``."""
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cw, 0.5 * cw[-1])])


def _pair_slopes(R: np.ndarray, E: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Spill slopes of every exclusive (target m, reference k) channel pair: ``(target, slope, weight)`` arrays.

    ``R`` (n, c): measured signal above background; ``E`` (n, c): each cell's exposure (its spill-free
    neighbour signal, times its size factor).
    """
    c = R.shape[1]
    cut = np.quantile(R, 1.0 - _TOP_FRACTION, axis=0)
    top = np.greater_equal(R, cut)
    lo = np.quantile(R, 0.05, axis=0)
    hi = np.array([np.median(R[top[:, m], m]) for m in range(c)])
    span = hi - lo
    level = lo + _EXCLUSIVE_FRACTION * span
    targets, slopes, weights = [], [], []
    for k in range(c):
        if span[k] <= 0:
            continue
        idx = np.flatnonzero(top[:, k])
        if idx.size < _MIN_REF_CELLS:
            continue
        if idx.size > _MAX_REF_CELLS:
            idx = np.sort(rng.choice(idx, _MAX_REF_CELLS, replace=False))
        x, y = E[idx], R[idx]
        x_med = np.median(x, axis=0)
        low = np.where(x <= x_med, y, np.nan)
        with np.errstate(all="ignore"):
            base = np.nanmedian(low, axis=0)
        spread = np.quantile(x, 0.9, axis=0) - np.quantile(x, 0.1, axis=0)
        ok = (np.arange(c) != k) & (span > 0) & (base <= level) & (spread > 0)
        if not ok.any():
            continue
        cols = np.flatnonzero(ok)
        b = _lad_slopes(x[:, cols], y[:, cols])
        good = np.isfinite(b)
        targets.append(cols[good])
        slopes.append(b[good])
        weights.append(spread[cols[good]] / span[cols[good]])
    if not targets:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(targets), np.concatenate(slopes), np.concatenate(weights)


def _estimate_strength(
    R: np.ndarray,
    W: sp.csr_matrix,
    size_factor: np.ndarray,
    *,
    reinforce: bool,
    lower: np.ndarray | None = None,
    seed: int = 0,
    tol: float = 1e-3,
    max_eval: int = 16,
) -> dict[str, Any]:
    """Estimate the spill strength from exclusive channel pairs (see the module notes).

    ``f(s)`` is the pooled slope of the measured signal on the exposure computed from the signal compensated with
    strength ``s``; the estimate is the self-consistent ``s = f(s)``, found by regula falsi (Illinois) on
    ``[0, _MAX_STRENGTH]``. Returns a dict with ``strength`` (NaN when fewer than ``_MIN_PAIRS`` pairs qualify),
    ``per_channel`` (c,) (NaN for channels with no pair), ``n_pairs``, ``raw_slope`` (``f(0)``) and ``saturated``
    (the data ask for more than ``_MAX_STRENGTH``).
    """
    c = R.shape[1]
    cache: dict[float, tuple[float, np.ndarray, int]] = {}

    def f(strength: float) -> tuple[float, np.ndarray, int]:
        if strength not in cache:
            if strength > 0:
                S = _spill_fractions(size_factor, np.full(c, strength))
                X = _solve(R, W, S, reinforce=reinforce, lower=lower, max_iter=300, tol=1e-5)[0]
            else:
                X = R
            E = size_factor[:, None] * (W @ X)
            target, slope, weight = _pair_slopes(R, E, np.random.default_rng(seed))
            per = np.full(c, np.nan)
            if slope.size < _MIN_PAIRS or not np.any(weight > 0):
                cache[strength] = (float("nan"), per, int(slope.size))
            else:
                for m in np.unique(target):
                    sel = target == m
                    per[m] = _weighted_median(slope[sel], weight[sel])
                cache[strength] = (_weighted_median(slope, weight), per, int(slope.size))
        return cache[strength]

    out: dict[str, Any] = {"strength": float("nan"), "per_channel": np.full(c, np.nan), "n_pairs": 0}
    f0, per0, n0 = f(0.0)
    out.update(raw_slope=f0, saturated=False, n_pairs=n0, per_channel=per0)
    if not np.isfinite(f0):
        return out
    if f0 <= 0:
        out["strength"] = 0.0
        return out
    a, b = 0.0, _MAX_STRENGTH
    ga, (fb, perb, nb) = f0, f(b)
    if not np.isfinite(fb):
        return out
    gb = fb - b
    if gb >= 0:  # even the largest strength leaves the negatives following their neighbours
        out.update(strength=b, per_channel=perb, n_pairs=nb, saturated=True)
        return out
    side = 0
    x = b
    for _ in range(max_eval):
        x = (a * gb - b * ga) / (gb - ga)
        fx, _, _ = f(x)
        if not np.isfinite(fx):
            break
        gx = fx - x
        if abs(gx) < tol or (b - a) < tol:
            break
        if gx * gb > 0:
            b, gb = x, gx
            if side == -1:
                ga *= 0.5
            side = -1
        else:
            a, ga = x, gx
            if side == 1:
                gb *= 0.5
            side = 1
    fx, perx, nx = f(x)
    out.update(strength=float(x), per_channel=perx, n_pairs=nx)
    return out


# ----------------------------------------------------------------------------------------------------------------
# container-level function
# ----------------------------------------------------------------------------------------------------------------
def _find_size_column(adata: AnnData, size_key: str | None) -> str | None:
    """The obs column used as the cell area (None: none)."""
    if size_key is None:
        return None
    if not isinstance(size_key, str):
        msg = f"size_key must be None, 'auto' or an obs column name, got {size_key!r}."
        raise InputError(msg)
    if size_key == "auto":
        lower = {str(col).lower(): col for col in adata.obs.columns}
        for name in SIZE_COLUMNS:
            col = lower.get(name.lower())
            if col is not None and np.issubdtype(adata.obs[col].dtype, np.number):
                return str(col)
        return None
    if size_key not in adata.obs.columns:
        msg = f"size_key {size_key!r} is not an obs column (obs has {list(adata.obs.columns)[:10]})."
        raise InputError(msg)
    return size_key


def _check_strength(strength: Any, var_names: Sequence[str]) -> np.ndarray | None:
    """``strength`` as a per-channel array (None: estimate)."""
    if strength is None:
        return None
    if isinstance(strength, Mapping):
        unknown = [k for k in strength if k not in set(var_names)]
        if unknown:
            msg = f"strength names channels that are not in var_names: {unknown[:5]}."
            raise InputError(msg)
        out = np.zeros(len(var_names))
        for j, name in enumerate(var_names):
            if name in strength:
                value = strength[name]
                if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
                    continue
                out[j] = check_in_range(value, name=f"strength[{name!r}]", low=0.0, high=_MAX_STRENGTH)
        return out
    value = check_in_range(strength, name="strength", low=0.0, high=_MAX_STRENGTH)
    return np.full(len(var_names), value)


def compensate_spillover(
    adata: AnnData,
    *,
    strength: float | Mapping[str, float] | None = None,
    n_neighbors: int = 8,
    radius: float | None = None,
    size_key: str | None = "auto",
    reinforce: bool = True,
    layer: str | None = None,
    layer_added: str = SPILL_LAYER,
    fov_key: str = Keys.FOV,
    exclude_channels: Sequence[str] | None = NON_MARKER_CHANNELS,
    inplace: bool = True,
) -> np.ndarray | sp.csr_matrix | None:
    """Remove the signal that leaked into each cell from its touching neighbours (lateral spill-over).

    REDSEA's model (Bai et al. 2021) on cell centroids: a cell's boundary is shared with its touching neighbours
    (kNN within a distance cap, per FOV; shares from the angle each neighbour subtends, using the cell area when
    obs has one), a fraction ``strength`` of the signal crosses each boundary, and the linear model is solved
    exactly for the spill-free intensities. See the module notes of ``spatialmultiomics.pp._spillover`` for the
    model, the estimator of ``strength`` and the measurements. ``X`` stays raw; the result goes to
    ``layers[layer_added]`` (same units, non-negative), ready to be preprocessed instead of ``X``.

    Parameters
    ----------
    adata
        Intensity modality (proteins; mean intensity per cell, cells x channels) with ``obsm['spatial']`` in µm.
    strength
        Fraction of a cell's signal that crosses its boundary into its neighbours (0 to 0.35), for a cell of median
        area. None (default): estimated from mutually exclusive channel pairs (the same value for every channel;
        the per-channel estimates are stored). A dict ``{channel: strength}`` sets it per channel (0 for the
        channels left out, NaN skipped), e.g. ``dict(adata.var['spill_strength'])`` from an earlier run.
    n_neighbors
        At most this many nearest cells per cell can touch it (before symmetrisation).
    radius
        Distance cap (µm) for touching. Default: 1.75 x the median nearest-neighbour distance, per FOV.
    size_key
        obs column with the cell area (any unit; used relative to its median): ``'auto'`` (default) takes the
        first of :data:`SIZE_COLUMNS` present (``cell_size``, ``cell_area``, ``Area``, ...), None uses no area.
    reinforce
        True (default, REDSEA's "compensation + reinforcement"): signal moves from a cell to its neighbours, so
        each cell also gets back what it lost. False: the neighbours' signal was added and nothing lost (only
        subtract).
    layer
        Layer with the raw intensities (None: ``X``).
    layer_added
        Layer that receives the compensated intensities.
    fov_key
        obs column with the field of view; cells of different FOVs are never neighbours.
    exclude_channels
        Channels left unchanged and out of the estimation (DNA / nuclear and background channels by default, as in
        :func:`smo.pp.preprocess`); None compensates every channel.
    inplace
        True: write ``layers[layer_added]``, ``var['spill_strength']`` and ``uns['spillover']`` and return None.
        False: return the matrix and leave ``adata`` alone.

    Returns
    -------
    None with ``inplace=True``, after writing

    - ``adata.layers[layer_added]``: compensated intensities (dense float32, or CSR when the input is sparse);
    - ``adata.var['spill_strength']``: strength per channel (the estimates, NaN where a channel had no
      exclusive partner or was left out; or the strengths given);
    - ``adata.uns['spillover']``: ``strength`` (applied, for a cell of median area), ``strength_per_channel``
      (list, ``var_names`` order), ``estimated``, ``n_pairs``, ``raw_slope`` (the pooled slope before
      compensation), ``saturated`` (the estimate hit 0.35), ``radius_um`` (per FOV), ``n_neighbors``,
      ``size_key`` (``''`` for none), ``reinforce``, ``channels`` (compensated), ``n_isolated`` (cells left
      unchanged), ``mean_degree``, ``n_iter``, ``background`` (per compensated channel), ``layer``,
      ``layer_added``.

    The compensated matrix with ``inplace=False``.

    Raises
    ------
    InputError
        On a bad argument, missing coordinates or negative / non-finite intensities.

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.synthetic_tissue(1000, seed=0, protein_spillover=0.2)
    >>> smo.pp.compensate_spillover(mdata["protein"], reinforce=False)  # the generator's (additive) model
    >>> round(mdata["protein"].uns["spillover"]["strength"], 1)
    0.2
    >>> mdata["protein"].layers["spill_compensated"].shape
    (1000, 28)
    """
    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
    if radius is not None:
        radius = check_positive(radius, name="radius")
    if not isinstance(reinforce, bool | np.bool_):
        msg = f"reinforce must be True or False, got {reinforce!r}."
        raise InputError(msg)
    if not isinstance(layer_added, str) or not layer_added:
        msg = f"layer_added must be a non-empty string, got {layer_added!r}."
        raise InputError(msg)
    var_names = [str(v) for v in adata.var_names]
    fixed = _check_strength(strength, var_names)
    patterns = check_exclude_channels(exclude_channels)
    if layer is None:
        Y = adata.X
    elif isinstance(layer, str) and layer in adata.layers:
        Y = adata.layers[layer]
    else:
        msg = f"layer {layer!r} is not in adata.layers ({list(adata.layers.keys())}); pass None to use X."
        raise InputError(msg)
    if Keys.SPATIAL not in adata.obsm:
        msg = f"obsm[{Keys.SPATIAL!r}] is missing: spill-over compensation needs cell coordinates in µm."
        raise InputError(msg)
    xy = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[0] != adata.n_obs or xy.shape[1] < 2 or not np.all(np.isfinite(xy[:, :2])):
        msg = f"obsm[{Keys.SPATIAL!r}] must be a finite (n_cells, 2) array in µm, got shape {xy.shape}."
        raise InputError(msg)
    check_finite_nonnegative(Y, name="intensities")
    size_col = _find_size_column(adata, size_key)
    sizes = adata.obs[size_col].to_numpy(dtype=np.float64) if size_col is not None else None
    fov = adata.obs[fov_key].to_numpy() if isinstance(fov_key, str) and fov_key in adata.obs.columns else None

    W, size_factor, caps = _boundary_graph(xy[:, :2], fov=fov, sizes=sizes, n_neighbors=n_neighbors, radius=radius)
    isolated = np.diff(W.indptr) == 0
    use = ~non_marker_channels(var_names, patterns=patterns) if patterns else np.ones(len(var_names), dtype=bool)
    cols = np.flatnonzero(use)

    is_sparse = sp.issparse(Y)
    Yd = np.asarray(Y[:, cols].toarray() if is_sparse else np.asarray(Y)[:, cols], dtype=np.float64)
    # sparse input holds background-free counts (IMC / MIBI): a stored zero stays zero
    bg = np.zeros(cols.size) if is_sparse else np.percentile(Yd, _BACKGROUND_PERCENTILE, axis=0)
    R = Yd - bg
    lower = -bg  # compensated intensities are not negative

    per_channel = np.full(len(var_names), np.nan)
    n_pairs = 0
    saturated = False
    raw_slope = float("nan")
    if fixed is None:
        fit = _estimate_strength(R, W, size_factor, reinforce=bool(reinforce), lower=lower)
        est, n_pairs, raw_slope, saturated = fit["strength"], fit["n_pairs"], fit["raw_slope"], fit["saturated"]
        per_channel[cols] = fit["per_channel"]
        if not np.isfinite(est):
            warn(
                f"spill-over strength could not be estimated ({n_pairs} exclusive channel pairs, need "
                f"{_MIN_PAIRS}); nothing was compensated. Pass strength= to set it.",
                stacklevel=2,
            )
            est = 0.0
        elif saturated:
            warn(
                f"cells follow their neighbours' signal more than spill-over of strength {_MAX_STRENGTH} explains "
                f"(slope {raw_slope:.2f} before compensation): compensated at {_MAX_STRENGTH}. Suspect merged or "
                "shifted segmentation masks, or strong regional background; check the data.",
                stacklevel=2,
            )
        strength_cols = np.full(cols.size, est)
        applied = est
    else:
        strength_cols = fixed[cols]
        applied = float(np.median(strength_cols)) if strength_cols.size else 0.0

    S = _spill_fractions(size_factor, strength_cols)
    X, n_iter, converged = _solve(R, W, S, reinforce=bool(reinforce), lower=lower)
    if not converged:
        warn(f"spill-over compensation stopped after {n_iter} iterations before converging.", ConvergenceWarning, 2)
    X += bg
    np.maximum(X, 0.0, out=X)
    X[isolated] = Yd[isolated]

    if is_sparse:
        Yc = sp.csc_matrix(Y, dtype=np.float32)
        comp = sp.csc_matrix((Yc[:, cols] != 0).multiply(X.astype(np.float32)))  # a stored zero stays zero
        pos = {j: p for p, j in enumerate(cols)}
        out = sp.hstack([comp[:, pos[j]] if use[j] else Yc[:, j] for j in range(len(var_names))], format="csr")
        out.eliminate_zeros()
    else:
        out = np.array(np.asarray(Y), dtype=np.float32, copy=True)
        out[:, cols] = X.astype(np.float32)
    if not inplace:
        return out

    per_var = fixed if fixed is not None else per_channel
    adata.layers[layer_added] = out
    adata.var[SPILL_VAR] = per_var
    adata.uns[SPILL_UNS] = {
        "strength": float(applied),
        "strength_per_channel": [float(v) for v in per_var],  # in var_names order, as var['spill_strength']
        "estimated": fixed is None,
        "n_pairs": int(n_pairs),
        "raw_slope": float(raw_slope),
        "saturated": bool(saturated),
        "radius_um": [float(c) for c in caps],
        "n_neighbors": int(n_neighbors),
        "size_key": size_col or "",
        "reinforce": bool(reinforce),
        "channels": [var_names[j] for j in cols],
        "n_isolated": int(isolated.sum()),
        "mean_degree": float(W.nnz / max(adata.n_obs, 1)),
        "n_iter": int(n_iter),
        "background": [float(b) for b in bg],
        "layer": layer or "",
        "layer_added": layer_added,
    }
    logger.info(
        "spill-over: strength %.3f (%s), %d channels, %d cells without neighbours",
        applied,
        "estimated" if fixed is None else "given",
        cols.size,
        int(isolated.sum()),
    )
    return None
