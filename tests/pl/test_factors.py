from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from spatialmultiomics import pl
from spatialmultiomics._keys import Keys


def test_loadings_heatmap_labels_planted_top_features(results) -> None:
    ax = pl.factor_loadings(results, n_top={"rna": 2, "protein": 1})
    rows = [t.get_text() for t in ax.get_yticklabels()]
    # the two top genes of each factor, then the top protein of each, grouped by factor
    assert rows == ["G0", "G1", "G4", "G5", "G8", "G9", "P0", "P1", "P2"]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert cols == ["F0 · Tumour", "F1 · T cells", "F2 · Unknown"]
    M = ax.get_images()[0].get_array()
    assert M.shape == (9, 3)
    assert np.allclose(M[[0, 2, 4, 6, 7, 8], [0, 1, 2, 0, 1, 2]], 1.0)  # each factor's top feature scaled to 1
    assert np.isclose(M[1, 0], 0.9)


def test_factor_colour_strip_uses_cell_type_colours(results) -> None:
    ax = pl.factor_loadings(results)
    colors = pl.cell_type_colors(results)
    strip = next(child for child in ax.child_axes if child.get_images())
    rgb = strip.get_images()[0].get_array()[0]
    assert [to_hex(c) for c in rgb] == [colors["Tumour"], colors["T cells"], colors["Unknown"]]


def test_factor_maps_one_panel_per_factor_scaled(results) -> None:
    axes = pl.factor_maps(results)
    assert len(axes) == 3
    assert [a.get_title() for a in axes] == ["F0 · Tumour", "F1 · T cells", "F2 · Unknown"]
    values = axes[0].collections[0].get_array()
    W = np.asarray(results.obsm[Keys.NMF])[:40, 0]  # FOV A (the larger) is drawn
    expected = np.sort(np.clip(W / np.percentile(W, 99.5), 0, 1))
    assert np.allclose(values, expected)  # drawn in increasing order, high cells on top
    one = pl.factor_maps(results, factors=[1], fov="B")
    assert one.get_title() == "F1 · T cells"
    with pytest.raises(ValueError, match=r"factors=\[5\]: the data has factors 0..2"):
        pl.factor_maps(results, factors=[5])


def test_k_selection_curve(results) -> None:
    results.uns[Keys.NMF_UNS]["k_selection"] = {
        "k": 3,
        "k_grid": np.array([2, 3, 4, 5]),
        "stability": np.array([0.99, 0.97, 0.90, 0.85]),
        "stability_sd": np.array([0.01, 0.01, 0.05, 0.05]),
        "error": np.array([0.5, 0.4, 0.35, 0.33]),
        "error_sd": np.zeros(4),
        "threshold": 0.95,
        "reason": "k = 3: largest k with stability >= 0.95",
    }
    ax = pl.k_selection(results)
    stab = next(line for line in ax.get_lines() if line.get_label() == "stability over restarts")
    assert np.array_equal(stab.get_xdata(), [2, 3, 4, 5])
    assert np.allclose(stab.get_ydata(), [0.99, 0.97, 0.90, 0.85])
    vlines = [line for line in ax.get_lines() if list(line.get_xdata()) == [3, 3]]
    assert len(vlines) == 1
    assert "largest k with stability" in ax.get_title()
    err_axis = next(a for a in ax.figure.axes if a is not ax and a.get_lines())
    assert np.allclose(err_axis.get_lines()[0].get_ydata(), [0.5, 0.4, 0.35, 0.33])


def test_k_selection_missing(results) -> None:
    with pytest.raises(KeyError, match=r"No uns\['nmf'\]\['k_selection'\] in the data"):
        pl.k_selection(results)


def test_factor_maps_of_many_cells_show_the_mean_per_pixel(results, monkeypatch) -> None:
    import spatialmultiomics.pl._factors as factors

    monkeypatch.setattr(factors, "BIN_POINTS", 10)
    # FOV A (40 cells): put factor 0 at 1.0 on the left half and 0 on the right half
    xy = np.asarray(results.obsm[Keys.SPATIAL]).copy()
    W = np.zeros((60, 3), dtype=np.float32)
    W[:40, 0] = (xy[:40, 0] < 100).astype(np.float32)
    W[:40, 1] = 1.0
    results.obsm[Keys.NMF] = W
    ax = pl.factor_maps(results, factors=[0])
    (image,) = ax.get_images()
    M = np.ma.filled(image.get_array().astype(float), np.nan)
    x0, x1, _, _ = image.get_extent()
    centres = x0 + (np.arange(M.shape[1]) + 0.5) * (x1 - x0) / M.shape[1]
    left, right = M[:, centres < 95], M[:, centres > 105]
    assert np.nanmin(left) == 1.0 and np.nanmax(right) == 0.0  # pixels hold the mean of their cells
    assert np.isfinite(M).sum() <= 40 and np.isnan(M).any()  # empty pixels stay empty
    assert ax.yaxis_inverted()
