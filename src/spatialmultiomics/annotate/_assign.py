"""annotate: name the joint-NMF factors and give every cell a type, on a MuData.

Methods (``method=``):

``'auto'`` (default)
    1. Every factor is scored against every type by marker enrichment over **all** its loadings
       (:func:`~spatialmultiomics.annotate._score.factor_marker_enrichment`); a factor is named after its best
       type when the enrichment is at least 0.1, several factors may name one type, and factors that enrich no
       type's markers (housekeeping, cycling, interferon ...) stay unnamed.
    2. Per-cell marker evidence from the observed profiles (``layers['preprocessed']``, or a default transform
       of ``X``). In sequencing modalities (``denoise='counts'``) each marker column is first averaged with the
       same column reconstructed by the named factors only (``W_named @ H``), which fills in the zeros of sparse
       counts; intensities are used as measured. Each marker column is scaled to [0, 1] between its 1st and 99th
       percentiles; a type's score is the mean over its markers, averaged over modalities with the modality
       weights.
    3. Each cell takes its best-scoring type. Scores are rescaled per type so that 0 is the type's background
       (median among the other cells) and 1 a typical member (median among the cells called that type); a cell
       is ``Unknown`` when this evidence is below ``unknown_threshold`` (0.4) or its score is less than 1.5 robust
       SDs above the background: cells of types missing from the reference. The confidence is the calibrated
       probability that the call is right (:func:`~spatialmultiomics.annotate._score.calibrated_confidence`).

``'paper'``
    The seed's rule, exactly: factors named by top-feature overlap
    (:func:`~spatialmultiomics.annotate._score.paper_factor_scores`), each cell takes the type of its dominant
    factor, confidence = that factor's share of the cell's loadings.

``'factors'``
    Step 1 of ``'auto'``, then each cell takes the type whose named factors carry most of its loadings
    (confidence = that share among named factors).

``'markers'``
    Per-cell marker evidence on the observed profiles only (no factorization needed), with the calls of step 3.

Measured with :func:`~spatialmultiomics.factorize.joint_nmf` (defaults) on the built-in data and their own markers
(``benchmarks/bench_real_data.py``, ``docs/markers.md``, ``docs/real_data.md``):

- ``paper_benchmark``, 20 seeds, k = 4: accuracy >= 0.99 on every seed for 'auto' (mean 0.996; 0.4 % of the
  cells Unknown) and for 'paper' (mean 0.997).
- ``synthetic_tissue`` (5,000 cells, 12 types, 5 of them at 2.5-3 %), seeds 0-2: 'auto' macro-F1 0.973-0.982 at
  k = 12 and 0.975-0.986 at k = 24, every type predicted (lowest per-type F1 0.87-0.93: Tregs or dendritic
  cells); 'paper' 0.71-0.81 at k = 12 (dendritic cells never predicted) and 0.82-0.93 at k = 24; 'factors'
  0.70-0.81 / 0.87-0.95; 'markers' 0.980-0.984. With k chosen by
  :func:`~spatialmultiomics.factorize.select_n_factors` (8-15): macro-F1 0.973-0.982, rare types >= 0.868.
- Averaging counts with their reconstruction lifts gene-only scoring from 0.89-0.90 to 0.96-0.99 macro-F1
  (k = 12-24). With fewer factors than types (k = 6-12), averaging intensities too (``denoise='all'``) gives
  0.85-0.88 as lowest rare-type F1, against 0.87-0.91 with the default, which leaves them as measured until every
  type is named by a factor.
- Types removed from the marker set (k = 12): NK + plasma cells -> 97-98 % Unknown, < 0.1 % of the other cells;
  a removed type sharing markers with types still in the set is partly taken by them (B cells: 15-18 % Unknown).
- Real data: CyCIF exemplar (protein only, 9 markers) agrees with scimap's gating on 0.839 of 11,201 cells with a
  panel reference; ECCITE-seq PBMCs: factors recover T, B, NK cells and monocytes in both modalities.
- Confidence: expected calibration error 0.0023 on held-out synthetic seeds (0.012 with protein markers only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_in_range, check_option
from spatialmultiomics.annotate._by_cluster import annotate_by_cluster
from spatialmultiomics.annotate._markers import MarkerSet, load_markers, match_markers
from spatialmultiomics.annotate._score import (
    DEFAULT_N_TOP,
    DEFAULT_WEIGHTS,
    UNKNOWN,
    call_types,
    cell_marker_scores,
    factor_marker_enrichment,
    paper_factor_scores,
    resolve_weights,
    scale_columns,
    top_features,
)
from spatialmultiomics.pp import modality_kind

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["METHODS", "AnnotationResult", "annotate", "factor_table"]

METHODS = ("cluster", "auto", "paper", "factors", "markers")
#: minimum marker enrichment for a factor to be named (methods 'auto' and 'factors')
ENRICHMENT_THRESHOLD = 0.1
#: a type is used by 'auto'/'factors'/'markers' only if at least this fraction of its markers (in the modalities
#: of the data) is found among the features; types of a broad reference that the panel cannot see are dropped
MIN_MARKER_FRACTION = 1.0 / 3.0
_ARCSINH_COFACTOR = 5.0


@dataclass(frozen=True, eq=False)
class AnnotationResult:
    """Result of :func:`annotate` with ``inplace=False``.

    Attributes
    ----------
    cell_type
        Categorical Series indexed by ``obs_names``: the type of each cell, or ``'Unknown'``.
    confidence
        float32 array (n_cells,) in [0, 1].
    factor
        int64 array (n_cells,): index of each cell's dominant factor (-1 without factors or loadings).
    factor_table
        One row per factor: ``factor``, ``cell_type``, ``score``, ``paper_cell_type``, ``paper_score``,
        ``n_cells`` (cells whose dominant factor it is), ``top_genes``, ``top_proteins`` (comma-separated).
    cell_scores
        Per-cell, per-type scores used for the call (n_cells x n_types DataFrame): normalised marker evidence
        for 'auto' and 'markers', loading shares for 'paper' and 'factors'.
    params
        The arguments used, the types used and dropped, the package version.
    embedding
        Method 'cluster': the clustering embedding as fitted (``'order'``, ``'n_pcs'``, and per modality under
        ``'blocks'`` the ``'features'`` used, ``'shift'``, ``'scale'`` and for reduced blocks ``'components'``), so
        further cells can be embedded the same way (:func:`~spatialmultiomics.annotate.annotate_chunked` reuses
        it); empty for the other methods.
    """

    cell_type: pd.Series
    confidence: np.ndarray
    factor: np.ndarray
    factor_table: pd.DataFrame
    cell_scores: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spatialmultiomics")
    except PackageNotFoundError:
        return "unknown"


def _get_factors(mdata: MuData, *, required: bool) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Cell loadings ``W`` (n_obs, k) and ``{mod: H_mod.T}`` from the conventional slots."""
    if Keys.NMF not in mdata.obsm:
        if required:
            msg = (
                f"mdata.obsm[{Keys.NMF!r}] (cell loadings) is missing; run smo.factorize.joint_nmf(mdata) first, "
                "or use method='markers'."
            )
            raise InputError(msg)
        return None, {}
    W = np.asarray(mdata.obsm[Keys.NMF], dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != mdata.n_obs:
        msg = f"mdata.obsm[{Keys.NMF!r}] must have shape (n_obs={mdata.n_obs}, k), got {W.shape}."
        raise InputError(msg)
    if not np.all(np.isfinite(W)) or (W.size and W.min() < 0):
        msg = f"mdata.obsm[{Keys.NMF!r}] must be finite and non-negative (NMF cell loadings)."
        raise InputError(msg)
    loadings: dict[str, np.ndarray] = {}
    for name, adata in mdata.mod.items():
        if Keys.NMF_LOADINGS in adata.varm:
            L = np.asarray(adata.varm[Keys.NMF_LOADINGS], dtype=np.float64)
            if L.ndim != 2 or L.shape != (adata.n_vars, W.shape[1]):
                msg = (
                    f"mdata[{name!r}].varm[{Keys.NMF_LOADINGS!r}] must have shape (n_vars={adata.n_vars}, "
                    f"k={W.shape[1]}), got {L.shape}."
                )
                raise InputError(msg)
            loadings[name] = np.nan_to_num(L, nan=0.0)
    if required and not loadings:
        msg = (
            f"no modality has varm[{Keys.NMF_LOADINGS!r}] (feature loadings); run smo.factorize.joint_nmf(mdata) first."
        )
        raise InputError(msg)
    return W, loadings


def _rows_aligned(mdata: MuData, name: str) -> AnnData:
    adata = mdata.mod[name]
    if not adata.obs_names.equals(mdata.obs_names):
        msg = (
            f"modality {name!r} does not have the same cells in the same order as the MuData; align the "
            "modalities first (smo.align)."
        )
        raise InputError(msg)
    return adata


def _observed_columns(mdata: MuData, name: str, cols: np.ndarray) -> np.ndarray:
    """Observed values of the features ``cols`` of modality ``name``, (n_obs, len(cols)) float32.

    ``layers['preprocessed']`` when present; otherwise counts are scaled to 1e4 per cell and log1p-transformed,
    intensities arcsinh-transformed (cofactor 5).
    """
    adata = _rows_aligned(mdata, name)
    if Keys.PREPROCESSED in adata.layers:
        X = adata.layers[Keys.PREPROCESSED]
        sub = X[:, cols]
        return np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float32)
    X = adata.X
    sub = X[:, cols]
    sub = np.asarray(sub.toarray() if sp.issparse(sub) else sub, dtype=np.float32)
    if modality_kind(mdata, name) == "counts":
        lib = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        scale = np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0).astype(np.float32)
        return np.log1p(np.maximum(sub, 0) * scale[:, None])
    return np.arcsinh(np.maximum(sub, 0) / np.float32(_ARCSINH_COFACTOR))


