from __future__ import annotations

import numpy as np
import pytest

from spatialmultiomics import pl
from spatialmultiomics._keys import Keys
from spatialmultiomics.pl._nhood import significance_marks


def test_significance_marks_thresholds() -> None:
    q = np.array([0.0005, 0.001, 0.005, 0.01, 0.04, 0.05, 0.5, np.nan])
    assert significance_marks(q).tolist() == ["***", "**", "**", "*", "*", "", "", ""]


def test_heatmap_shows_stored_zscores_and_stars(results) -> None:
    ax = pl.colocalization(results)
    (image,) = ax.get_images()
    shown = np.ma.filled(image.get_array(), np.nan)
    stored = results.uns[Keys.nhood()]["zscore"]
    assert np.array_equal(np.isnan(shown), np.isnan(stored))
    assert np.allclose(shown[~np.isnan(shown)], stored[~np.isnan(stored)])
    lo, hi = image.get_clim()
    assert lo == -5.0 and hi == 5.0  # symmetric around 0 = random mixing
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(0, 0)] == "5.0\n***"
    assert texts[(0, 1)] == "-3.0\n**"
    assert texts[(1, 1)] == "2.0\n*"
    assert texts[(0, 2)] == "0.5"
    assert (1, 2) not in texts  # NaN: degenerate, no statistic
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Tumour", "T cells", "Unknown"]


def test_score_values_without_numbers(results) -> None:
    ax = pl.colocalization(results, value="score", annotate=False)
    assert np.isclose(ax.get_images()[0].get_array()[0, 0], 0.5)
    assert sorted(t.get_text() for t in ax.texts) == ["*", "**", "**", "***"]
    with pytest.raises(ValueError, match="value"):
        pl.colocalization(results, value="pvalue")


def test_missing_result_says_what_to_run(results) -> None:
    del results.uns[Keys.nhood()]
    with pytest.raises(KeyError, match=r"Run smo.spatial.colocalization\(mdata, label_key='cell_type'\) first"):
        pl.colocalization(results)


@pytest.mark.parametrize("n_types", [3, 20])
def test_type_names_stay_clear_of_the_colour_strip(n_types: int) -> None:
    """The left colour strip is 3 % of the heatmap wide: at 20 types it covered the names (17 pt > the 12 pt pad)."""
    import anndata as ad
    import pandas as pd

    from spatialmultiomics import spatial
    from spatialmultiomics.pl._utils import offscreen

    rng = np.random.default_rng(0)
    n = 1500
    labels = pd.Categorical([f"type_{i:02d}" for i in rng.integers(0, n_types, n)])
    adata = ad.AnnData(obs=pd.DataFrame({Keys.CELL_TYPE: labels}, index=[str(i) for i in range(n)]))
    adata.obsm[Keys.SPATIAL] = rng.random((n, 2)) * 800.0
    spatial.spatial_neighbors(adata, radius=60.0)
    spatial.colocalization(adata)
    with offscreen():
        ax = pl.colocalization(adata)
        fig = ax.figure
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        strip = min(child.get_window_extent(renderer).x0 for child in ax.child_axes)
        rightmost = max(t.get_window_extent(renderer).x1 for t in ax.get_yticklabels())
    assert rightmost < strip
