"""Cells without a partner: typed from the modalities they were measured in, by the fully measured cells alike.

When the alignment finds no partner for a reference cell in another modality (a cell missing from the protein
section, a jittered neighbour nobody matched), it imputes that modality's profile from alike cells so the joint
factorization can run on one table (``obs['<mod>_status'] == 'imputed'``). Typing such a cell on an averaged profile
is worse than typing it on what was measured: on the synthetic tissue with 10 % of the protein cells missing, 90.2 %
of the imputed cells got their true type from the joint typing, 92.2 % from an RNA-only run, against 99.1 % of the
matched cells.

:func:`type_unpaired` keeps the joint model and changes only what the cell is compared on: every cell is projected
into the joint factor space from its measured modalities alone (:func:`smo.factorize.project`: non-negative least
squares with the joint loadings of those modalities held fixed), and each cell with an imputed modality takes the
majority type of its ``n_neighbors`` most alike fully measured cells there (cosine similarity of the projected
loadings). The fully measured cells carry the protein-resolved types, and the joint RNA loadings know which genes go
with them, so the vote resolves what RNA clustering alone cannot (e.g. CD4 vs CD8 vs regulatory T cells): 97.2 % of
the imputed cells right on the same tissue (k = 15).

No logging beyond one summary line, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._random import check_random_state
from spatialmultiomics._validate import check_positive_int
from spatialmultiomics.annotate._score import UNKNOWN

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["annotate_measured", "type_unpaired"]

_IMPUTED = "imputed"


def _unit_rows(W: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(W, axis=1, keepdims=True)
    return np.divide(W, norm, out=np.zeros_like(W, dtype=np.float64), where=norm > 0)


def _vote(labels: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority label of each row of ``neighbours`` (indices into ``labels``, nearest first) and its share; a tie goes
    to the tied label met first (the nearest)."""
    codes, uniques = pd.factorize(labels)
    nb = codes[neighbours]  # (n, k)
    counts = np.zeros((nb.shape[0], uniques.size), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(nb.shape[0]), nb.shape[1]), nb.ravel()), 1)
    best = counts.max(axis=1)
    tied = counts[np.arange(nb.shape[0])[:, None], nb] == best[:, None]  # (n, k): neighbour's label is a winner
    first = nb[np.arange(nb.shape[0]), tied.argmax(axis=1)]
    return np.asarray(uniques)[first], best / nb.shape[1]


def _not_own(obs: pd.DataFrame, modality: str, min_confidence: float) -> np.ndarray:
    """Cells whose profile in ``modality`` is more likely not their own: imputed, or matched with a pair confidence
    below ``min_confidence``."""
    status = obs[f"{modality}_status"].astype(str).to_numpy()
    out = status == _IMPUTED
    col = f"{modality}_match_confidence"
    if col in obs.columns and min_confidence > 0:
        conf = np.asarray(obs[col], dtype=np.float64)
        out |= (status == "matched") & (conf < min_confidence)
    return out


