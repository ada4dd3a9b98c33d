from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from spatialmultiomics._errors import InputError
from spatialmultiomics.datasets import synthetic_cohort
from spatialmultiomics.datasets._cohort import COHORT_TYPES


def test_design_counts_truth_and_determinism() -> None:
    a = synthetic_cohort(n_patients=3, n_images=2, n_cells=300, seed=0)
    b = synthetic_cohort(n_patients=3, n_images=2, n_cells=300, seed=0)
    c = synthetic_cohort(n_patients=3, n_images=2, n_cells=300, seed=1)
    pd.testing.assert_frame_equal(a.cells, b.cells)
    assert not a.cells[["x", "y"]].equals(c.cells[["x", "y"]])
    cells = a.cells
    assert cells["sample"].nunique() == 12 and cells["patient"].nunique() == 6
    assert (cells.groupby("sample").size() == 300).all()
    assert list(cells["condition"].cat.categories) == ["control", "case"]
    assert (cells.groupby("sample")["condition"].nunique() == 1).all()
    truth = a.truth_abundance.set_index("cell_type")
    assert set(truth.index[truth["planted"]]) == {"B cell", "Stroma"}
    # the log odds ratio of the population proportions, up to the small Dirichlet (digamma) correction
    assert truth.loc["B cell", "effect"] == pytest.approx(1.0, abs=0.1)
    p1 = COHORT_TYPES["Stroma"] - (1 / (1 + np.exp(-(logit(0.08) + 1))) - 0.08)
    assert truth.loc["Stroma", "effect"] == pytest.approx(logit(p1) - logit(0.2), abs=0.1)
    pairs = a.truth_pairs
    assert len(pairs) == 21 and pairs["planted"].sum() == 2
    assert {tuple(r) for r in pairs.loc[pairs["planted"], ["cell_type_a", "cell_type_b"]].to_numpy()} == {
        ("B cell", "CD4 T"),
        ("CD8 T", "Macrophage"),
    }


def test_planted_attraction_puts_cells_next_to_their_anchor() -> None:
    from scipy.spatial import cKDTree

    def near_fraction(pair_effect: float) -> float:
        cells = synthetic_cohort(
            n_patients=2, n_images=1, n_cells=2000, pair_effect=pair_effect, base_attached=0.0, attached_sd=0.0, seed=3
        ).cells
        cells = cells[cells["condition"] == "case"]
        out = []
        for _, img in cells.groupby("sample"):
            mac = img.loc[img["cell_type"] == "Macrophage", ["x", "y"]].to_numpy()
            cd8 = img.loc[img["cell_type"] == "CD8 T", ["x", "y"]].to_numpy()
            d, _ = cKDTree(mac).query(cd8)
            out.append(np.mean(d <= 12.0))
        return float(np.mean(out))

    assert near_fraction(0.5) > near_fraction(0.0) + 0.35


def test_null_cohort_and_bad_arguments() -> None:
    null = synthetic_cohort(n_patients=2, n_images=1, n_cells=200, abundance_effect=0.0, pair_effect=0.0, seed=0)
    assert not null.truth_abundance["planted"].any() and not null.truth_pairs["planted"].any()
    with pytest.raises(InputError, match="abundance_effect"):
        synthetic_cohort(abundance_effect=3.0)
    with pytest.raises(InputError, match="n_cells"):
        synthetic_cohort(n_cells=10)
