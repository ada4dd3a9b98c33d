"""Type-level integration of modalities typed on their own cells (route 'separate')."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.align._separate import (
    cross_neighbours,
    neighbour_type_fractions,
    type_agreement,
    type_concordance,
)


@pytest.fixture
def two_sections():
    rng = np.random.default_rng(0)
    ref_xy = rng.uniform(0, 300, size=(400, 2))
    other_xy = rng.uniform(0, 300, size=(350, 2))
    # types in bands of x: both sections see the same tissue, each with its own vocabulary
    ref_lab = np.where(ref_xy[:, 0] < 100, "Tumour", np.where(ref_xy[:, 0] < 200, "Stroma", "Immune"))
    other_lab = np.where(other_xy[:, 0] < 100, "PanCK+", np.where(other_xy[:, 0] < 200, "aSMA+", "CD45+"))
    return ref_xy, other_xy, ref_lab, other_lab


def test_cross_neighbours_match_brute_force(two_sections) -> None:
    ref_xy, other_xy, _, _ = two_sections
    g = cross_neighbours(ref_xy, other_xy, 25.0)
    d = np.linalg.norm(ref_xy[:, None, :] - other_xy[None, :, :], axis=2)
    np.testing.assert_array_equal(g.toarray(), (d <= 25.0).astype(float))
    with pytest.raises(InputError, match="radius must be a positive number of µm"):
        cross_neighbours(ref_xy, other_xy, 0.0)


def test_fractions_and_concordance_match_brute_force(two_sections) -> None:
    ref_xy, other_xy, ref_lab, other_lab = two_sections
    g = cross_neighbours(ref_xy, other_xy, 25.0)
    dense = g.toarray()
    frac, n = neighbour_type_fractions(g, other_lab)
    np.testing.assert_array_equal(n, dense.sum(axis=1).astype(int))
    for j, t in enumerate(frac.columns):
        want = np.divide(dense @ (other_lab == t), n, out=np.zeros(len(n)), where=n > 0)
        np.testing.assert_allclose(frac.iloc[:, j], want)
    conc = type_concordance(g, ref_lab, other_lab)
    obs = pd.crosstab(
        np.repeat(ref_lab, dense.shape[1])[dense.ravel() > 0], np.tile(other_lab, dense.shape[0])[dense.ravel() > 0]
    )
    for row in conc.itertuples():
        assert row.observed == obs.loc[row.ref_type, row.other_type]
        want = obs.loc[row.ref_type].sum() * obs[row.other_type].sum() / obs.to_numpy().sum()
        assert row.expected == pytest.approx(want)
    best = conc[conc.best].set_index("ref_type")["other_type"].to_dict()
    assert best == {"Tumour": "PanCK+", "Stroma": "aSMA+", "Immune": "CD45+"}


def test_type_agreement(two_sections) -> None:
    ref_xy, other_xy, ref_lab, other_lab = two_sections
    g = cross_neighbours(ref_xy, other_xy, 25.0)
    renamed = pd.Series(other_lab).map({"PanCK+": "Tumour", "aSMA+": "Stroma", "CD45+": "Immune"}).to_numpy()
    frac, _ = neighbour_type_fractions(g, renamed)
    agree = type_agreement(frac, ref_lab)
    # only cells within 25 µm of a band edge can see more of the next band's cells
    near_edge = np.min(np.abs(ref_xy[:, [0]] - np.array([100.0, 200.0])), axis=1) < 25.0
    assert 1.0 - near_edge.mean() <= agree < 1.0
    assert np.isnan(type_agreement(frac, np.full(len(ref_lab), "Unknown"), exclude=("Unknown",)))