def type_unpaired(
    mdata: MuData,
    *,
    min_confidence: float = 0.5,
    n_neighbors: int = 15,
    max_reference: int = 50_000,
    seed: Any = 0,
    n_jobs: int = 1,
) -> dict[str, Any] | None:
    """Type the cells whose profile in some modality was imputed, from the modalities they were measured in.

    Parameters
    ----------
    mdata
        A MuData after :func:`smo.factorize.joint_nmf` and :func:`annotate`, with the alignment's
        ``obs['<mod>_status']`` columns (:func:`smo.align.align`). Nothing happens when no cell has an imputed
        modality.
    n_neighbors
        Fully measured cells that vote for each cell (15: the size of the neighbourhood the annotation smooths
        over; 5-30 gave 0.966-0.978 of the imputed cells right on the synthetic tissue).
    max_reference
        Fully measured cells that may vote at most (a seeded sample above this; the projection costs a few
        factorization iterations on these rows).
    seed
        Seed of that sample.
    n_jobs
        Threads of the projection.

    Returns
    -------
    None when nothing was imputed; else a summary (also stored in ``mdata.uns['nmf']['annotation']['unpaired']``):
    cells retyped per group of imputed modalities, how many changed type, the mean vote share. Writes
    ``obs['cell_type']`` and ``obs['cell_type_confidence']`` (the vote share) of those cells and
    ``obs['cell_type_from']`` (the modalities each cell's type was read from: ``'joint'`` for fully measured
    cells).

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.synthetic_tissue(n_cells=600, seed=0)
    >>> mdata.obs["protein_status"] = ["imputed" if i % 10 == 0 else "id" for i in range(mdata.n_obs)]
    >>> smo.pp.preprocess(mdata)
    >>> smo.factorize.joint_nmf(mdata, n_components=8, seed=0)
    >>> smo.annotate.annotate(mdata, markers=mdata.uns["markers"], seed=0)
    >>> summary = smo.annotate.type_unpaired(mdata)
    >>> summary["n_cells"], mdata.obs["cell_type_from"].value_counts().to_dict()
    (60, {'joint': 540, 'rna': 60})
    """
    from scipy.spatial import cKDTree

    from spatialmultiomics.factorize import project

    n_neighbors = check_positive_int(n_neighbors, name="n_neighbors")
    max_reference = check_positive_int(max_reference, name="max_reference")
    info = mdata.uns.get(Keys.NMF_UNS)
    if not isinstance(info, Mapping) or Keys.CELL_TYPE not in mdata.obs:
        return None
    fitted = [str(m) for m in info["modalities"]]
    imputed = {m: _not_own(mdata.obs, m, min_confidence) for m in fitted if f"{m}_status" in mdata.obs.columns}
    imputed = {m: mask for m, mask in imputed.items() if mask.any()}
    if not imputed:
        return None
    names = list(imputed)
    pattern = np.stack([imputed[m] for m in names], axis=1)  # (n, modalities with imputed cells)
    complete = np.flatnonzero(~pattern.any(axis=1))
    source = np.full(mdata.n_obs, "joint", dtype=object)
    if complete.size < max(2 * n_neighbors, 50):
        logger.info("type_unpaired: only %d fully measured cells; imputed cells keep their joint type", complete.size)
        return None
    rng = check_random_state(seed)
    reference = (
        np.sort(rng.choice(complete, max_reference, replace=False)) if complete.size > max_reference else complete
    )
    typed = mdata.obs[Keys.CELL_TYPE]
    had = typed.notna().to_numpy()  # cells that had a type (annotate_measured leaves the others missing)
    labels = typed.astype(object).where(typed.notna(), UNKNOWN).astype(str).to_numpy()
    new_labels = labels.copy()
    confidence = np.asarray(mdata.obs[Keys.CELL_TYPE_CONFIDENCE], dtype=np.float64).copy()
    groups: dict[str, dict[str, Any]] = {}
    k = min(n_neighbors, reference.size)
    for row in np.unique(pattern[pattern.any(axis=1)], axis=0):
        missing = [m for m, gone in zip(names, row, strict=True) if gone]
        measured = [m for m in fitted if m not in missing]
        cells = np.flatnonzero((pattern == row).all(axis=1))
        if not measured:  # nothing measured to compare on
            continue
        E_ref = _unit_rows(project(mdata, measured, cells=reference, n_jobs=n_jobs))
        E_new = _unit_rows(project(mdata, measured, cells=cells, n_jobs=n_jobs))
        _, nb = cKDTree(E_ref).query(E_new, k=k, workers=n_jobs)
        vote, share = _vote(labels[reference], np.asarray(nb).reshape(cells.size, k))
        new_labels[cells] = vote
        confidence[cells] = share
        source[cells] = "+".join(measured)
        groups["+".join(measured)] = {
            "n_cells": int(cells.size),
            "n_changed": int(((vote != labels[cells]) & had[cells]).sum()),
            "mean_vote_share": float(share.mean()) if share.size else float("nan"),
        }
    if not groups:
        return None
    categories = list(mdata.obs[Keys.CELL_TYPE].cat.categories) if hasattr(mdata.obs[Keys.CELL_TYPE], "cat") else []
    categories += [c for c in pd.unique(new_labels) if c not in categories]
    mdata.obs[Keys.CELL_TYPE] = pd.Categorical(new_labels, categories=categories)
    mdata.obs[Keys.CELL_TYPE_CONFIDENCE] = confidence
    mdata.obs[Keys.CELL_TYPE_FROM] = pd.Categorical(source.astype(str))
    summary = {
        "n_cells": int(sum(g["n_cells"] for g in groups.values())),
        "n_changed": int(sum(g["n_changed"] for g in groups.values())),
        "n_reference": int(reference.size),
        "n_neighbors": int(k),
        "groups": groups,
    }
    annotation = info.get("annotation")
    if isinstance(annotation, dict):
        annotation["unpaired"] = summary
    logger.info(
        "type_unpaired: %d cells with an imputed modality typed from their measured ones by %d of %d fully measured "
        "cells (%d changed type)",
        summary["n_cells"],
        k,
        reference.size,
        summary["n_changed"],
    )
    return summary