def _select_types(
    marker_set: MarkerSet, index: dict[str, dict[str, np.ndarray]], mods: list[str], *, min_fraction: float = -1.0
) -> tuple[list[str], list[str]]:
    """Types with enough of their markers found in the data, and the dropped ones.

    ``min_fraction``: share of the listed markers that must be found (default :data:`MIN_MARKER_FRACTION`); 0:
    one marker is enough.
    """
    fraction = MIN_MARKER_FRACTION if min_fraction < 0 else min_fraction
    kept, dropped = [], []
    for t in marker_set.types:
        listed = sum(len(marker_set.get(t, m)) for m in mods)
        found = sum(index[t][m].size for m in mods)
        if found > 0 and found >= max(1, math.ceil(fraction * listed)):
            kept.append(t)
        else:
            dropped.append(t)
    return kept, dropped


def _marker_columns(
    index: dict[str, dict[str, np.ndarray]], types: list[str], mods: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Union of marker features per modality, and each type's columns into that union."""
    cols = {}
    for m in mods:
        parts = [index[t][m] for t in types if index[t][m].size]
        cols[m] = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
    pos = {m: {int(j): i for i, j in enumerate(cols[m])} for m in mods}
    columns = {t: {m: np.array([pos[m][int(j)] for j in index[t][m]], dtype=np.int64) for m in mods} for t in types}
    return cols, columns


def _usable_types(
    marker_set: MarkerSet,
    tree_set: MarkerSet,
    index: dict[str, dict[str, np.ndarray]],
    own: dict[str, dict[str, np.ndarray]],
    data_mods: list[str],
    method: str,
) -> tuple[list[str], list[str]]:
    """The flattened types a method scores, and the dropped ones (all types for 'paper', the seed's rule)."""
    if method == "paper":
        return list(marker_set.types), []
    types, dropped = _select_types(marker_set, index, data_mods)
    if tree_set.hierarchical:
        # a flattened type needs one of its own markers: CD45 inherited from 'Immune cells' does not make a
        # panel without CD3 or CD4 able to see CD4 T cells
        blind = [t for t in types if t in own and not any(own[t][m].size for m in data_mods)]
        types = [t for t in types if t not in blind]
        dropped = [t for t in marker_set.types if t not in types]
    return types, dropped


def _name_factors(
    loadings: dict[str, np.ndarray],
    feature_names: dict[str, list[str]],
    marker_set: MarkerSet,
    data_mods: list[str],
    sub_index: dict[str, dict[str, np.ndarray]],
    types: list[str],
    factor_mass: np.ndarray,
    *,
    method: str,
    n_top: Mapping[str, int] | None,
    weights: Mapping[str, float] | None,
) -> tuple[Any, list[str], np.ndarray]:
    """The seed's factor scores, and each factor's name and score for ``method`` (the enrichment of its loadings
    in each type's markers, weighted by the factor's mass ``W.sum(axis=0)``; the seed's rule for 'paper')."""
    mods_l = [m for m in loadings if m in data_mods]
    paper = paper_factor_scores(
        {m: loadings[m] for m in mods_l} or loadings, feature_names, marker_set, n_top=n_top, weights=weights
    )
    if method == "paper":
        return paper, list(paper.labels), paper.best_scores
    E = (
        factor_marker_enrichment({m: loadings[m] for m in mods_l}, sub_index, factor_mass=factor_mass, weights=weights)
        if mods_l
        else np.zeros((factor_mass.size, len(types)))
    )
    labels, _, scores = _factor_names(E, types)
    return paper, labels, scores


def factor_table(
    loadings: Mapping[str, np.ndarray],
    feature_names: Mapping[str, Sequence[str]],
    factor_mass: np.ndarray,
    n_cells: np.ndarray,
    markers: Any = None,
    *,
    extend: bool | str = False,
    method: str = "cluster",
    n_top: Mapping[str, int] | None = None,
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The factor table of :func:`annotate` (``factor_annotation.csv``) from the factors' totals alone.

    For factorizations whose cells are not in memory (the out-of-core pipeline): the names depend on the
    feature loadings and on the cells only through each factor's mass, so the table is the one :func:`annotate`
    writes for the same factors, without the cells.

    Parameters
    ----------
    loadings
        ``{modality: (n_features, k)}`` feature loadings, as each modality's ``varm['nmf_loadings']``.
    feature_names
        ``{modality: names}`` of every modality of the data, in the data's order (the markers are matched here).
    factor_mass
        ``W.sum(axis=0)`` over all cells (k,).
    n_cells
        Cells whose dominant factor each factor is (k,): ``np.bincount`` of ``obs['nmf_factor']`` without the -1.
    markers, extend, method, n_top, weights
        As in :func:`annotate`.

    Returns
    -------
    DataFrame: ``factor``, ``cell_type``, ``score``, ``paper_cell_type``, ``paper_score``, ``n_cells``,
    ``top_genes``, ``top_proteins``, as :attr:`AnnotationResult.factor_table`.

    Examples
    --------
    >>> import numpy as np
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.paper_benchmark(seed=0)
    >>> smo.pp.preprocess(mdata)
    >>> smo.factorize.joint_nmf(mdata, n_components=4)
    >>> W = np.asarray(mdata.obsm["X_nmf"])
    >>> table = smo.annotate.factor_table(
    ...     {m: mdata[m].varm["nmf_loadings"] for m in mdata.mod},
    ...     {m: mdata[m].var_names for m in mdata.mod},
    ...     W.sum(axis=0),
    ...     np.bincount(W.argmax(axis=1), minlength=4),
    ...     mdata.uns["markers"],
    ...     method="auto",
    ... )
    >>> sorted(table["cell_type"])
    ['Epithelial', 'Fibroblasts', 'Macrophages', 'T cells']
    """
    method = check_option(method, METHODS, name="method")
    names = {m: [str(v) for v in feature_names[m]] for m in feature_names}
    loadings = {m: np.nan_to_num(np.asarray(L, dtype=np.float64), nan=0.0) for m, L in loadings.items()}
    factor_mass = np.asarray(factor_mass, dtype=np.float64)
    n_cells = np.asarray(n_cells, dtype=np.int64)
    for m, L in loadings.items():
        if m not in names or L.ndim != 2 or L.shape != (len(names[m]), factor_mass.size):
            msg = (
                f"loadings[{m!r}] must be (n_features, k) = ({len(names.get(m, []))}, {factor_mass.size}) "
                f"with feature_names[{m!r}], got shape {L.shape}."
            )
            raise InputError(msg)
    if n_cells.shape != factor_mass.shape:
        msg = f"n_cells must hold one count per factor ({factor_mass.size}), got shape {n_cells.shape}."
        raise InputError(msg)
    tree_set, marker_set, data_mods, index, own = _marker_index(markers, extend, names, method)
    types, _ = _usable_types(marker_set, tree_set, index, own, data_mods, method)
    top_n = resolve_weights(list(loadings), n_top, DEFAULT_N_TOP, name="n_top")
    paper, labels, scores = _name_factors(
        loadings,
        names,
        marker_set,
        data_mods,
        {t: index[t] for t in types},
        types,
        factor_mass,
        method=method,
        n_top=n_top,
        weights=weights,
    )
    return _factor_table(n_cells, loadings, names, labels, scores, paper, top_n)


def _marker_index(
    markers: Any, extend: bool | str, feature_names: dict[str, list[str]], method: str
) -> tuple[MarkerSet, MarkerSet, list[str], dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """The reference (as given and flattened), the modalities it names in the data, and where each type's markers
    (flattened, and its own) are among the features; errors when nothing matches."""
    tree_set = load_markers(markers, extend=extend, extra_modalities=list(feature_names))
    # the flat methods score leaf types with their ancestors' markers; 'cluster' walks the hierarchy
    marker_set = tree_set.flat()
    data_mods = [m for m in feature_names if m in marker_set.modalities]
    if not data_mods:
        msg = (
            f"markers ({marker_set.name}) name modalities {marker_set.modalities}, none of which is in the data "
            f"({list(feature_names)})."
        )
        raise InputError(msg)
    index = match_markers(marker_set, {m: feature_names[m] for m in data_mods})
    if not any(index[t][m].size for t in marker_set.types for m in data_mods):
        msg = f"no marker of {marker_set.name} matches a feature of the data (modalities {data_mods})."
        raise InputError(msg)
    # each type's own markers (before flattening) found in the data
    own = (
        match_markers(tree_set, {m: feature_names[m] for m in data_mods})
        if tree_set.hierarchical or method == "cluster"
        else index
    )
    return tree_set, marker_set, data_mods, index, own


def _factor_names(enrichment: np.ndarray, types: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Label (or Unknown), best type index and score of each factor from its enrichment row."""
    k = enrichment.shape[0]
    if enrichment.size == 0:
        return [UNKNOWN] * k, np.full(k, -1), np.zeros(k)
    best = enrichment.argmax(axis=1)
    score = enrichment[np.arange(k), best]
    named = score >= ENRICHMENT_THRESHOLD
    labels = [types[int(b)] if ok else UNKNOWN for b, ok in zip(best, named, strict=True)]
    return labels, np.where(named, best, -1), score


def _dominant(W: np.ndarray) -> np.ndarray:
    """Dominant factor of each cell (first on ties), -1 for cells whose loadings are all zero."""
    dom = W.argmax(axis=1).astype(np.int64)
    dom[W.sum(axis=1) <= 0] = -1
    return dom


def _factor_table(
    n_cells: np.ndarray | None,
    loadings: dict[str, np.ndarray],
    feature_names: dict[str, list[str]],
    labels: list[str],
    scores: np.ndarray,
    paper: Any,
    n_top: dict[str, int],
) -> pd.DataFrame:
    """The factor table; ``n_cells``: the cells whose dominant factor each factor is (None: no factors)."""
    if n_cells is None:
        return pd.DataFrame(columns=["factor", "cell_type", "score", "n_cells"])
    k = n_cells.size
    table: dict[str, Any] = {
        "factor": np.arange(k),
        "cell_type": labels,
        "score": np.round(np.asarray(scores, dtype=np.float64), 6),
        "paper_cell_type": paper.labels,
        "paper_score": np.round(paper.best_scores, 6),
        "n_cells": np.asarray(n_cells, dtype=np.int64),
    }
    for m, L in loadings.items():
        key = {Keys.RNA: "top_genes", Keys.PROTEIN: "top_proteins"}.get(m, f"top_{m}")
        top = top_features(L, n_top.get(m, DEFAULT_N_TOP.get(m, 10)))
        table[key] = [", ".join(feature_names[m][j] for j in t) for t in top]
    return pd.DataFrame(table)


def _calls_from_factors(
    W: np.ndarray, factor_labels: list[str], *, paper: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Cell calls from named factors: the dominant factor's label ('paper') or the type with most loading.

    Returns calls (object array), confidence, per-type loading shares (n_cells, n_types) and the types.
    """
    n = W.shape[0]
    types = [t for t in dict.fromkeys(factor_labels) if t != UNKNOWN]
    shares = np.zeros((n, len(types)))
    for f, lab in enumerate(factor_labels):
        if lab != UNKNOWN:
            shares[:, types.index(lab)] += W[:, f]
    total = W.sum(axis=1)
    frac = np.divide(shares, total[:, None], out=np.zeros_like(shares), where=total[:, None] > 0)
    if paper:
        dom = _dominant(W)
        calls = np.array([*factor_labels, UNKNOWN], dtype=object)[dom]  # dom == -1 picks the trailing Unknown
        conf = np.divide(W[np.arange(n), np.maximum(dom, 0)], total, out=np.zeros(n), where=total > 0)
        return calls, conf, frac, types
    named_total = shares.sum(axis=1)
    ok = named_total > 0
    best = shares.argmax(axis=1) if types else np.zeros(n, dtype=np.int64)
    calls = np.array([*types, UNKNOWN], dtype=object)[np.where(ok, best, len(types))]
    top = shares[np.arange(n), best] if types else np.zeros(n)
    conf = np.divide(top, named_total, out=np.zeros(n), where=ok)
    return calls, conf, frac, types


_COLUMN_BLOCK = 16  # marker columns scaled at a time in _marker_scores


def _marker_scores(
    mdata: MuData,
    index: dict[str, dict[str, np.ndarray]],
    types: list[str],
    mods: list[str],
    weights: Mapping[str, float] | None,
    W_named: np.ndarray | None,
    loadings: dict[str, np.ndarray],
    denoise: str = "auto",
    factor_labels: list[str] | None = None,
) -> np.ndarray:
    """Per-cell marker scores (n_cells, n_types) from the observed marker profiles.

    In the modalities chosen by ``denoise`` each scaled marker column is averaged with the same column
    reconstructed from the named factors (``W_named @ H``): ``'counts'``: sequencing modalities; ``'all'``;
    ``'none'``; ``'auto'``: sequencing modalities, and the others too when every type is named by a factor.
    """
    w_mod = resolve_weights(mods, weights, DEFAULT_WEIGHTS, name="weights")
    cols, columns = _marker_columns(index, types, mods)
    use = [m for m in mods if cols[m].size]
    covered = denoise == "auto" and set(types) <= set(factor_labels or ())
    W32 = None if W_named is None else np.asarray(W_named, dtype=np.float32)
    profiles = {}
    for m in use:
        denoised = (
            W32 is not None
            and denoise != "none"
            and m in loadings
            and (denoise == "all" or covered or modality_kind(mdata, m) == "counts")
        )
        # a few marker columns at a time: at a million cells every (cells x markers) temporary costs gigabytes
        P = np.empty((mdata.n_obs, cols[m].size), dtype=np.float32)
        for a in range(0, cols[m].size, _COLUMN_BLOCK):
            block = cols[m][a : a + _COLUMN_BLOCK]
            P[:, a : a + block.size] = scale_columns(_observed_columns(mdata, m, block))
            if denoised:
                recon = scale_columns(W32 @ np.asarray(loadings[m][block, :], dtype=np.float32).T)
                P[:, a : a + block.size] += recon
                P[:, a : a + block.size] *= 0.5
        profiles[m] = P
    return cell_marker_scores(profiles, columns, weights={m: w_mod[m] for m in use})


def annotate(
    mdata: MuData,
    *,
    markers: MarkerSet | Mapping[str, Any] | str | Sequence[Any] | None = None,
    extend: bool | str = False,
    method: str = "cluster",
    n_top: Mapping[str, int] | None = None,
    weights: Mapping[str, float] | None = None,
    unknown_threshold: float = 0.4,
    denoise: str = "auto",
    resolution: float | str = "auto",
    n_neighbors: int = 15,
    override: bool = True,
    seed: int = 0,
    inplace: bool = True,
) -> AnnotationResult | None:
    """Name the NMF factors after cell types and give every cell a type and a confidence.

    Parameters
    ----------
    mdata
        MuData with ``obsm['X_nmf']`` (cell loadings W, n_obs x k) and ``varm['nmf_loadings']`` (H_b.T) in its
        modalities, as written by :func:`spatialmultiomics.factorize.joint_nmf` (not needed for
        ``method='markers'``), and all modalities on the same cells.
    markers
        Marker reference: None (built-in ``'immune_tme'``), a reference name (``'immune_tme'``, ``'lymphoid'``),
        a :class:`MarkerSet`, a dict ``{type: {"genes": [...], "proteins": [...]}}``, a JSON / YAML / CSV file,
        or a list of these (merged in order; a later definition of a type replaces an earlier one).
    extend
        False: ``markers`` replace the built-in reference. True: they extend the built-in ``'immune_tme'``
        reference (a reference name: that reference); types defined in both take the user's markers.
    method
        ``'cluster'`` (default: cluster the cells, name every cluster from its markers through the reference's
        lineage hierarchy, override cells whose own markers strongly contradict their cluster; see
        :mod:`spatialmultiomics.annotate._by_cluster`), ``'auto'`` (factor enrichment + per-cell marker evidence,
        see the module notes), ``'paper'`` (the seed's rule exactly), ``'factors'`` or ``'markers'``.
    n_top
        ``{mod: n}`` top features per factor for the seed's rule and the factor table; default
        ``{'rna': 10, 'protein': 5}``.
    weights
        ``{mod: weight}`` of each modality in the scores; default ``{'rna': 1.0, 'protein': 1.5}``.
    unknown_threshold
        Methods 'auto' and 'markers': a cell is ``'Unknown'`` when its rescaled marker evidence for its best type
        (0 = the type's background, 1 = a typical member) is below this, or when its score is less than 1.5 robust
        SDs above the type's background. 0 turns Unknown calls off.
    denoise
        Method 'auto': the modalities whose marker values are averaged with their reconstruction from the named
        factors before scoring. ``'auto'`` (default): sequencing modalities always (single-cell counts are sparse;
        the reconstruction fills in their zeros), intensity modalities (proteins) only when every type in use is
        named by at least one factor: otherwise a type without a factor of its own would get its markers smeared
        over its neighbours (see the measurements in the module notes). ``'counts'``, ``'all'``, ``'none'``: the
        sequencing modalities, every modality, none.
    resolution
        Method 'cluster': the Leiden resolution, or ``'auto'`` (the finest of 0.1-2 at which clusters of at least
        30 cells hold 95 % of the cells).
    n_neighbors
        Method 'cluster': neighbours per cell in the clustering graph.
    override
        Method 'cluster': let a cell whose own intensity markers make it another type (evidence >= 0.8, <= 0.2 for
        its cluster's type, and a type that names some cluster) take that type.
    seed
        Method 'cluster': seed of the sampling, PCA and Leiden.
    inplace
        True: write the result into ``mdata`` and return None; False: return an :class:`AnnotationResult`.

    Returns
    -------
    None with ``inplace=True``, after writing

    - ``mdata.obs['cell_type']``: categorical type per cell (``'Unknown'`` allowed);
    - ``mdata.obs['cell_type_confidence']``: float in [0, 1];
    - ``mdata.obs['nmf_factor']``: dominant factor of each cell (-1 when none);
    - method 'cluster': ``mdata.obs['annotation_cluster']`` (the cluster of each cell) and
      ``obs['cell_type_overridden']`` (True where the cell's own markers overrode its cluster's name), and the
      cluster table (size, name, evidence, marker positivity) under ``'clusters'`` of the annotation record, and
      the fitted clustering embedding (arrays; see :attr:`AnnotationResult.embedding`) under ``'embedding'``;
    - ``mdata.uns['nmf']['annotation']`` (``uns['annotation']`` when ``uns['nmf']`` is absent): the factor
      table as a dict of lists plus ``'params'``.

    An :class:`AnnotationResult` with ``inplace=False``.

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.paper_benchmark(seed=0)
    >>> smo.pp.preprocess(mdata)
    >>> smo.factorize.joint_nmf(mdata, n_components=4)
    >>> smo.annotate.annotate(mdata, markers=mdata.uns["markers"])
    >>> called, truth = mdata.obs["cell_type"].astype(str), mdata.obs["true_cell_type"].astype(str)
    >>> bool((called == truth).mean() > 0.95)
    True
    """
    method = check_option(method, METHODS, name="method")
    denoise = check_option(denoise, ("auto", "counts", "all", "none"), name="denoise")
    unknown_threshold = check_in_range(unknown_threshold, name="unknown_threshold", low=0.0, high=10.0)
    W, loadings = _get_factors(mdata, required=method not in ("markers", "cluster"))
    feature_names = {m: [str(v) for v in mdata.mod[m].var_names] for m in mdata.mod}
    tree_set, marker_set, data_mods, index, own = _marker_index(markers, extend, feature_names, method)
    top_n = resolve_weights(list(loadings), n_top, DEFAULT_N_TOP, name="n_top")
    weights_used = resolve_weights(data_mods, weights, DEFAULT_WEIGHTS, name="weights")
    types, dropped = _usable_types(marker_set, tree_set, index, own, data_mods, method)
    if dropped and method not in ("cluster", "paper"):  # the cluster method gates through the hierarchy: below
        logger.info("annotate: types with too few markers in the data are not used: %s", dropped)
    sub_index = {t: index[t] for t in types}
    clustered = None
    if method == "cluster":
        # one lineage marker is evidence enough in a hierarchy: a panel with CD19 but no CD20 still has B cells
        tree_types, _ = _select_types(tree_set, own, data_mods, min_fraction=0.0)
        # a lineage level the panel cannot see (T cells without CD3) stays as a pass-through node of the hierarchy,
        # so its subtypes are still gated through their ancestors (CD4 T cells through CD45)
        kept = set(tree_types)
        for t in list(tree_types):
            kept.update(tree_set.ancestors(t))
        tree_types = [t for t in tree_set.types if t in kept]
        tree_dropped = [t for t in tree_set.types if t not in kept]
        if tree_dropped:
            logger.info("annotate: types none of whose markers are in the data are not used: %s", tree_dropped)
        if not tree_types:
            msg = f"no type of {tree_set.name} has enough markers among the features of {data_mods}."
            raise InputError(msg)
        clustered = annotate_by_cluster(
            mdata,
            tree_set,
            tree_types,
            data_mods,
            weights=weights,
            resolution=resolution,
            n_neighbors=n_neighbors,
            override=override,
            seed=seed,
        )

    # 1. factor names
    paper = None
    factor_labels: list[str] = []
    factor_scores = np.zeros(0)
    if W is not None:
        paper, factor_labels, factor_scores = _name_factors(
            loadings,
            feature_names,
            marker_set,
            data_mods,
            sub_index,
            types,
            W.sum(axis=0),
            method=method,
            n_top=n_top,
            weights=weights,
        )
    dom = _dominant(W) if W is not None else np.full(mdata.n_obs, -1, dtype=np.int64)

    # 2. cell calls
    if clustered is not None:
        calls, conf, cell_scores, score_types = (
            clustered.calls,
            clustered.confidence,
            clustered.scores,
            clustered.types,
        )
        dropped = tree_dropped
    elif method in ("paper", "factors"):
        calls, conf, cell_scores, score_types = _calls_from_factors(W, factor_labels, paper=method == "paper")
    else:
        W_named = None
        if method == "auto":
            named = np.array([lab != UNKNOWN for lab in factor_labels], dtype=bool)
            W_named = W * named[None, :] if named.any() else W
        S = _marker_scores(
            mdata, sub_index, types, data_mods, weights, W_named, loadings, denoise=denoise, factor_labels=factor_labels
        )
        codes, conf, cell_scores = call_types(S, unknown_threshold=unknown_threshold)
        calls = np.array([*types, UNKNOWN], dtype=object)[np.where(codes >= 0, codes, len(types))]
        score_types = types

    called = set(calls.tolist())
    present = [t for t in score_types if t in called] + ([UNKNOWN] if UNKNOWN in called else [])
    cell_type = pd.Series(pd.Categorical(calls, categories=present), index=mdata.obs_names, name=Keys.CELL_TYPE)
    confidence = np.clip(np.asarray(conf, dtype=np.float32), 0.0, 1.0)
    params = {
        "method": method,
        "markers": marker_set.name,
        "types_used": list(score_types),
        "types_dropped": dropped,
        "n_top": {m: int(v) for m, v in top_n.items()},
        "weights": weights_used,
        "unknown_threshold": unknown_threshold,
        "denoise": denoise,
        "enrichment_threshold": ENRICHMENT_THRESHOLD,
        "version": _version(),
    }
    if clustered is not None:
        params["clustering"] = clustered.params
    n_cells = None if W is None else np.bincount(dom[dom >= 0], minlength=W.shape[1])
    table = _factor_table(n_cells, loadings, feature_names, factor_labels, factor_scores, paper, top_n)
    result = AnnotationResult(
        cell_type=cell_type,
        confidence=confidence,
        factor=dom,
        factor_table=table,
        cell_scores=pd.DataFrame(cell_scores, index=mdata.obs_names, columns=score_types),
        params=params,
        embedding=clustered.embedding if clustered is not None else {},
    )
    if not inplace:
        return result
    mdata.obs[Keys.CELL_TYPE] = cell_type.values
    mdata.obs[Keys.CELL_TYPE_CONFIDENCE] = confidence
    mdata.obs[Keys.FACTOR] = dom
    if clustered is not None:
        mdata.obs[Keys.CLUSTER] = pd.Categorical(clustered.clusters.astype(str))
        mdata.obs[Keys.OVERRIDDEN] = clustered.overridden
    stored: dict[str, Any] = {col: table[col].tolist() for col in table.columns}
    stored["params"] = params
    if clustered is not None:
        stored["clusters"] = {col: clustered.cluster_table[col].tolist() for col in clustered.cluster_table.columns}
        stored["embedding"] = clustered.embedding
    if isinstance(mdata.uns.get(Keys.NMF_UNS), Mapping):
        mdata.uns[Keys.NMF_UNS]["annotation"] = stored
    else:
        mdata.uns["annotation"] = stored
    logger.info(
        "annotate (%s): %d cells, %d types, %d Unknown; factors named %s",
        method,
        mdata.n_obs,
        len(present) - (UNKNOWN in called),
        int((calls == UNKNOWN).sum()),
        factor_labels,
    )
    return None
