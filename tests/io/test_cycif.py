from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import cycif, read

FOLDER = "cycif_mcmicro_exemplar001_scimap"
QUANT = "exemplar-001--unmicst_cell.csv"
MARKERS = ["DNA_6", "ELANE", "CD57", "CD45", "DNA_7", "CD11B", "SMA", "CD16", "DNA_8", "ECAD", "FOXP3", "NCAM"]


def test_mcmicro_exemplar_to_exact_values(shared_data: Path) -> None:
    path = shared_data / FOLDER / QUANT
    table = pd.read_csv(path)
    adata = cycif(path)
    assert adata.shape == (11201, 12)
    assert list(adata.var_names) == MARKERS
    cell = adata["2"]
    row = table.set_index("CellID").loc[2]
    assert cell.X[0, MARKERS.index("ELANE")] == pytest.approx(row["ELANE"], rel=1e-6)
    assert row["ELANE"] == pytest.approx(1124.7282608695652)
    np.testing.assert_allclose(cell.obsm[Keys.SPATIAL][0], [1107.1739130434783 * 0.65, 665.8695652173913 * 0.65])
    assert cell.obs["Area"].iloc[0] == 92
    assert set(adata.obs.columns) >= {"Area", "MajorAxisLength", "Eccentricity", "Solidity", "Extent", "Orientation"}
    np.testing.assert_allclose(adata.X, table[MARKERS].to_numpy(np.float32), rtol=1e-6)
    # markers.csv next to the table annotates the markers
    assert list(adata.var["cycle_number"][:4]) == [6, 6, 6, 6]
    assert list(adata.var["Filter"][:2]) == ["DAPI", "FITC"]
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["pixel_size_um"] == 0.65
    assert {Path(p).name for p in prov["files"]} == {QUANT, "markers.csv"}
    # the folder is detected as CyCIF, and read() with platform='CyCIF' on the table uses the vendor reader
    np.testing.assert_array_equal(read(shared_data / FOLDER).X, adata.X)
    again = read(path, "cycif", pixel_size_um=1.0)
    np.testing.assert_allclose(again.obsm[Keys.SPATIAL][1], [1107.1739130434783, 665.8695652173913])


def test_mcmicro_project_with_two_images(shared_data: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "quantification").mkdir(parents=True)
    shutil.copy(shared_data / FOLDER / "markers.csv", project)
    table = pd.read_csv(shared_data / FOLDER / QUANT)
    table.iloc[:10].to_csv(project / "quantification" / "imageA--unmicst_cell.csv", index=False)
    table.iloc[10:25].to_csv(project / "quantification" / "imageB--unmicst_cell.csv", index=False)
    adata = read(project)
    assert adata.n_obs == 25
    assert adata.obs[Keys.FOV].value_counts().to_dict() == {"imageB--unmicst_cell": 15, "imageA--unmicst_cell": 10}
    assert adata.uns[Keys.PROVENANCE]["platform"] == "cycif"
    assert "cycle_number" in adata.var


def test_bad_mcmicro_inputs(shared_data: Path, tmp_path: Path) -> None:
    table = pd.read_csv(shared_data / FOLDER / QUANT).iloc[:200]
    table.rename(columns={"Y_centroid": "Y_Centroid_px"}).to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(InputError, match=r"lacks column\(s\) Y_centroid \('Y_centroid'\); its columns are"):
        cycif(tmp_path / "q.csv")
    bad = table.copy()
    bad.loc[5, "CellID"] = bad.loc[4, "CellID"]
    bad.to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(InputError, match=r"1 duplicate ids in column 'CellID' \(e.g. '5'\)"):
        cycif(tmp_path / "q.csv")
    bad = table.copy()
    bad.loc[3, "CD45"] = np.nan
    bad.to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(InputError, match=r"column 'CD45' has 1 missing \(NaN\) or infinite values"):
        cycif(tmp_path / "q.csv")
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(InputError, match="no MCMICRO quantification table"):
        cycif(tmp_path / "nothing_here")
    with pytest.raises(InputError, match=r"markers_file='.*missing.csv': no such file"):
        cycif(shared_data / FOLDER / QUANT, markers_file=tmp_path / "missing.csv")
