"""select_n_factors: choose the number of joint-NMF factors k from the stability of the factors over subsamples.

The criterion, and why
----------------------
For every k of a grid, the joint NMF is fitted ``n_restarts`` times, each time on a different random half of the
cells (at most ``max_cells`` cells, the same subsamples for every k) with its own seed. Each fit gives the
weighted joint feature loadings ``G = [s_1 H_1 | s_2 H_2 | ...]`` (k x features, rows scaled to unit length).
Two fits are compared by matching their factors one-to-one (Hungarian assignment on the k x k matrix of cosine
similarities between rows); the **stability** of k is the mean cosine similarity of matched factors, averaged over
all pairs of restarts (1 = every factor is found again, whichever cells were used). This is the factor-matching
form of stability-driven NMF (Wu et al. 2016): a factor that stands for a cell type or programme present in the
tissue is found again in every half of the cells; a factor that fits noise, or splits one population arbitrarily,
is not. A k is *stable* when its stability is at least ``threshold`` (0.95), and the chosen k is the **largest
stable k of the grid**.

Why this rule:

- The reconstruction error alone cannot choose k: on realistic data it falls smoothly with k, without an elbow
  (measured on the built-in ``synthetic_tissue``: the unexplained fraction of the sum of squares goes 0.43, 0.38,
  0.35, 0.32, 0.30, 0.29 at k = 2, 4, 8, 12, 18, 26). It is still computed on every subsample and stored, so that
  the curve can be drawn next to the stability.
- Among stable k the largest is taken because the annotation needs every population to get factors of its own;
  over-factorising is harmless to it (several factors may name one type) while under-factorising merges rare
  types into their neighbours.
- On planted data (cells made of ``k_true`` non-negative programmes plus noise) the stability is ~1.0 at
  ``k_true`` and falls at ``k_true + 1``, so the rule returns ``k_true`` (16 of 18 planted sets; ``k_true + 1`` in
  the other two; tested). Smaller k can be unstable too
  when cells mix several programmes (two programmes merged into one factor can be merged in several equally good
  ways), which is why the whole grid is scanned rather than stopping at the first drop (``patience`` turns on
  early stopping for users who want it).
- Consensus clustering's cophenetic correlation (Brunet et al. 2004) answers the same question but needs an
  n x n consensus matrix; matching factors costs O(k^3) per pair of fits and nothing per cell.

When no k reaches the threshold (noisy or very small data), the differences in stability are within the noise of
the estimate and the largest k whose stability is within 0.05 of the best is taken, for the same reason (measured
on the 200-cell paper benchmark, RNA only: stability 0.84-0.90 for k = 2-6; the most stable k, 2, merged four
types and cost 15 % accuracy, k = 5 none).

The default grid ``(2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 26, 30)`` never exceeds half the number of features
factorized, nor one factor per 15 cells of a subsample. With k close to the number of features NMF can give one
factor per feature, a solution that is trivially stable (and exact at k = n_features) but says nothing about cell
types (seen with 9 CyCIF channels: stability > 0.97 at every k up to 9); with too few cells per factor the
stability of small subsamples is noise (seen on the 200-cell paper benchmark: 0.95 at k = 11).

Cost: ``n_restarts`` fits per grid point on at most ``max_cells`` cells, with a loose tolerance, independent of
the number of cells beyond ``max_cells``; see ``docs/real_data.md`` for timings.

References
----------
Wu S. et al. (2016). Stability-driven nonnegative matrix factorization to interpret spatial gene expression and
build local gene networks. PNAS 113, 4290-4295.
Brunet J.-P., Tamayo P., Golub T.R., Mesirov J.P. (2004). Metagenes and molecular pattern discovery using matrix
factorization. PNAS 101, 4164-4169.
Kotliar D. et al. (2019). Identifying gene expression programs of cell-type identity and cellular activity with
single-cell RNA-seq. eLife 8, e43803 (consensus NMF: stability and error against k).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_in_range, check_positive_int
from spatialmultiomics._warnings import ConvergenceWarning

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["DEFAULT_K_GRID", "KSelection", "select_k", "select_n_factors", "store_k_selection"]

#: the k tried by default (cut at half the number of features and below the subsample size)
DEFAULT_K_GRID: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 26, 30)
#: a factor needs at least this many cells of a subsample on average
MIN_CELLS_PER_FACTOR = 15
#: when no k is stable: the largest k whose stability is within this margin of the best one
FALLBACK_MARGIN = 0.05


@dataclass(frozen=True, eq=False)
class KSelection:
    """The chosen number of factors and the curves it was chosen from.

    Attributes
    ----------
    k
        The chosen number of factors.
    k_grid
        int64 array (n_k,): the k evaluated, increasing (the scan may stop before the end of the requested grid).
    stability
        float64 array (n_k,): mean cosine similarity of matched factors between fits on different subsamples
        (1 = perfectly reproducible).
    stability_sd
        float64 array (n_k,): its standard deviation over the pairs of restarts.
    error
        float64 array (n_k,): mean relative reconstruction error ``||X - W H||^2 / ||X||^2`` of the weighted
        joint matrix over the restarts (fraction of the sum of squares left unexplained).
    error_sd
        float64 array (n_k,): its standard deviation over the restarts.
    stable
        bool array (n_k,): ``stability >= threshold``.
    threshold
        The stability threshold used.
    reason
        One sentence saying why ``k`` was chosen.
    params
        The arguments used (grid requested, restarts, subsample size, seed, ...).
    """

    k: int
    k_grid: np.ndarray
    stability: np.ndarray
    stability_sd: np.ndarray
    error: np.ndarray
    error_sd: np.ndarray
    stable: np.ndarray
    threshold: float
    reason: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the selection as a dict of plain values and arrays, as stored in ``uns['nmf']['k_selection']``."""
        return {
            "k": int(self.k),
            "k_grid": np.asarray(self.k_grid, dtype=np.int64),
            "stability": np.asarray(self.stability, dtype=np.float64),
            "stability_sd": np.asarray(self.stability_sd, dtype=np.float64),
            "error": np.asarray(self.error, dtype=np.float64),
            "error_sd": np.asarray(self.error_sd, dtype=np.float64),
            "stable": np.asarray(self.stable, dtype=bool),
            "threshold": float(self.threshold),
            "criterion": "largest k of the grid with factor-matching stability >= threshold",
            "reason": self.reason,
            "params": dict(self.params),
        }


