from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import detect_platform, halo, read


def _object_data(image: str, n: int, seed: int) -> pd.DataFrame:
    """HALO HighPlex FL object data: image, region, object id, bounding box (pixels), per-dye classifications and
    ``<marker> <Compartment> Intensity`` columns, areas."""
    rng = np.random.default_rng(seed)
    x0, y0 = rng.integers(0, 9000, n), rng.integers(0, 9000, n)
    frame = pd.DataFrame(
        {
            "Image Location": image,
            "Analysis Region": "Layer 1",
            "Algorithm Name": "HighPlex FL v4.1",
            "Object Id": np.arange(n),
            "XMin": x0,
            "XMax": x0 + rng.integers(8, 20, n),
            "YMin": y0,
            "YMax": y0 + rng.integers(8, 20, n),
        }
    )
    for marker in ("DAPI", "CD8 (Opal 540)", "PanCK (Opal 690)"):
        name = marker.split(" ")[0]
        frame[f"{name} Positive Classification"] = rng.integers(0, 2, n)
        for comp in ("Nucleus", "Cytoplasm", "Cell"):
            frame[f"{marker} {comp} Intensity"] = rng.gamma(2, 5, n).round(4)
    frame["Cell Area (µm²)"] = rng.uniform(20, 200, n).round(2)
    return frame


def test_halo_object_data_to_exact_values(tmp_path: Path) -> None:
    a, b = _object_data("\\\\server\\scan1.qptiff", 5, 0), _object_data("\\\\server\\scan2.qptiff", 3, 1)
    both = pd.concat([a, b], ignore_index=True)
    both.to_csv(tmp_path / "objects.csv", index=False)
    assert detect_platform(tmp_path / "objects.csv") == ["halo"]
    adata = read(tmp_path / "objects.csv", pixel_size_um=0.4977)
    assert list(adata.var_names) == ["DAPI", "CD8", "PanCK"]
    assert list(adata.var["channel"]) == ["", "Opal 540", "Opal 690"]
    np.testing.assert_allclose(adata.X[:, 1], both["CD8 (Opal 540) Cell Intensity"], rtol=1e-6)
    centres = np.column_stack([(both["XMin"] + both["XMax"]) / 2, (both["YMin"] + both["YMax"]) / 2]) * 0.4977
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], centres)
    # object ids restart per image: <image>_<id>, each image its own frame
    assert adata.obs_names[5] == "\\\\server\\scan2.qptiff_0"
    assert adata.obs[Keys.FOV].nunique() == 2
    assert "CD8 Positive Classification" in adata.obs and "XMin" not in adata.obs
    nuc = halo(tmp_path / "objects.csv", compartment="Nucleus")
    np.testing.assert_allclose(nuc.X[:, 2], both["PanCK (Opal 690) Nucleus Intensity"], rtol=1e-6)
    np.testing.assert_allclose(nuc.obsm[Keys.SPATIAL], centres / 0.4977 * 0.5)  # default 0.5 µm per pixel
    with pytest.raises(InputError, match=r"no 'Membrane' 'Mean' columns"):
        halo(tmp_path / "objects.csv", compartment="Membrane")
