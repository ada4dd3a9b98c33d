"""Modalities typed on their own cells, integrated at the level of cell types and neighbourhoods.

When two modalities were measured on different cells (serial sections) and their panels share no linked feature,
no cell of one modality can stand in for a cell of the other: copying the profile of the nearest cell of the other
section puts another cell's proteins, often another type's, on every cell (on the synthetic adjacent sections of
``benchmarks/bench_integration.py`` only 31 % of nearest cells have the same type, and the joint typing fell from
0.91 macro-F1 for RNA alone to 0.32). Route ``'separate'`` of :func:`~spatialmultiomics.align.align` keeps the
modality apart instead: each modality is typed on its own cells, and the two are brought together only where the
data support it, on the registered common frame:

* per reference cell, the composition of the other modality's types within a radius
  (:func:`neighbour_type_fractions`): the cell's surroundings as the other panel sees them;
* per pair of types, how often a reference cell of type A has cells of the other modality's type B around it,
  against the expectation from the two types' abundances (:func:`type_concordance`): which type of one panel
  corresponds to which type of the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._sparse import one_hot

__all__ = ["cross_neighbours", "neighbour_type_fractions", "type_agreement", "type_concordance"]


def cross_neighbours(ref_xy: np.ndarray, other_xy: np.ndarray, radius: float) -> sp.csr_matrix:
    """Binary (n_ref, n_other) CSR matrix: reference cell i has other cell j within ``radius`` µm."""
    from scipy.spatial import cKDTree

    if not np.isfinite(radius) or radius <= 0:
        msg = f"radius must be a positive number of µm, got {radius!r}."
        raise InputError(msg)
    ref_xy = np.asarray(ref_xy, dtype=np.float64)[:, :2]
    other_xy = np.asarray(other_xy, dtype=np.float64)[:, :2]
    pairs = cKDTree(ref_xy).sparse_distance_matrix(cKDTree(other_xy), radius, output_type="coo_matrix")
    graph = sp.csr_matrix((np.ones(pairs.nnz), (pairs.row, pairs.col)), shape=(ref_xy.shape[0], other_xy.shape[0]))
    graph.sum_duplicates()
    graph.data[:] = 1.0
    return graph


def _codes(labels: Sequence[str] | pd.Series | np.ndarray) -> tuple[np.ndarray, list[str]]:
    cat = pd.Categorical(np.asarray(labels).astype(str))
    return cat.codes.astype(np.int64), [str(c) for c in cat.categories]


def neighbour_type_fractions(
    graph: sp.csr_matrix, other_labels: Sequence[str] | pd.Series | np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    """Fraction of each of the other modality's types among the other cells around each reference cell.

    Parameters
    ----------
    graph
        (n_ref, n_other) cross-modal neighbours, from :func:`cross_neighbours`.
    other_labels
        Type of each cell of the other modality.

    Returns
    -------
    A (n_ref, n_types) DataFrame of fractions (rows sum to 1; all 0 for a cell with no other cell around it) and
    the number of other cells around each reference cell.
    """
    codes, cats = _codes(other_labels)
    if codes.size != graph.shape[1]:
        msg = f"other_labels has {codes.size} entries for {graph.shape[1]} cells of the other modality."
        raise InputError(msg)
    counts = np.asarray((graph @ one_hot(codes, len(cats))).todense(), dtype=np.float64)
    n = counts.sum(axis=1)
    frac = np.divide(counts, n[:, None], out=np.zeros_like(counts), where=n[:, None] > 0)
    return pd.DataFrame(frac, columns=cats), n.astype(np.int64)


def type_concordance(
    graph: sp.csr_matrix,
    ref_labels: Sequence[str] | pd.Series | np.ndarray,
    other_labels: Sequence[str] | pd.Series | np.ndarray,
) -> pd.DataFrame:
    """Which type of one modality lies among which type of the other, against chance.

    Every cross-modal neighbour pair (reference cell of type A, other cell of type B) is counted; ``expected`` is
    the count if the types of the two ends were independent (row total x column total / all pairs), ``log2_ratio``
    the log2 of (observed + 0.5) / (expected + 0.5), ``z`` the Pearson residual (observed - expected) /
    sqrt(expected). ``best`` marks, for each reference type, the other type with the largest ratio.

    Returns
    -------
    One row per (ref_type, other_type): ``ref_type, other_type, observed, expected, log2_ratio, z, best``.
    """
    rc, rcats = _codes(ref_labels)
    oc, ocats = _codes(other_labels)
    if rc.size != graph.shape[0] or oc.size != graph.shape[1]:
        msg = f"labels ({rc.size}, {oc.size}) do not fit the neighbour graph {graph.shape}."
        raise InputError(msg)
    obs = np.asarray((one_hot(rc, len(rcats)).T @ graph @ one_hot(oc, len(ocats))).todense(), dtype=np.float64)
    total = obs.sum()
    exp = np.outer(obs.sum(axis=1), obs.sum(axis=0)) / total if total > 0 else np.zeros_like(obs)
    ratio = np.log2((obs + 0.5) / (exp + 0.5))
    z = np.divide(obs - exp, np.sqrt(exp), out=np.zeros_like(obs), where=exp > 0)
    best = np.zeros_like(obs, dtype=bool)
    has = obs.sum(axis=1) > 0
    best[np.flatnonzero(has), np.argmax(ratio[has], axis=1)] = True
    return pd.DataFrame(
        {
            "ref_type": np.repeat(rcats, len(ocats)),
            "other_type": np.tile(ocats, len(rcats)),
            "observed": obs.ravel().astype(np.int64),
            "expected": exp.ravel(),
            "log2_ratio": ratio.ravel(),
            "z": z.ravel(),
            "best": best.ravel(),
        }
    )


def type_agreement(
    fractions: pd.DataFrame, ref_labels: Sequence[str] | pd.Series | np.ndarray, *, exclude: Sequence[str] = ()
) -> float:
    """Share of reference cells whose own type is the most frequent type of the other modality around them.

    Only cells with other cells around them, whose own type is named in both modalities and not in ``exclude``
    (e.g. ``'Unknown'``), count; NaN when none does.
    """
    labels = np.asarray(ref_labels).astype(str)
    cols = np.asarray(fractions.columns).astype(str)
    vals = fractions.to_numpy()
    around = vals.sum(axis=1) > 0
    ok = around & np.isin(labels, cols) & ~np.isin(labels, list(exclude))
    if not ok.any():
        return float("nan")
    top = cols[np.argmax(vals[ok], axis=1)]
    return float(np.mean(top == labels[ok]))
