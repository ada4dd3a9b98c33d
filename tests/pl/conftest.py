"""A small MuData carrying every stored result the figures read, with planted, known values."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._keys import Keys
from spatialmultiomics._mudata import make_mudata

matplotlib.use("Agg")

TYPES = ["Tumour", "T cells", "Unknown"]
GENES = [f"G{i}" for i in range(12)]
PROTEINS = ["P0", "P1", "P2", "P3"]


@pytest.fixture
def results() -> object:
    """60 cells in two FOVs, 3 factors; factor f's top genes are G{4f}..G{4f+3}, top protein P{f}."""
    rng = np.random.default_rng(0)
    n, k = 60, 3
    obs_names = [f"c{i}" for i in range(n)]
    labels = np.array(["Tumour"] * 30 + ["T cells"] * 27 + ["Unknown"] * 3)
    fov = np.array(["A"] * 40 + ["B"] * 20)
    xy = rng.uniform(0, 200, size=(n, 2))
    W = rng.uniform(0, 0.1, size=(n, k)).astype(np.float32)
    W[:30, 0] += 1.0
    W[30:57, 1] += 1.0
    H_rna = np.full((len(GENES), k), 0.01, dtype=np.float32)
    H_prot = np.full((len(PROTEINS), k), 0.01, dtype=np.float32)
    for f in range(k):
        H_rna[4 * f : 4 * f + 4, f] = [1.0, 0.9, 0.8, 0.7]
        H_prot[f, f] = 2.0
    rna = ad.AnnData(rng.poisson(2, size=(n, len(GENES))).astype(np.float32))
    prot = ad.AnnData(rng.uniform(0, 5, size=(n, len(PROTEINS))).astype(np.float32))
    for a, names, H in ((rna, GENES, H_rna), (prot, PROTEINS, H_prot)):
        a.obs_names = obs_names
        a.var_names = names
        a.obsm[Keys.SPATIAL] = xy
        a.varm[Keys.NMF_LOADINGS] = H
    mdata = make_mudata({Keys.RNA: rna, Keys.PROTEIN: prot})
    mdata.obsm[Keys.SPATIAL] = xy
    mdata.obsm[Keys.NMF] = W
    mdata.obs[Keys.CELL_TYPE] = pd.Categorical(labels, categories=TYPES)
    mdata.obs[Keys.CELL_TYPE_CONFIDENCE] = np.linspace(0, 1, n)
    mdata.obs[Keys.FOV] = pd.Categorical(fov)
    niche = np.where(np.arange(n) % 2 == 0, "Tumour", "T cells").astype(object)
    niche[-1] = "isolated"
    mdata.obs[Keys.NICHE_TYPE] = pd.Categorical(niche, categories=["Tumour", "T cells", "isolated"])
    mdata.obs[Keys.N_NEIGHBORS] = np.arange(n) % 7
    z = np.array([[5.0, -3.0, 0.5], [-3.0, 2.0, np.nan], [0.5, np.nan, np.nan]])
    q = np.array([[1e-4, 0.004, 0.8], [0.004, 0.03, np.nan], [0.8, np.nan, np.nan]])
    mdata.uns[Keys.nhood(Keys.CELL_TYPE)] = {
        "zscore": z,
        "count": np.array([[40.0, 2.0, 1.0], [2.0, 20.0, 0.0], [1.0, 0.0, 0.0]]),
        "score": z / 10,
        "expected": np.full((3, 3), 10.0),
        "expected_paper": np.full((3, 3), 12.0),
        "pvalue": q / 2,
        "qvalue": q,
        "categories": list(TYPES),
        "degenerate": np.array([False, False, False]),
        "n_cells": np.array([30, 27, 3]),
        "params": {"expected": "exact", "label_key": Keys.CELL_TYPE},
    }
    mdata.uns[Keys.GRAPH_UNS] = {"params": {"method": "radius", "radius": 30.0, "n_neighbors": "None"}}
    mdata.uns[Keys.NMF_UNS] = {
        "modalities": [Keys.RNA, Keys.PROTEIN],
        "annotation": {
            "factor": np.arange(k),
            "cell_type": np.array(["Tumour", "T cells", "Unknown"], dtype=object),
            "score": np.array([0.9, 0.8, 0.0]),
            "n_cells": np.array([30, 27, 3]),
            "top_genes": np.array(["G0, G1", "G4, G5", "G8, G9"], dtype=object),
            "top_proteins": np.array(["P0", "P1", "P2"], dtype=object),
            "params": {"method": "auto"},
        },
    }
    return mdata


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
