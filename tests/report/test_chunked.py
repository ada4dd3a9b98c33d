"""The out-of-core report's own pieces (the whole page is checked in tests/test_chunked_pipeline.py)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from spatialmultiomics import pl
from spatialmultiomics._keys import Keys
from spatialmultiomics.pl._utils import offscreen
from spatialmultiomics.report._chunked import _count_all_cells


def test_the_map_legend_counts_all_cells_not_the_sample() -> None:
    """The map is drawn for a sample (every s-th cell); its legend must give the run's counts, not the sample's."""
    rng = np.random.default_rng(0)
    labels = pd.Categorical(rng.choice(["B cells", "T cells", "Tumour"], 300))
    adata = ad.AnnData(obs=pd.DataFrame({Keys.CELL_TYPE: labels}, index=[str(i) for i in range(300)]))
    adata.obsm[Keys.SPATIAL] = rng.random((300, 2)) * 100.0
    all_cells = {"B cells": 1_000_000, "T cells": 2_500_000, "Tumour": 6_500_000}
    with offscreen():
        ax = pl.spatial_cell_types(adata)
        before = sorted(t.get_text() for t in ax.get_legend().get_texts())
        _count_all_cells(ax.figure, all_cells)
        legend = ax.get_legend()
        after = sorted(t.get_text() for t in legend.get_texts())
    sample = pd.Series(np.asarray(labels)).value_counts()
    assert before == sorted(f"{name} ({sample[name]:,})" for name in all_cells)
    assert after == ["B cells (1,000,000)", "T cells (2,500,000)", "Tumour (6,500,000)"]
    assert legend.get_title().get_text() == "cell type (all cells)"
