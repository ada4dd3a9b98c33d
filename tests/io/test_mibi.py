from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import mibi, read

ARK = "mibi_ark_cell_table_slice/cell_table_size_normalized.csv"


def test_ark_cell_table_to_exact_values(shared_data: Path) -> None:
    path = shared_data / ARK
    table = pd.read_csv(path)
    adata = mibi(path)
    markers = list(table.columns[table.columns.get_loc("cell_size") + 1 : table.columns.get_loc("label")])
    assert len(markers) == 43
    assert adata.shape == (300, 43)
    assert list(adata.var_names) == markers
    # a given cell: FOV 2, label 12
    row = table[(table["fov"] == 2) & (table["label"] == 12)].iloc[0]
    cell = adata["2_12"]
    assert cell.X[0, markers.index("CD45")] == pytest.approx(row["CD45"], rel=1e-6)
    assert row["CD45"] == pytest.approx(0.630008, abs=1e-6)
    px = 800 / 2048
    np.testing.assert_allclose(cell.obsm[Keys.SPATIAL][0], [row["centroid-1"] * px, row["centroid-0"] * px])
    np.testing.assert_allclose(cell.obsm[Keys.SPATIAL][0], [383 * px, 819 * px])
    np.testing.assert_allclose(adata.X, table[markers].to_numpy(np.float32), rtol=1e-6)
    # FOVs kept apart, labels repeat across FOVs -> ids <fov>_<label>
    assert adata.obs[Keys.FOV].value_counts().to_dict() == {"1": 150, "2": 150}
    assert list(adata.obs_names[:2]) == ["1_2", "1_3"]
    # stray index columns ignored, metadata kept
    assert not any(c.startswith("Unnamed") for c in adata.obs.columns)
    assert adata.obs.loc["2_12", "cell_meta_cluster"] == row["cell_meta_cluster"]
    assert adata.obs.loc["2_12", "cell_size"] == row["cell_size"]
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["version"] == "ark-analysis cell_table"
    assert prov["ignored_columns"] == ["Unnamed: 0.1", "Unnamed: 0"]
    # pixel size as a parameter; the folder and read() give the same
    half = mibi(path, pixel_size_um=0.5)
    np.testing.assert_allclose(half["2_12"].obsm[Keys.SPATIAL][0], [383 * 0.5, 819 * 0.5])
    np.testing.assert_allclose(read(path.parent).obsm[Keys.SPATIAL], adata.obsm[Keys.SPATIAL])
    via_read = read(path, "MIBI", modality="protein", pixel_size_um=0.5)
    np.testing.assert_allclose(via_read.obsm[Keys.SPATIAL], half.obsm[Keys.SPATIAL])


def test_seed_tab_separated_matrix(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "SampleID": [1, 1, 2],
            "cellLabelInImage": [5, 6, 5],
            "CentroidX": [10.0, 20.0, 30.0],
            "CentroidY": [1.0, 2.0, 3.0],
            "cellSize": [100, 120, 90],
            "CD3": [0.5, 0.0, 1.5],
            "CD8": [0.0, 2.0, 0.1],
        }
    )
    frame.to_csv(tmp_path / "mibi.txt", sep="\t", index=False)
    adata = mibi(tmp_path / "mibi.txt", pixel_size_um=0.5)
    assert list(adata.var_names) == ["CD3", "CD8"]
    assert list(adata.obs_names) == ["1_5", "1_6", "2_5"]
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], frame[["CentroidX", "CentroidY"]].to_numpy() * 0.5)
    np.testing.assert_array_equal(adata.obs["cellSize"], [100, 120, 90])
    assert adata.uns[Keys.PROVENANCE]["version"].startswith("single-cell matrix")


def test_bad_mibi_inputs(shared_data: Path, tmp_path: Path) -> None:
    table = pd.read_csv(shared_data / ARK)
    bad = table.copy()
    bad.loc[1, "label"] = bad.loc[0, "label"]
    bad.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match=r"1 duplicate ids in column 'label' \(e.g. '1_2'\)"):
        mibi(tmp_path / "dup.csv")
    bad = table.drop(columns=["centroid-0"])
    bad.to_csv(tmp_path / "nocoord.csv", index=False)
    with pytest.raises(InputError, match=r"MIBI table lacks column\(s\) y \('centroid-0'.*its columns are"):
        mibi(tmp_path / "nocoord.csv")
    bad = table.astype({"CD45": object})
    bad.loc[7, "CD45"] = "n/a?"
    bad.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(InputError, match=r"column 'CD45' has non-numeric values \(e.g. 'n/a\?' in data row 8\)"):
        mibi(tmp_path / "text.csv")
    with pytest.raises(InputError, match=r"pixel_size_um must be a finite number > 0, got 0"):
        mibi(shared_data / ARK, pixel_size_um=0)
    with pytest.raises(InputError, match="no ark cell table"):
        mibi(_empty_dir(tmp_path))


def _empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder
