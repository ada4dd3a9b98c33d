from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import imc, read

STEINBOCK = "imc_steinbock_imcRtools_mock"


def test_steinbock_folder_to_exact_values(shared_data: Path) -> None:
    folder = shared_data / STEINBOCK
    adata = imc(folder)
    images = sorted(p.stem for p in (folder / "intensities").glob("*.csv"))
    assert len(images) == 15
    assert adata.shape == (404, 5)
    panel = pd.read_csv(folder / "panel.csv")
    assert list(adata.var_names) == list(panel["name"])  # channel names with spaces kept
    assert list(adata.var["channel"]) == list(panel["channel"])
    # a given cell, read independently and joined on Object
    image = "20210305_NE_mockData3_002"
    inten = pd.read_csv(folder / "intensities" / f"{image}.csv").set_index("Object")
    props = pd.read_csv(folder / "regionprops" / f"{image}.csv").set_index("Object")
    obj = int(inten.index[4])
    cell = adata[f"{image}_{obj}"]
    np.testing.assert_allclose(cell.X[0], inten.loc[obj].to_numpy(np.float32))
    assert cell.X[0, list(adata.var_names).index("Cytokeratin 5")] == pytest.approx(inten.loc[obj, "Cytokeratin 5"])
    np.testing.assert_allclose(cell.obsm[Keys.SPATIAL][0], [props.loc[obj, "centroid-1"], props.loc[obj, "centroid-0"]])
    assert cell.obs["area"].iloc[0] == props.loc[obj, "area"]
    # one image = one FOV
    counts = adata.obs[Keys.FOV].value_counts()
    assert len(counts) == 15
    for img in images[:3]:
        assert counts[img] == len(pd.read_csv(folder / "intensities" / f"{img}.csv"))
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["pixel_size_um"] == 1.0
    assert prov["n_images"] == 15
    assert read(folder).shape == (404, 5)


def test_plain_per_cell_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "ImageNumber": [1, 1, 2],
            "ObjectNumber": [1, 2, 1],
            "Location_Center_X": [10.0, 20.0, 5.0],
            "Location_Center_Y": [3.0, 4.0, 5.0],
            "AreaShape_Area": [30, 40, 50],
            "Intensity_MeanIntensity_CD3": [0.1, 0.2, 0.3],
            "Intensity_MeanIntensity_CD20": [1.0, 0.0, 0.5],
        }
    )
    frame.to_csv(tmp_path / "cells.csv", index=False)
    adata = read(tmp_path / "cells.csv", "IMC")  # a CellProfiler export goes to the IMC reader
    assert list(adata.var_names) == ["Intensity_MeanIntensity_CD3", "Intensity_MeanIntensity_CD20"]
    assert list(adata.obs_names) == ["1_1", "1_2", "2_1"]
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], frame[["Location_Center_X", "Location_Center_Y"]].to_numpy())
    assert "AreaShape_Area" in adata.obs
    assert adata.obs[Keys.FOV].nunique() == 2


def test_bad_steinbock_folders(shared_data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"missing 2 file\(s\): intensities; regionprops"):
        imc(empty)
    folder = tmp_path / "steinbock"
    shutil.copytree(shared_data / STEINBOCK, folder)
    for name in ("20210305_NE_mockData1_001.csv", "20210305_NE_mockData2_003.csv"):
        (folder / "regionprops" / name).unlink()
    with pytest.raises(
        InputError,
        match=r"missing 2 regionprops table\(s\) matching intensities/: \['20210305_NE_mockData1_001.csv', '20210305_NE_mockData2_003.csv'\]",
    ):
        imc(folder)
    shutil.copy(shared_data / STEINBOCK / "regionprops" / "20210305_NE_mockData1_001.csv", folder / "regionprops")
    shutil.copy(shared_data / STEINBOCK / "regionprops" / "20210305_NE_mockData2_003.csv", folder / "regionprops")
    props = pd.read_csv(folder / "regionprops" / "20210305_NE_mockData1_001.csv")
    props.iloc[1:].to_csv(folder / "regionprops" / "20210305_NE_mockData1_001.csv", index=False)
    with pytest.raises(
        InputError, match=r"objects of the intensities table have no regionprops row \(e.g. Object '1'\)"
    ):
        imc(folder)
    props.rename(columns={"centroid-0": "centroid_0"}).to_csv(
        folder / "regionprops" / "20210305_NE_mockData1_001.csv", index=False
    )
    with pytest.raises(InputError, match=r"regionprops table lacks column\(s\) centroid-0 .*did you mean 'centroid_0'"):
        imc(folder)
