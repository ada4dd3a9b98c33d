"""Per-sample statistics of a labelled cohort: cell-type proportions, co-localization and niches, as long tables.

All three reuse :mod:`spatialmultiomics.spatial`: one radius graph over all cells that never joins two samples
(``spatial_neighbors(fov_key=sample)``), the exact join-count statistics of every sample
(``colocalization(sample_key=...)``, each sample's table from its own cells and edges) and cellular neighbourhoods
fitted on all cells at once (``niches``), so niche "3" means the same composition in every sample.

The statistic each differential test uses is stored next to the raw numbers (``logit`` / ``logit_var`` in the
composition table, ``log_enrichment`` / ``log_enrichment_var`` / ``estimable`` in the co-localization table); see
:mod:`spatialmultiomics.cohort._differential` for their definitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spatialmultiomics.cohort._differential import empirical_logit, log_enrichment

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = ["LABEL", "NICHE_FIT_CELLS", "SAMPLE", "sample_colocalization", "sample_composition", "sample_niches"]

LABEL = "cell_type"  # obs column of the cohort's working AnnData with the labels
SAMPLE = "sample"  # obs column with the sample of each cell
NICHE_FIT_CELLS = 20_000  # cells k-means is fitted on (all cells are assigned)


def sample_composition(adata: AnnData, reported: list[str]) -> pd.DataFrame:
    """Cells of each reported type per sample: counts, proportions and the empirical logit.

    Parameters
    ----------
    adata
        Working AnnData with categorical ``obs['cell_type']`` and ``obs['sample']``.
    reported
        Types to report (the categories minus the excluded labels); the proportions are among the cells that
        carry one of them (excluded labels such as ``Unknown`` and missing labels are not in the denominator).

    Returns
    -------
    DataFrame, one row per (sample, type) in sample then type order: ``sample``, ``cell_type``, ``n_cells``
    (of the type), ``n_typed`` (cells with a reported type in the sample), ``proportion``, ``logit``
    (empirical logit) and ``logit_var`` (its binomial variance).
    """
    import pandas as pd

    counts = pd.crosstab(adata.obs[SAMPLE], adata.obs[LABEL], dropna=True)
    counts = counts.reindex(columns=reported, fill_value=0).reindex(adata.obs[SAMPLE].cat.categories, fill_value=0)
    n_typed = counts.sum(axis=1)
    long = counts.stack().rename("n_cells").reset_index()
    long.columns = ["sample", "cell_type", "n_cells"]
    long["n_typed"] = n_typed.reindex(long["sample"]).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        long["proportion"] = np.where(long["n_typed"] > 0, long["n_cells"] / long["n_typed"], np.nan)
    y, v = empirical_logit(long["n_cells"].to_numpy(), long["n_typed"].to_numpy())
    long["logit"] = y
    long["logit_var"] = v
    long["sample"] = long["sample"].astype(str)
    long["cell_type"] = long["cell_type"].astype(str)
    return long


def sample_colocalization(adata: AnnData, *, radius: float, exclude: tuple[str, ...], min_cells: int) -> pd.DataFrame:
    """Exact co-localization of every unordered pair of reported types in every sample.

    Builds the radius graph (``obsp['spatial_connectivities']`` of ``adata``; never across samples) and runs
    :func:`spatialmultiomics.spatial.colocalization` with ``sample_key``. Excluded labels stay in the graph and the
    null model (see there) and are not reported.

    Returns
    -------
    DataFrame, one row per (sample, a, b) with a <= b in category order: ``sample``, ``cell_type_a``,
    ``cell_type_b``, ``n_cells_a``, ``n_cells_b``, ``observed`` (join count), ``expected`` (exact null mean),
    ``variance`` (exact null variance), ``score`` ((observed - expected) / expected), ``z_score``, ``p_value``
    (within the sample), ``log_enrichment``, ``log_enrichment_var`` and ``estimable`` (both types have at least
    ``min_cells`` cells, at least 2 for a type with itself, and expected and variance are positive).
    """
    import pandas as pd

    from spatialmultiomics import spatial

    spatial.spatial_neighbors(adata, radius=radius, fov_key=SAMPLE)
    res = spatial.colocalization(
        adata, label_key=LABEL, sample_key=SAMPLE, fov_key=SAMPLE, exclude=list(exclude) or None, inplace=False
    )
    cats = list(res.categories)
    iu, ju = np.triu_indices(len(cats))
    parts = []
    for name, table in (res.by_sample or {}).items():
        n = np.asarray(table.n_cells, dtype=np.int64)
        parts.append(
            pd.DataFrame(
                {
                    "sample": name,
                    "cell_type_a": np.asarray(cats, dtype=object)[iu],
                    "cell_type_b": np.asarray(cats, dtype=object)[ju],
                    "n_cells_a": n[iu],
                    "n_cells_b": n[ju],
                    "observed": table.count[iu, ju],
                    "expected": table.expected_exact[iu, ju],
                    "variance": table.variance[iu, ju],
                    "score": table.score[iu, ju],
                    "z_score": table.zscore[iu, ju],
                    "p_value": table.pvalue[iu, ju],
                }
            )
        )
    long = pd.concat(parts, ignore_index=True)
    y, v = log_enrichment(long["observed"].to_numpy(), long["expected"].to_numpy(), long["variance"].to_numpy())
    long["log_enrichment"] = y
    long["log_enrichment_var"] = v
    same = (long["cell_type_a"] == long["cell_type_b"]).to_numpy()
    need = np.where(same, max(min_cells, 2), min_cells)
    long["estimable"] = (
        (long["n_cells_a"].to_numpy() >= need)
        & (long["n_cells_b"].to_numpy() >= need)
        & (long["expected"].to_numpy() > 0)
        & (long["variance"].to_numpy() > 0)
    )
    return long


def sample_niches(adata: AnnData, *, n_niches: int, seed: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cellular neighbourhoods fitted on all samples together, and the share of each sample's cells in each.

    Needs the graph of :func:`sample_colocalization`. The neighbour compositions come from
    :func:`spatialmultiomics.spatial.niche_composition`; k-means (``n_init=4``, seeded) is fitted on at most
    ``NICHE_FIT_CELLS`` cells drawn at random (every sample contributes in proportion to its size) and assigns
    every cell to its nearest centre, so the cost stays flat with the size of the cohort. Cells without a
    neighbour are ``"isolated"``.

    Returns
    -------
    ``(long, centroids)``: ``long`` has one row per (sample, niche): ``sample``, ``niche``, ``n_cells``,
    ``fraction`` of the sample's cells; ``centroids`` is the mean neighbour composition of each niche (niches x
    types), niches numbered by decreasing size.
    """
    import pandas as pd
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from spatialmultiomics import spatial
    from spatialmultiomics._keys import Keys
    from spatialmultiomics._random import check_random_state

    spatial.niche_composition(adata, label_key=LABEL)
    frac = np.asarray(adata.obsm[Keys.NICHE_COMPOSITION], dtype=np.float64)
    categories = [str(c) for c in adata.uns[Keys.NICHE_COMPOSITION]["categories"]]
    has = np.flatnonzero(frac.sum(axis=1) > 0)
    rng = check_random_state(seed)
    fit_rows = has if has.size <= NICHE_FIT_CELLS else np.sort(rng.choice(has, NICHE_FIT_CELLS, replace=False))
    k = min(n_niches, int(np.unique(frac[fit_rows], axis=0).shape[0])) if fit_rows.size else 0
    labels = np.full(frac.shape[0], "isolated", dtype=object)
    centres = np.zeros((0, len(categories)))
    if k > 0:
        with threadpool_limits(1):  # small problem: threads only contend (10x slower on a busy 2-core machine)
            km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(frac[fit_rows])
            assigned = km.predict(frac[has])
        order = np.argsort(-np.bincount(assigned, minlength=k), kind="stable")
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k)
        labels[has] = rank[assigned].astype(str)
        centres = km.cluster_centers_[order]
    names = [str(i) for i in range(k)] + (["isolated"] if has.size < frac.shape[0] else [])
    niche = pd.Categorical(labels, categories=names)
    adata.obs[Keys.NICHE] = niche
    counts = pd.crosstab(adata.obs[SAMPLE], niche).reindex(adata.obs[SAMPLE].cat.categories, fill_value=0)
    frac_s = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    long = counts.stack().rename("n_cells").reset_index()
    long.columns = ["sample", "niche", "n_cells"]
    long["fraction"] = frac_s.stack().to_numpy()
    long["sample"] = long["sample"].astype(str)
    long["niche"] = long["niche"].astype(str)
    centroids = pd.DataFrame(centres, index=pd.Index([str(i) for i in range(k)], name="niche"), columns=categories)
    return long, centroids
