from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from spatialmultiomics import pl
from spatialmultiomics._keys import Keys
from spatialmultiomics.pl._utils import UNKNOWN_COLOR


def _points(ax) -> tuple[np.ndarray, list[str]]:
    (coll,) = ax.collections
    return np.asarray(coll.get_offsets()), [to_hex(c) for c in coll.get_facecolors()]


def test_each_cell_drawn_at_its_position_in_its_type_colour(results) -> None:
    axes = pl.spatial_cell_types(results)
    assert isinstance(axes, list) and len(axes) == 2  # two FOVs, one panel each
    colors = pl.cell_type_colors(results)
    xy = np.asarray(results.obsm[Keys.SPATIAL])
    labels = results.obs[Keys.CELL_TYPE].astype(str).to_numpy()
    for ax, rows in zip(axes, (np.arange(40), np.arange(40, 60)), strict=True):
        offsets, drawn = _points(ax)
        assert offsets.shape == (rows.size, 2)
        # every cell appears once, at its µm coordinates, in the colour of its type
        lookup = {tuple(np.round(xy[i], 6)): colors[labels[i]] for i in rows}
        assert {tuple(np.round(o, 6)): c for o, c in zip(offsets, drawn, strict=True)} == lookup
        assert ax.yaxis_inverted()
        assert ax.get_xlabel() == "x (µm)"
    legend = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert legend == ["Tumour (30)", "T cells (27)", "Unknown (3)"]


def test_rare_types_are_drawn_last(results) -> None:
    ax = pl.spatial_cell_types(results, fov="A")
    _, drawn = _points(ax)
    # FOV A holds 30 Tumour and 10 T cells: T cells (rarer) come last
    assert drawn[-10:] == [pl.cell_type_colors(results)["T cells"]] * 10


def test_one_fov_on_given_axes(results) -> None:
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert pl.spatial_cell_types(results, fov="B", ax=ax) is ax
    assert "FOV B" in ax.get_title()
    with pytest.raises(ValueError, match="the data has 2 fields of view; pass fov="):
        pl.spatial_cell_types(results, ax=ax)


def test_niche_types_use_the_cell_type_colours(results) -> None:
    ax = pl.niches(results, fov="A")
    _, drawn = _points(ax)
    colors = pl.cell_type_colors(results)
    niche = results.obs[Keys.NICHE_TYPE].astype(str).to_numpy()[:40]
    assert sorted(drawn) == sorted(colors.get(t, UNKNOWN_COLOR) for t in niche)
    assert "within 30 µm" in ax.get_title()


def test_neighbourhood_clusters_preferred_when_present(results) -> None:
    import pandas as pd

    results.obs[Keys.NICHE] = pd.Categorical(np.where(np.arange(60) < 30, "0", "1"))
    axes = pl.niches(results)
    assert axes[0].get_title().startswith("Cellular neighbourhoods")
    _, drawn = _points(axes[1])  # FOV B = cells 40..59, all in niche "1"
    assert len(set(drawn)) == 1


def test_plots_never_change_the_results(results) -> None:
    before = {k: np.array(v, copy=True) for k, v in results.obsm.items()}
    obs = results.obs.copy()
    pl.spatial_cell_types(results)
    pl.niches(results)
    pl.factor_maps(results)
    pl.factor_loadings(results)
    pl.colocalization(results)
    for k, v in before.items():
        assert np.array_equal(np.asarray(results.obsm[k]), v)
    assert results.obs.equals(obs)
