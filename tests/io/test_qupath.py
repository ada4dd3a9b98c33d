from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import detect_platform, qupath, read


def _export(n: int = 6, *, unit: str = "µm", seed: int = 0) -> pd.DataFrame:
    """QuPath 0.4 ``Export measurements`` (cells): image, object id, classification, centroids, shape and
    ``<Compartment>: <channel>: <statistic>`` intensity features."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "Image": "slide1.qptiff",
            "Object ID": [f"a1b2c3d4-{i:04d}" for i in range(n)],
            "Object type": "Cell",
            "Name": "",
            "Classification": rng.choice(["CD8", "Tumor", ""], n),
            "Parent": "Annotation",
            "ROI": "Polygon",
            f"Centroid X {unit}": rng.uniform(0, 2000, n).round(2),
            f"Centroid Y {unit}": rng.uniform(0, 2000, n).round(2),
            "Nucleus: Area µm^2": rng.uniform(10, 60, n).round(2),
            "Cell: Area µm^2": rng.uniform(40, 200, n).round(2),
        }
    )
    for comp in ("Nucleus", "Cytoplasm", "Membrane", "Cell"):
        for marker in ("DAPI", "CD8", "PanCK"):
            for stat in ("Mean", "Median", "Min", "Max", "Std.Dev."):
                frame[f"{comp}: {marker}: {stat}"] = rng.gamma(2, 10, n).round(4)
    return frame


def test_qupath_export_to_exact_values(tmp_path: Path) -> None:
    frame = _export()
    frame.to_csv(tmp_path / "measurements.tsv", sep="\t", index=False)
    assert detect_platform(tmp_path / "measurements.tsv") == ["qupath"]
    adata = read(tmp_path / "measurements.tsv")
    assert adata.uns[Keys.PROVENANCE]["platform"] == "qupath"
    assert list(adata.var_names) == ["DAPI", "CD8", "PanCK"]
    assert list(adata.var["original_name"]) == ["Cell: DAPI: Mean", "Cell: CD8: Mean", "Cell: PanCK: Mean"]
    np.testing.assert_allclose(adata.X, frame[["Cell: DAPI: Mean", "Cell: CD8: Mean", "Cell: PanCK: Mean"]], rtol=1e-6)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], frame[["Centroid X µm", "Centroid Y µm"]])
    assert list(adata.obs_names) == list(frame["Object ID"])
    assert (adata.obs["Classification"] == "CD8").sum() == (frame["Classification"] == "CD8").sum()
    assert "Nucleus: Area µm^2" in adata.obs and "Cell: CD8: Max" not in adata.obs
    nuc = qupath(tmp_path / "measurements.tsv", compartment="Nucleus", statistic="Std.Dev.")
    np.testing.assert_allclose(nuc.X[:, 1], frame["Nucleus: CD8: Std.Dev."], rtol=1e-6)


def test_uncalibrated_pixels_use_the_pixel_size(tmp_path: Path) -> None:
    frame = _export(unit="px")
    frame.to_csv(tmp_path / "m.csv", index=False)
    adata = qupath(tmp_path / "m.csv", pixel_size_um=0.325)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], frame[["Centroid X px", "Centroid Y px"]] * 0.325)
    default = qupath(tmp_path / "m.csv")
    np.testing.assert_allclose(default.obsm[Keys.SPATIAL], frame[["Centroid X px", "Centroid Y px"]] * 0.5)
    with pytest.raises(InputError, match=r"no 'Cell' 'Sum' columns; the file has compartments"):
        qupath(tmp_path / "m.csv", statistic="Sum")
