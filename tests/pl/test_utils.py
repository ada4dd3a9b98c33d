from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from spatialmultiomics import pl
from spatialmultiomics._keys import Keys
from spatialmultiomics.pl._utils import UNKNOWN_COLOR, colors_for, fov_groups, get_container, offscreen, subsample


def test_colors_stored_distinct_and_unknown_grey(results) -> None:
    colors = pl.cell_type_colors(results)
    assert list(colors) == ["Tumour", "T cells", "Unknown"]
    assert colors["Unknown"] == UNKNOWN_COLOR
    assert len(set(colors.values())) == 3
    assert list(results.uns[Keys.colors()]) == list(colors.values())
    # tab10's first two colours for the first two named types
    assert colors["Tumour"] == "#1f77b4" and colors["T cells"] == "#ff7f0e"


def test_user_palette_is_respected(results) -> None:
    results.uns[Keys.colors()] = np.array(["#000000", "#111111", "#222222"], dtype=object)
    assert pl.cell_type_colors(results) == {"Tumour": "#000000", "T cells": "#111111", "Unknown": "#222222"}


def test_palette_of_wrong_length_is_replaced(results) -> None:
    results.uns[Keys.colors()] = ["#000000"]
    assert len(pl.cell_type_colors(results)) == 3
    assert len(results.uns[Keys.colors()]) == 3


def test_many_types_get_distinct_colours() -> None:
    names = [f"type{i}" for i in range(70)]
    colors = colors_for(names, {})
    assert len(set(colors.values())) == 70
    assert UNKNOWN_COLOR not in colors.values()


def test_colors_for_reuses_palette_and_adds_new() -> None:
    out = colors_for(["A", "new", "Unknown", "isolated"], {"A": "#123456"})
    assert out["A"] == "#123456"
    assert out["Unknown"] == out["isolated"] == UNKNOWN_COLOR
    assert out["new"] not in ("#123456", UNKNOWN_COLOR)


def test_missing_result_names_the_step(results) -> None:
    del results.obs[Keys.CELL_TYPE]
    with pytest.raises(KeyError, match=r"No obs\['cell_type'\] in the data. Run smo.annotate.annotate"):
        pl.cell_type_colors(results)


def test_get_container_accepts_result_objects(results) -> None:
    class Result:
        mdata = results

    assert get_container(Result()) is results
    with pytest.raises(TypeError, match="expected a MuData, AnnData or PipelineResult, got int"):
        get_container(3)


def test_fov_groups_and_errors(results) -> None:
    groups = fov_groups(results)
    assert [g[0] for g in groups] == ["A", "B"]
    assert groups[0][1].tolist() == list(range(40))
    with pytest.raises(KeyError, match=r"fov='C' is not a field of view of the data; available: \['A', 'B'\]"):
        fov_groups(results, "C")


def test_subsample_is_seeded_sorted_and_capped() -> None:
    idx = np.arange(1000)
    a, cut = subsample(idx, 100)
    b, _ = subsample(idx, 100)
    assert cut and a.size == 100 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    same, cut = subsample(idx, 5000)
    assert not cut and same is idx


def test_offscreen_draws_without_pyplot_figures(results) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    with offscreen():
        ax = pl.colocalization(results)
    assert plt.get_fignums() == before
    assert to_hex(ax.figure.get_facecolor()) == "#ffffff"