def _squared_norm(X: Any) -> float:
    if sp.issparse(X):
        data = np.asarray(X.data, dtype=np.float64)
        return float(data @ data)
    arr = np.asarray(X, dtype=np.float64)
    return float(np.einsum("ij,ij->", arr, arr))


def _fit_once(
    blocks: Sequence[Any], k: int, *, seed: int, solver: str, modality_weights: Any, max_iter: int, tol: float
) -> tuple[np.ndarray, float]:
    """Fit one joint NMF; return unit-norm rows of the weighted joint loadings (k, p) and the relative error."""
    from spatialmultiomics.factorize._estimator import JointNMF

    model = JointNMF(k, solver=solver, modality_weights=modality_weights, max_iter=max_iter, tol=tol, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # screening fits use a loose budget on purpose
        model.fit(list(blocks))
    scales = np.asarray(model.block_scales_, dtype=np.float64)
    G = np.concatenate([np.asarray(H, dtype=np.float64) * s for H, s in zip(model.components_, scales, strict=True)], 1)
    norms = np.linalg.norm(G, axis=1, keepdims=True)
    G = np.divide(G, norms, out=np.zeros_like(G), where=norms > 0)
    total = sum(s * s * _squared_norm(X) for X, s in zip(blocks, scales, strict=True))
    rel = float(model.reconstruction_err_) ** 2 / total if total > 0 else 0.0
    return G, rel


def _matched_similarity(G1: np.ndarray, G2: np.ndarray) -> float:
    """Mean cosine similarity of the factors of two fits after one-to-one (Hungarian) matching."""
    from scipy.optimize import linear_sum_assignment

    C = G1 @ G2.T
    rows, cols = linear_sum_assignment(C, maximize=True)
    return float(C[rows, cols].mean())


def _check_grid(k_grid: Sequence[int] | None, k_max: int) -> list[int]:
    if k_grid is None:
        grid = [k for k in DEFAULT_K_GRID if k <= k_max]
        return grid or [max(1, min(2, k_max))]
    if isinstance(k_grid, str | bytes) or not isinstance(k_grid, Sequence | np.ndarray):
        msg = f"k_grid must be a sequence of integers >= 1 (e.g. [2, 4, 8, 16]), got {k_grid!r}."
        raise InputError(msg)
    grid = sorted({check_positive_int(k, name="k_grid values") for k in k_grid})
    if not grid:
        msg = "k_grid is empty; give at least one number of factors, e.g. [2, 4, 8, 16]."
        raise InputError(msg)
    too_big = [k for k in grid if k > k_max]
    if too_big:
        msg = (
            f"k_grid values {too_big} are too large: at most {k_max} factors can be tried here (half the number of "
            f"features, and one factor per {MIN_CELLS_PER_FACTOR} cells of a subsample); lower them."
        )
        raise InputError(msg)
    return grid


def _scan(
    subs: list[list[Any]],
    grid: list[int],
    fit_seeds: list[int],
    *,
    threshold: float,
    patience: int | None,
    solver: str,
    modality_weights: Any,
    max_iter: int,
    tol: float,
) -> tuple[list[int], list[float], list[float], list[float], list[float]]:
    """Fit every subsample at each k of ``grid`` in turn (stop after ``patience`` unstable k past a stable one)."""
    n_restarts = len(subs)
    ks: list[int] = []
    stab_mean: list[float] = []
    stab_sd: list[float] = []
    err_mean: list[float] = []
    err_sd: list[float] = []
    seen_stable = False
    misses = 0
    for k in grid:
        fits = [
            _fit_once(sub, k, seed=s, solver=solver, modality_weights=modality_weights, max_iter=max_iter, tol=tol)
            for sub, s in zip(subs, fit_seeds, strict=True)
        ]
        sims = [_matched_similarity(fits[a][0], fits[b][0]) for a, b in itertools.combinations(range(n_restarts), 2)]
        errs = [f[1] for f in fits]
        ks.append(k)
        stab_mean.append(float(np.mean(sims)))
        stab_sd.append(float(np.std(sims)))
        err_mean.append(float(np.mean(errs)))
        err_sd.append(float(np.std(errs)))
        logger.debug("select_n_factors: k=%d stability %.3f error %.4f", k, stab_mean[-1], err_mean[-1])
        if stab_mean[-1] >= threshold:
            seen_stable, misses = True, 0
        elif seen_stable and patience is not None:
            misses += 1
            if misses >= patience:
                break

    return ks, stab_mean, stab_sd, err_mean, err_sd


def select_k(
    blocks: Sequence[Any],
    *,
    k_grid: Sequence[int] | None = None,
    n_restarts: int = 4,
    subsample: float = 0.5,
    max_cells: int = 1500,
    threshold: float = 0.95,
    patience: int | None = None,
    solver: str = "hals",
    modality_weights: Any = None,
    max_iter: int = 200,
    tol: float = 1e-3,
    seed: int | None = 0,
) -> KSelection:
    """Choose k for the joint NMF of ``blocks`` (arrays; see :func:`select_n_factors` for the criterion).

    Parameters
    ----------
    blocks
        One non-negative matrix per modality, each (n_cells, n_features_b), dense or sparse, same rows.
    k_grid
        The k to try (sorted, de-duplicated); default :data:`DEFAULT_K_GRID` cut at half the number of features.
    n_restarts
        Fits per k, each on its own subsample of cells (>= 2).
    subsample
        Fraction of the cells in each subsample (0 < subsample <= 1).
    max_cells
        At most this many cells per subsample.
    threshold
        Minimum stability (mean matched cosine similarity, in [0, 1]) for a k to count as stable.
    patience
        None (default): evaluate the whole grid. An integer: stop after this many consecutive unstable k that
        follow a stable one (faster; misses a larger stable k after a dip).
    solver, modality_weights, max_iter, tol
        Passed to :class:`~spatialmultiomics.factorize.JointNMF` for every fit (the same balancing of modalities
        as the final fit; a looser ``tol`` than the final fit, as these fits only screen k).
    seed
        Seed of the subsamples and of the fits; the same seed gives the same choice.

    Returns
    -------
    KSelection
    """
    from spatialmultiomics.factorize._estimator import _check_blocks

    n_restarts = check_positive_int(n_restarts, name="n_restarts", minimum=2)
    subsample = check_in_range(subsample, name="subsample", low=0.0, high=1.0)
    if subsample == 0:
        msg = "subsample must be a fraction of the cells in (0, 1], got 0."
        raise InputError(msg)
    max_cells = check_positive_int(max_cells, name="max_cells", minimum=2)
    threshold = check_in_range(threshold, name="threshold", low=0.0, high=1.0)
    patience = None if patience is None else check_positive_int(patience, name="patience")
    max_iter = check_positive_int(max_iter, name="max_iter")
    Xs = _check_blocks(blocks)
    n = Xs[0].shape[0]
    p = sum(X.shape[1] for X in Xs)
    m = min(max_cells, max(2, round(subsample * n)), n)
    k_max = max(1, min(p // 2, m // MIN_CELLS_PER_FACTOR))
    grid = _check_grid(k_grid, k_max)

    children = np.random.SeedSequence(seed).spawn(n_restarts)
    rngs = [np.random.default_rng(c) for c in children]
    rows = [np.sort(rng.choice(n, size=m, replace=False)) for rng in rngs]
    fit_seeds = [int(rng.integers(2**31 - 1)) for rng in rngs]
    subs = [[X[r] for X in Xs] for r in rows]

    # BLAS threads cost more than they give on these small products (and stall on a busy machine)
    limit = threadpool_limits(limits=1, user_api="blas") if m * p < 5e7 else nullcontext()
    with limit:
        ks, stab_mean, stab_sd, err_mean, err_sd = _scan(
            subs,
            grid,
            fit_seeds,
            threshold=threshold,
            patience=patience,
            solver=solver,
            modality_weights=modality_weights,
            max_iter=max_iter,
            tol=tol,
        )
    stability = np.asarray(stab_mean)
    stable = stability >= threshold
    k_arr = np.asarray(ks, dtype=np.int64)
    if stable.any():
        chosen = int(k_arr[stable].max())
        reason = (
            f"k={chosen}: the largest k whose factors reproduce across {n_restarts} subsamples of {m} cells "
            f"(stability {stability[k_arr == chosen][0]:.3f} >= {threshold})"
        )
        if len(ks) < len(grid):
            reason += f"; the scan stopped at k={ks[-1]} after {patience} unstable k"
        else:
            reason += f"; grid {ks[0]}-{ks[-1]}"
    else:
        near = stability >= stability.max() - FALLBACK_MARGIN
        chosen = int(k_arr[near].max())
        reason = (
            f"k={chosen}: no k reached stability {threshold}; the largest k within {FALLBACK_MARGIN} of the best "
            f"stability ({stability.max():.3f}) was taken (stability {stability[k_arr == chosen][0]:.3f})"
        )
    params = {
        "k_grid_requested": [int(k) for k in grid],
        "n_restarts": n_restarts,
        "subsample": float(subsample),
        "max_cells": max_cells,
        "n_cells_per_fit": int(m),
        "threshold": float(threshold),
        "patience": patience,
        "solver": solver,
        "max_iter": max_iter,
        "tol": float(tol),
        "seed": seed if seed is None or isinstance(seed, int) else repr(seed),
    }
    logger.info("select_n_factors: %s", reason)
    return KSelection(
        k=chosen,
        k_grid=k_arr,
        stability=stability,
        stability_sd=np.asarray(stab_sd),
        error=np.asarray(err_mean),
        error_sd=np.asarray(err_sd),
        stable=stable,
        threshold=float(threshold),
        reason=reason,
        params=params,
    )


def select_n_factors(
    mdata: MuData,
    *,
    k_grid: Sequence[int] | None = None,
    n_restarts: int = 4,
    subsample: float = 0.5,
    max_cells: int = 1500,
    threshold: float = 0.95,
    patience: int | None = None,
    modalities: Sequence[str] | None = None,
    layer: str | None = Keys.PREPROCESSED,
    use_highly_variable: bool = True,
    solver: str = "hals",
    modality_weights: Sequence[float] | Mapping[str, float] | str | None = None,
    max_iter: int = 200,
    tol: float = 1e-3,
    seed: int | None = 0,
    inplace: bool = True,
) -> KSelection:
    """Choose the number of joint-NMF factors k from the stability of the factors over subsamples of cells.

    For each k of ``k_grid`` the joint NMF is fitted on ``n_restarts`` random subsamples of the cells; k is stable
    when the factors of different subsamples match (mean cosine similarity of one-to-one matched feature
    loadings >= ``threshold``). The chosen k is the largest stable k before the stability breaks down (see the
    module notes, :mod:`spatialmultiomics.factorize._select`, for the rule and why). The reconstruction-error
    curve is computed on the way and stored with the stability curve so that both can be drawn.

    The matrices are the ones :func:`~spatialmultiomics.factorize.joint_nmf` would use with the same
    ``modalities``, ``layer``, ``use_highly_variable`` and ``modality_weights``.

    Parameters
    ----------
    mdata
        MuData whose modalities share the same cells in the same order (after ``smo.pp.preprocess``).
    k_grid
        The k to try; default ``(2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 22, 26, 30)``, cut at half the number of
        features factorized and at one factor per 15 cells of a subsample.
    n_restarts
        Fits per k, each on its own random subsample (>= 2; stability is averaged over all pairs).
    subsample
        Fraction of the cells in each subsample.
    max_cells
        At most this many cells per subsample (keeps the cost independent of the size of the dataset).
    threshold
        Stability (in [0, 1]) a k needs to count as stable.
    patience
        None (default): evaluate the whole grid; an integer: stop after this many consecutive unstable k that
        follow a stable one.
    modalities, layer, use_highly_variable, solver, modality_weights
        As in :func:`~spatialmultiomics.factorize.joint_nmf`.
    max_iter, tol
        Iteration budget of each screening fit (looser than a final fit).
    seed
        Seed of the subsamples and fits; the same seed gives the same choice.
    inplace
        True: also store the selection in ``mdata.uns['nmf']['k_selection']`` (``uns['nmf']`` is created when
        absent). The result is returned either way, since the caller needs k.

    Returns
    -------
    KSelection
        ``k`` and the curves (``k_grid``, ``stability``, ``error`` with their SDs, ``stable``), the reason and the
        parameters. With ``inplace=True`` the same as a dict (:meth:`KSelection.to_dict`) in
        ``mdata.uns['nmf']['k_selection']``. Note that :func:`~spatialmultiomics.factorize.joint_nmf` rewrites
        ``uns['nmf']``; :func:`spatialmultiomics.run_pipeline` stores the selection again after the final fit.

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.paper_benchmark(seed=0)
    >>> smo.pp.preprocess(mdata)
    >>> sel = smo.factorize.select_n_factors(mdata)
    >>> 4 <= sel.k <= 6
    True
    """
    from spatialmultiomics.factorize._api import _check_modalities, _select, _weights

    mods = _check_modalities(mdata, modalities)
    selected = [_select(mdata.mod[name], name, layer, use_highly_variable)[0] for name in mods]
    try:
        result = select_k(
            selected,
            k_grid=k_grid,
            n_restarts=n_restarts,
            subsample=subsample,
            max_cells=max_cells,
            threshold=threshold,
            patience=patience,
            solver=solver,
            modality_weights=_weights(modality_weights, mods),
            max_iter=max_iter,
            tol=tol,
            seed=seed,
        )
    except InputError as err:  # name the modality instead of the block index
        msg = str(err)
        for i, name in enumerate(mods):
            msg = msg.replace(f"blocks[{i}]", f"modality {name!r}")
        raise InputError(msg) from None
    result.params.update({"modalities": list(mods), "layer": layer, "use_highly_variable": use_highly_variable})
    if inplace:
        store_k_selection(mdata, result)
    return result


def store_k_selection(mdata: MuData, selection: KSelection) -> None:
    """Store ``selection`` in ``mdata.uns['nmf']['k_selection']`` (creating ``uns['nmf']`` when absent)."""
    nmf = mdata.uns.get(Keys.NMF_UNS)
    if not isinstance(nmf, Mapping):
        mdata.uns[Keys.NMF_UNS] = {}
    mdata.uns[Keys.NMF_UNS]["k_selection"] = selection.to_dict()
