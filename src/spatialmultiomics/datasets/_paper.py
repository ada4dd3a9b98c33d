"""The seed paper's synthetic benchmark (its Section 3.1), generated exactly as described there.

Four cell types (T cells, Macrophages, Epithelial, Fibroblasts) with balanced counts; cells lie in a
1000 x 1000 px region (1 px = 1 µm here), clustered around one random centre per type with a 60 px standard
deviation. 500 genes are negative-binomial counts with mean 5 and overdispersion 0.5, four marker genes per type
receive an extra Poisson(50) spike in that type's cells; 10 proteins are Normal(2, 0.5) intensities (clipped at 0),
two marker proteins per type receive an extra Poisson(4) spike (8 marker proteins, 2 proteins without a type).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._keys import Keys
from spatialmultiomics._random import check_random_state
from spatialmultiomics._validate import check_positive_int

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["PAPER_MARKERS", "paper_benchmark"]

#: marker genes (4 per type) and marker proteins (2 per type) of the paper benchmark, in type order
PAPER_MARKERS: dict[str, dict[str, list[str]]] = {
    "T cells": {"genes": ["CD3E", "CD3D", "CD2", "TRAC"], "proteins": ["CD3", "CD8"]},
    "Macrophages": {"genes": ["CD68", "CD163", "CSF1R", "C1QA"], "proteins": ["CD68", "CD163"]},
    "Epithelial": {"genes": ["EPCAM", "KRT8", "KRT18", "CDH1"], "proteins": ["PanCK", "E-cadherin"]},
    "Fibroblasts": {"genes": ["COL1A1", "COL1A2", "DCN", "LUM"], "proteins": ["aSMA", "Vimentin"]},
}
#: the two proteins that mark no type
_OTHER_PROTEINS = ("Ki67", "HistoneH3")

_REGION_PX = 1000.0
_CLUSTER_SD_PX = 60.0
_PIXEL_SIZE_UM = 1.0
_N_GENES = 500
_NB_MEAN = 5.0
_NB_OVERDISPERSION = 0.5
_GENE_SPIKE = 50.0
_PROTEIN_MEAN, _PROTEIN_SD, _PROTEIN_SPIKE = 2.0, 0.5, 4.0


def _balanced_labels(n_cells: int, n_types: int) -> np.ndarray:
    """Type codes ``0, 1, ..., n_types - 1, 0, 1, ...``: counts differ by at most one."""
    return np.arange(n_cells) % n_types


def paper_benchmark(seed: int | None = 0, n_cells: int = 200) -> MuData:
    """Generate the seed paper's benchmark: 4 types x ``n_cells`` cells, 500 genes, 10 proteins (its Section 3.1).

    Parameters
    ----------
    seed
        Seed of the random generator; the same seed gives the same data.
    n_cells
        Number of cells (at least 4); types have balanced counts (cell ``i`` has type ``i mod 4``).

    Returns
    -------
    MuData with

    - ``mod['rna']``: ``X`` raw counts (dense float32, ``n_cells x 500``). Non-marker genes are named
      ``GENE_000`` ... ``GENE_483``; the 16 marker genes (real symbols) come first. Every gene is drawn from a
      negative binomial with mean 5 and overdispersion 0.5, parametrised so that ``var = mu + 0.5 * mu**2``
      (``r = 1/0.5 = 2`` failures, success probability ``p = r/(r+mu)``, drawn as the sum of ``r`` geometric
      failure counts); marker genes get ``+ Poisson(50)`` in their type.
    - ``mod['protein']``: ``X`` intensities (dense float32, ``n_cells x 10``): ``max(Normal(2, 0.5), 0)`` plus
      ``Poisson(4)`` on the type's two marker proteins. Channels ``CD3 CD8 CD68 CD163 PanCK E-cadherin aSMA
      Vimentin Ki67 HistoneH3``; the last two mark no type.
    - ``obsm['spatial']`` (on the MuData and on each modality): (n_cells, 2) float64 coordinates in µm. The
      region is 1000 x 1000 px at 1 µm per px; each type's cells are Normal(centre, 60 px) around one centre
      drawn uniformly in ``[180, 820]^2`` (3 SD from the edges), clipped into the region.
    - ``obs['true_cell_type']``: categorical, the planted type.
    - ``uns['markers']``: ``{type: {"genes": [...], "proteins": [...]}}``, the reference a user would pass.
    - ``uns['truth']``: the planted facts (centres in µm, cluster SD, pixel size, NB parameters, and
      ``attraction = {"type_a": [...], "type_b": [...]}``: every type attracts itself, as it is clustered).

    Examples
    --------
    >>> from spatialmultiomics.datasets import paper_benchmark
    >>> mdata = paper_benchmark(seed=0)
    >>> mdata["rna"].shape, mdata["protein"].shape
    ((200, 500), (200, 10))
    """
    import anndata as ad

    from spatialmultiomics._mudata import make_mudata

    n_cells = check_positive_int(n_cells, name="n_cells", minimum=len(PAPER_MARKERS))
    rng = check_random_state(seed)
    types = list(PAPER_MARKERS)
    n_types = len(types)
    codes = _balanced_labels(n_cells, n_types)

    # spatial layout: one centre per type, Normal(centre, 60 px), clipped into the region
    margin = 3.0 * _CLUSTER_SD_PX
    centres = rng.uniform(margin, _REGION_PX - margin, size=(n_types, 2))
    xy_px = centres[codes] + rng.normal(0.0, _CLUSTER_SD_PX, size=(n_cells, 2))
    np.clip(xy_px, 0.0, _REGION_PX, out=xy_px)
    spatial = xy_px * _PIXEL_SIZE_UM

    # genes: NB(mean 5, overdispersion 0.5) background, + Poisson(50) on the type's 4 markers
    marker_genes = [g for t in types for g in PAPER_MARKERS[t]["genes"]]
    gene_names = marker_genes + [f"GENE_{i:03d}" for i in range(_N_GENES - len(marker_genes))]
    # NB(r, p) with r = 1 / overdispersion = 2 is the sum of r geometric failure counts: same law as
    # rng.negative_binomial(r, p), 2.5x faster
    nb_r = round(1.0 / _NB_OVERDISPERSION)
    nb_p = nb_r / (nb_r + _NB_MEAN)
    counts = (rng.geometric(nb_p, size=(nb_r, n_cells, _N_GENES)).sum(axis=0) - nb_r).astype(np.float32)
    per_type = len(PAPER_MARKERS[types[0]]["genes"])
    rows = np.repeat(np.arange(n_cells), per_type)
    cols = (codes[:, None] * per_type + np.arange(per_type)[None, :]).ravel()
    counts[rows, cols] += rng.poisson(_GENE_SPIKE, size=rows.size).astype(np.float32)

    # proteins: max(Normal(2, 0.5), 0) background, + Poisson(4) on the type's 2 marker proteins
    marker_proteins = [p for t in types for p in PAPER_MARKERS[t]["proteins"]]
    protein_names = marker_proteins + list(_OTHER_PROTEINS)
    intens = np.maximum(rng.normal(_PROTEIN_MEAN, _PROTEIN_SD, size=(n_cells, len(protein_names))), 0.0)
    per_type_p = len(PAPER_MARKERS[types[0]]["proteins"])
    rows = np.repeat(np.arange(n_cells), per_type_p)
    cols = (codes[:, None] * per_type_p + np.arange(per_type_p)[None, :]).ravel()
    intens[rows, cols] += rng.poisson(_PROTEIN_SPIKE, size=rows.size)
    intens = intens.astype(np.float32)

    obs_names = pd.Index([f"cell_{i:04d}" for i in range(n_cells)])
    truth: dict[str, Any] = {
        "generator": "paper_benchmark",
        "seed": int(seed) if isinstance(seed, int | np.integer) else str(seed),
        "pixel_size_um": _PIXEL_SIZE_UM,
        "region_um": [_REGION_PX * _PIXEL_SIZE_UM] * 2,
        "cluster_sd_um": _CLUSTER_SD_PX * _PIXEL_SIZE_UM,
        "centres_um": {t: (centres[i] * _PIXEL_SIZE_UM).tolist() for i, t in enumerate(types)},
        "nb_mean": _NB_MEAN,
        "nb_overdispersion": _NB_OVERDISPERSION,
        "gene_spike_poisson_mean": _GENE_SPIKE,
        "protein_spike_poisson_mean": _PROTEIN_SPIKE,
        "attraction": {"type_a": list(types), "type_b": list(types)},
    }
    mods = {}
    for name, X, var_names in ((Keys.RNA, counts, gene_names), (Keys.PROTEIN, intens, protein_names)):
        adata = ad.AnnData(X, obs=pd.DataFrame(index=obs_names.copy()), var=pd.DataFrame(index=pd.Index(var_names)))
        adata.obsm[Keys.SPATIAL] = spatial.copy()
        adata.uns[Keys.PROVENANCE] = {
            "platform": "synthetic",
            "reader": "spatialmultiomics.datasets.paper_benchmark",
            "pixel_size_um": _PIXEL_SIZE_UM,
            "kind": "counts" if name == Keys.RNA else "intensity",
        }
        mods[name] = adata
    mdata = make_mudata(mods)
    mdata.obsm[Keys.SPATIAL] = spatial
    mdata.obs["true_cell_type"] = pd.Categorical.from_codes(codes, categories=types)
    mdata.uns["markers"] = {t: {k: list(v) for k, v in m.items()} for t, m in PAPER_MARKERS.items()}
    mdata.uns["truth"] = truth
    return mdata
