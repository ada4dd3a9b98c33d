from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import codex, read

PX = 0.377


def _cellseg(n: int = 8, region: int = 1, seed: int = 0) -> pd.DataFrame:
    """A CODEX processor / CellSeg export: ``name:name`` headers and ``marker:Cyc_c_ch_k`` channels."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "cell_id:cell_id": np.arange(1, n + 1),
            "region:region": region,
            "tile_num:tile_num": rng.integers(1, 4, n),
            "x:x": rng.uniform(0, 5000, n).round(1),
            "y:y": rng.uniform(0, 5000, n).round(1),
            "z:z": rng.integers(1, 10, n),
            "size:size": rng.integers(50, 400, n),
            "DAPI:Cyc_1_ch_1": rng.uniform(0, 1000, n),
            "CD45:Cyc_2_ch_2": rng.uniform(0, 1000, n),
            "CD3:Cyc_2_ch_3": rng.uniform(0, 1000, n),
            "PanCK:Cyc_3_ch_2": rng.uniform(0, 1000, n),
        }
    )


def test_cellseg_headers_to_exact_values(tmp_path: Path) -> None:
    frame = pd.concat([_cellseg(region=1), _cellseg(region=2, seed=1)], ignore_index=True)
    frame.to_csv(tmp_path / "codex.csv", index=False)
    adata = read(tmp_path / "codex.csv", "CODEX")
    assert list(adata.var_names) == ["DAPI", "CD45", "CD3", "PanCK"]
    assert list(adata.var["channel"]) == ["Cyc_1_ch_1", "Cyc_2_ch_2", "Cyc_2_ch_3", "Cyc_3_ch_2"]
    assert adata.obs[Keys.FOV].value_counts().to_dict() == {"1": 8, "2": 8}
    # ids repeat across regions -> <region>_<id>
    cell = adata["2_3"]
    row = frame.iloc[8 + 2]
    assert cell.X[0, 1] == pytest.approx(row["CD45:Cyc_2_ch_2"], rel=1e-6)
    np.testing.assert_allclose(cell.obsm[Keys.SPATIAL][0], [row["x:x"] * PX, row["y:y"] * PX])
    assert {"size", "z", "tile_num"} <= set(adata.obs.columns)
    assert adata.uns[Keys.PROVENANCE]["version"].startswith("CellSeg")


@pytest.mark.parametrize(
    ("xname", "yname"),
    [("x", "y"), ("X_centroid", "Y_centroid"), ("X:X", "Y:Y"), ("x:x", "y:y"), ("centroid_x", "centroid_y")],
)
def test_centroid_spellings(tmp_path: Path, xname: str, yname: str) -> None:
    frame = pd.DataFrame(
        {
            "CellID": ["a", "b"],
            xname: [100.0, 200.0],
            yname: [10.0, 20.0],
            "Area": [50, 60],
            "CD4": [1.0, 2.0],
            "CD8": [0.5, 0.0],
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    adata = codex(tmp_path / "t.csv")
    assert list(adata.var_names) == ["CD4", "CD8"]
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[100 * PX, 10 * PX], [200 * PX, 20 * PX]])
    assert list(adata.obs["Area"]) == [50, 60]


def test_standardized_table_stays_in_micrometres_through_read(tmp_path: Path) -> None:
    frame = pd.DataFrame({"cell_id": ["a", "b"], "x": [100.0, 200.0], "y": [10.0, 20.0], "CD4": [1.0, 2.0]})
    frame.to_csv(tmp_path / "proteomics.csv", index=False)
    generic = read(tmp_path / "proteomics.csv", "CODEX")  # the seed's table: already µm
    np.testing.assert_allclose(generic.obsm[Keys.SPATIAL], frame[["x", "y"]].to_numpy())
    assert generic.uns[Keys.PROVENANCE]["reader"] == "spatialmultiomics.io.read_table"
    # an MCMICRO-processed CODEX table is a vendor layout: pixels
    mcmicro = frame.rename(columns={"cell_id": "CellID", "x": "X_centroid", "y": "Y_centroid"}).assign(Area=[5, 6])
    mcmicro.to_csv(tmp_path / "mcmicro.csv", index=False)
    vendor = read(tmp_path / "mcmicro.csv", "CODEX")
    assert vendor.uns[Keys.PROVENANCE]["reader"] == "spatialmultiomics.io.codex"
    np.testing.assert_allclose(vendor.obsm[Keys.SPATIAL], frame[["x", "y"]].to_numpy() * PX)


def test_folder_of_region_tables(tmp_path: Path) -> None:
    folder = tmp_path / "regions"
    folder.mkdir()
    _cellseg(5).to_csv(folder / "reg001_compensated.csv", index=False)
    _cellseg(7, seed=3).to_csv(folder / "reg002_compensated.csv", index=False)
    adata = read(folder)
    assert adata.n_obs == 12
    assert adata.obs[Keys.FOV].value_counts().to_dict() == {"reg002_compensated_1": 7, "reg001_compensated_1": 5}
    assert adata.uns[Keys.PROVENANCE]["platform"] == "codex"


def test_bad_codex_inputs(tmp_path: Path) -> None:
    pd.DataFrame({"CellID": ["a"], "Xc": [1.0], "Yc": [2.0], "CD4": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match=r"CODEX table lacks column\(s\) x \('x' / 'x:x' / 'x_centroid'.*, y \("):
        codex(tmp_path / "t.csv")
    pd.DataFrame({"CellID": ["a"], "x": [1.0], "y": [2.0], "Area": [3]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match="no marker columns found"):
        codex(tmp_path / "t.csv")
    folder = tmp_path / "mixed"
    folder.mkdir()
    _cellseg(3).to_csv(folder / "reg001.csv", index=False)
    _cellseg(3).drop(columns=["CD3:Cyc_2_ch_3"]).to_csv(folder / "reg002.csv", index=False)
    with pytest.raises(InputError, match=r"reg002.csv and reg001.csv have different columns \(\['CD3:Cyc_2_ch_3'\]\)"):
        codex(folder)
    with pytest.raises(InputError, match=r"id_column='nope' is not a column"):
        codex(folder / "reg001.csv", id_column="nope")


def test_toolkit_channel_descriptions_are_cleaned_to_the_marker(tmp_path: Path) -> None:
    # CODEX processing toolkits: "<marker> - <description>:Cyc_<c>_ch_<k>" and a stray pandas index column
    frame = pd.DataFrame(
        {
            "cell_id": [1, 2],
            "x": [10.0, 20.0],
            "y": [1.0, 2.0],
            "CD8 - cytotoxic T cells:Cyc_3_ch_2": [4.0, 0.5],
            "CD20 - B cells:Cyc_4_ch_3": [0.0, 7.0],
        }
    )
    frame.to_csv(tmp_path / "t.csv")  # index written: an unnamed first column of row numbers
    adata = codex(tmp_path / "t.csv")
    assert list(adata.var_names) == ["CD8", "CD20"]
    assert list(adata.var["original_name"]) == list(frame.columns[3:])
    assert list(adata.var["channel"]) == ["Cyc_3_ch_2", "Cyc_4_ch_3"]
    np.testing.assert_array_equal(adata.X, [[4.0, 0.0], [0.5, 7.0]])
    assert "Unnamed: 0" not in adata.obs
    assert adata.uns[Keys.PROVENANCE]["ignored_columns"] == ["Unnamed: 0"]