def _measured_part(mdata: MuData, rows: np.ndarray) -> MuData:
    """The rows ``rows`` of ``mdata`` with only what :func:`annotate` reads, for it to annotate.

    Per modality ``layers['preprocessed']`` (``X`` where that layer is missing), ``var``, ``varm['nmf_loadings']``
    and the provenance; ``obsm['X_nmf']`` and a shallow copy of ``uns['nmf']`` (the annotation record is written
    into the copy). At a million cells ``mdata[rows].copy()`` copied every other layer, ``X`` and ``obsm`` too: a
    second copy of most of the data. Modalities whose cells are not those of ``mdata`` in the same order are
    copied whole (``annotate`` then reports them).
    """
    import anndata as ad

    from spatialmultiomics._mudata import make_mudata, mudata_options

    if not all(a.obs_names.equals(mdata.obs_names) for a in mdata.mod.values()):
        with mudata_options():
            return mdata[rows].copy()
    mods = {}
    obs_names = mdata.obs_names[rows]
    for name, adata in mdata.mod.items():
        layer = adata.layers.get(Keys.PREPROCESSED, None)
        part = ad.AnnData(
            X=adata.X[rows] if layer is None else None,
            obs=pd.DataFrame(index=obs_names),
            var=adata.var,
            layers=None if layer is None else {Keys.PREPROCESSED: layer[rows]},
        )
        if Keys.NMF_LOADINGS in adata.varm:
            part.varm[Keys.NMF_LOADINGS] = adata.varm[Keys.NMF_LOADINGS]
        if Keys.PROVENANCE in adata.uns:
            part.uns[Keys.PROVENANCE] = adata.uns[Keys.PROVENANCE]
        mods[name] = part
    sub = make_mudata(mods)
    if Keys.NMF in mdata.obsm:
        sub.obsm[Keys.NMF] = np.asarray(mdata.obsm[Keys.NMF])[rows]
    if isinstance(mdata.uns.get(Keys.NMF_UNS), Mapping):
        sub.uns[Keys.NMF_UNS] = dict(mdata.uns[Keys.NMF_UNS])
    return sub


