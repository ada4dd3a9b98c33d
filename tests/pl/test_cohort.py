from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spatialmultiomics import pl
from spatialmultiomics._errors import InputError
from spatialmultiomics.cohort import compare
from spatialmultiomics.datasets import synthetic_cohort
from spatialmultiomics.report import render_cohort_report


@pytest.fixture(scope="module")
def result():
    cells = synthetic_cohort(n_patients=5, n_images=1, n_cells=1200, pair_effect=0.6, seed=0).cells
    return compare(
        cells, label_key="cell_type", sample_key="sample", condition_key="condition", patient_key="patient", n_niches=0
    )


def test_heatmaps_one_panel_per_condition_with_the_per_sample_means(result) -> None:
    axes = pl.cohort_colocalization(result)
    assert [ax.get_title().split(" (")[0] for ax in axes] == ["control", "case"]
    image = axes[1].get_images()[0].get_array()
    types = result.cell_types
    long = result.sample_colocalization
    sel = (long["condition"] == "case") & (long["cell_type_a"] == "CD8 T") & (long["cell_type_b"] == "Macrophage")
    i, j = types.index("CD8 T"), types.index("Macrophage")
    assert image[i, j] == pytest.approx(long.loc[sel, "log_enrichment"].mean())
    assert image[j, i] == image[i, j]
    stars = {t.get_text() for t in axes[1].texts}
    q = result.differential_colocalization["q_value"]
    assert bool(stars & {"*", "**", "***"}) == bool((q < 0.05).any())
    assert not axes[0].texts  # the reference panel has no marks


def test_volcano_forest_and_composition(result) -> None:
    ax = pl.cohort_volcano(result)
    n_points = sum(len(c.get_offsets()) for c in ax.collections)
    assert n_points == len(result.differential_colocalization)
    ax = pl.cohort_forest(result, table="abundance", top=4)
    assert len(ax.get_yticklabels()) == 4
    assert (
        ax.get_yticklabels()[-1]
        .get_text()
        .startswith(result.differential_abundance.sort_values("p_value")["cell_type"].iloc[0])
    )
    ax = pl.cohort_composition(result)
    heights = np.array([p.get_height() for p in ax.patches]).reshape(len(result.cell_types), -1)
    np.testing.assert_allclose(heights.sum(axis=0), 1.0)
    with pytest.raises(InputError, match="condition='nope'"):
        pl.cohort_volcano(result, condition="nope")


def test_save_figures_and_report_embeds_them(result, tmp_path: Path) -> None:
    written = pl.save_cohort_figures(result, tmp_path, formats=("png",))
    assert set(written) == {
        "cohort_colocalization",
        "cohort_volcano",
        "cohort_forest_colocalization",
        "cohort_forest_abundance",
        "cohort_composition",
    }
    html = render_cohort_report(result, figures_dir=tmp_path)
    assert html.count("data:image/png;base64,") == 5
    assert 'id="coloc-table"' in html and "Differential abundance" in html
    assert "http://" not in html and "https://" not in html
