from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spatialmultiomics import InputError, pl
from spatialmultiomics._keys import Keys

PNG = b"\x89PNG\r\n\x1a\n"


def test_every_applicable_figure_written_as_png_and_svg(results, tmp_path: Path) -> None:
    written = pl.save_figures(results, tmp_path / "figures")
    names = ["spatial_cell_types", "factor_loadings", "colocalization", "niches", "factor_maps"]
    assert list(written) == names
    for name in names:
        png, svg = tmp_path / "figures" / f"{name}.png", tmp_path / "figures" / f"{name}.svg"
        assert png.read_bytes()[:8] == PNG
        assert svg.read_text()[:200].lstrip().startswith("<?xml")
    assert "Tumour" in (tmp_path / "figures" / "spatial_cell_types.svg").read_text()  # text kept as text


def test_missing_results_are_skipped_and_pdf(results, tmp_path: Path) -> None:
    del results.uns[Keys.nhood()]
    del results.obsm[Keys.NMF]
    del results.obs[Keys.NICHE_TYPE]
    results.uns[Keys.NMF_UNS]["k_selection"] = {"k": 3, "k_grid": np.array([2, 3]), "error": np.array([0.5, 0.4])}
    written = pl.save_figures(results, tmp_path, formats=("pdf",))
    assert list(written) == ["spatial_cell_types", "factor_loadings", "k_selection"]
    assert (tmp_path / "k_selection.pdf").read_bytes()[:5] == b"%PDF-"


def test_bad_format(results, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"formats=\['jpg'\]: allowed formats are 'png', 'svg' and 'pdf'"):
        pl.save_figures(results, tmp_path, formats=("jpg",))


def test_a_broken_figure_does_not_stop_the_others(results, tmp_path: Path, caplog) -> None:
    results.uns[Keys.nhood()]["zscore"] = "not an array"
    del results.obsm[Keys.NMF]
    written = pl.save_figures(results, tmp_path, formats=("png",))
    assert list(written) == ["spatial_cell_types", "factor_loadings", "niches"]
    assert "figure colocalization could not be drawn" in caplog.text