def annotate_measured(
    mdata: MuData,
    *,
    min_confidence: float = 0.5,
    n_jobs: int = 1,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """:func:`annotate` on the cells whose profiles are all their own, then :func:`type_unpaired` for the others.

    The types are learnt (clusters, their names, per-cell overrides) only from the cells measured in every
    modality (no imputed profile, no pair below ``min_confidence``): on the synthetic tissue with 12° rotation,
    σ = 3 µm jitter and 10 % missing protein cells, clustering every cell let the imputed and doubtful profiles blur
    the protein-defined types (regulatory T cells merged into CD4 T cells); clustering the measured cells and
    voting for the rest brought the joint macro-F1 from 0.960-0.974 to 0.972-0.977 (same frame: 0.984-0.992).
    Without such cells this is :func:`annotate`.

    Parameters
    ----------
    mdata
        As :func:`annotate`, with the alignment's ``obs['<mod>_status']`` columns when there are any.
    min_confidence, n_jobs
        As :func:`type_unpaired`.
    **kwargs
        Passed to :func:`annotate` (``markers``, ``method``, ``seed``, ...; ``inplace`` must stay True).

    Returns
    -------
    What :func:`type_unpaired` returns (None when every cell is fully measured).
    """
    from spatialmultiomics.annotate._assign import annotate

    info = mdata.uns.get(Keys.NMF_UNS)
    fitted = [str(m) for m in info["modalities"]] if isinstance(info, Mapping) else []
    flags = [_not_own(mdata.obs, m, min_confidence) for m in fitted if f"{m}_status" in mdata.obs.columns]
    bad = np.logical_or.reduce(flags) if flags else np.zeros(mdata.n_obs, dtype=bool)
    n_own = int((~bad).sum())
    if not bad.any() or n_own < max(2 * 15, 50):
        annotate(mdata, **kwargs)
        return type_unpaired(mdata, min_confidence=min_confidence, seed=kwargs.get("seed", 0), n_jobs=n_jobs)
    own = np.flatnonzero(~bad)
    sub = _measured_part(mdata, own)
    annotate(sub, **kwargs)
    n = mdata.n_obs
    typed = sub.obs[Keys.CELL_TYPE]
    labels = np.full(n, None, dtype=object)  # missing until type_unpaired votes
    labels[own] = typed.astype(str).to_numpy()
    confidence = np.zeros(n)
    confidence[own] = np.asarray(sub.obs[Keys.CELL_TYPE_CONFIDENCE], dtype=np.float64)
    mdata.obs[Keys.CELL_TYPE] = pd.Categorical(labels, categories=list(typed.cat.categories))
    mdata.obs[Keys.CELL_TYPE_CONFIDENCE] = confidence
    W = np.asarray(mdata.obsm[Keys.NMF]) if Keys.NMF in mdata.obsm else None
    if Keys.FACTOR in sub.obs.columns:
        factor = np.asarray(W.argmax(axis=1)) if W is not None else np.full(n, -1)
        factor[own] = np.asarray(sub.obs[Keys.FACTOR])
        mdata.obs[Keys.FACTOR] = factor
    if Keys.CLUSTER in sub.obs.columns:
        cluster = pd.Series(pd.Categorical([None] * n, categories=sub.obs[Keys.CLUSTER].cat.categories))
        cluster.iloc[own] = sub.obs[Keys.CLUSTER].to_numpy()
        mdata.obs[Keys.CLUSTER] = cluster.to_numpy()
    if Keys.OVERRIDDEN in sub.obs.columns:
        overridden = np.zeros(n, dtype=bool)
        overridden[own] = np.asarray(sub.obs[Keys.OVERRIDDEN], dtype=bool)
        mdata.obs[Keys.OVERRIDDEN] = overridden
    for key in (Keys.NMF_UNS, "annotation"):  # the annotation table and its parameters
        stored = sub.uns.get(key)
        if key == Keys.NMF_UNS and isinstance(stored, Mapping) and "annotation" in stored:
            mdata.uns[Keys.NMF_UNS]["annotation"] = stored["annotation"]
        elif key == "annotation" and stored is not None:
            mdata.uns["annotation"] = stored
    summary = type_unpaired(mdata, min_confidence=min_confidence, seed=kwargs.get("seed", 0), n_jobs=n_jobs)
    typed = mdata.obs[Keys.CELL_TYPE]
    if typed.isna().any():  # cells with nothing measured to compare on
        if UNKNOWN not in typed.cat.categories:
            typed = typed.cat.add_categories([UNKNOWN])
        mdata.obs[Keys.CELL_TYPE] = typed.fillna(UNKNOWN)
    return summary
