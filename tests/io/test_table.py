from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import read, read_table


def _frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"cell_id": [f"c{i}" for i in range(n)], "x": rng.uniform(0, 100, n), "y": rng.uniform(0, 100, n)}
    )
    for g in ("CD3E", "MS4A1", "EPCAM"):
        frame[g] = rng.poisson(0.5, n)
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".csv.gz", ".parquet", ".txt"])
def test_reads_every_table_format_to_exact_values(tmp_path: Path, suffix: str) -> None:
    frame = _frame()
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix in (".tsv", ".txt") else ",", index=False)
    adata = read_table(path, modality="rna", pixel_size_um=0.5)
    assert list(adata.obs_names) == list(frame["cell_id"])
    assert list(adata.var_names) == ["CD3E", "MS4A1", "EPCAM"]
    X = adata.X.toarray() if sp.issparse(adata.X) else adata.X
    np.testing.assert_array_equal(X, frame[["CD3E", "MS4A1", "EPCAM"]].to_numpy(np.float32))
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], frame[["x", "y"]].to_numpy() * 0.5)
    assert adata.uns[Keys.PROVENANCE]["pixel_size_um"] == 0.5


def test_pandas_index_column_and_no_id_column(tmp_path: Path) -> None:
    frame = _frame().set_index("cell_id")
    frame.to_csv(tmp_path / "a.csv")  # first header cell empty, as pandas writes it
    assert list(read_table(tmp_path / "a.csv").obs_names) == list(frame.index)
    frame.reset_index(drop=True).to_csv(tmp_path / "b.csv", index=False)
    assert list(read_table(tmp_path / "b.csv").obs_names) == [f"cell_{i}" for i in range(6)]


def test_fov_and_label_columns_go_to_obs(tmp_path: Path) -> None:
    frame = _frame()
    frame["fov"] = ["a", "a", "a", "b", "b", "b"]
    frame["cell_type"] = ["T"] * 6
    frame.to_csv(tmp_path / "t.csv", index=False)
    adata = read_table(tmp_path / "t.csv")
    assert list(adata.obs[Keys.FOV]) == list(frame["fov"])
    assert "cell_type" in adata.obs
    assert "fov" not in adata.var_names and "cell_type" not in adata.var_names


def test_sparse_rna_dense_protein(tmp_path: Path) -> None:
    frame = _frame(50)
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert sp.issparse(read(tmp_path / "t.csv", "Visium").X)
    assert isinstance(read(tmp_path / "t.csv", "codex").X, np.ndarray)


def test_seed_mibi_centroid_spelling(tmp_path: Path) -> None:
    frame = _frame().rename(columns={"x": "CentroidX", "y": "CentroidY"})
    frame.to_csv(tmp_path / "m.txt", sep="\t", index=False)
    adata = read(tmp_path / "m.txt", "MIBI")
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL][:, 0], frame["CentroidX"])


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.drop(columns=["x"]), r"no 'x' coordinate column; columns are"),
        (lambda f: f.drop(columns=["x", "y"]), r"no 'x' / 'y' coordinate column"),
        (
            lambda f: f.assign(CD3E=f["CD3E"].astype(object).where(f.index != 2, "high")),
            r"column 'CD3E' has non-numeric values \(e.g. 'high' in data row 3\)",
        ),
        (
            lambda f: f.assign(CD3E=f["CD3E"].where(f.index != 1, np.nan)),
            r"column 'CD3E' has 1 missing \(NaN\) or infinite values",
        ),
        (
            lambda f: f.assign(MS4A1=f["MS4A1"].where(f.index != 1, -2)),
            r"column 'MS4A1' has 1 negative values \(min -2\)",
        ),
        (
            lambda f: f.assign(cell_id=["c0", "c0", "c2", "c3", "c4", "c5"]),
            r"2 duplicate ids|1 duplicate ids in column 'cell_id' \(e.g. 'c0'\)",
        ),
        (lambda f: f.assign(x=f["x"].where(f.index != 0, np.nan)), r"1 rows have missing or infinite coordinates"),
        (lambda f: f[["cell_id", "x", "y"]], r"no feature columns"),
        (lambda f: f.iloc[:0], r"has a header but no rows"),
    ],
)
def test_bad_tables_give_one_line_errors(tmp_path: Path, mutate, match: str) -> None:
    path = _write(tmp_path, mutate(_frame()))
    with pytest.raises(InputError, match=match) as info:
        read_table(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_empty_file_missing_file_folder_and_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(InputError, match="the file is empty"):
        read(tmp_path / "e.csv")
    with pytest.raises(InputError, match="no such file"):
        read(tmp_path / "missing.csv")
    with pytest.raises(InputError, match=r"not a complete Xenium output; missing 2 file\(s\)"):
        read(tmp_path, "Xenium")
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(InputError, match=r"unsupported file type '.xlsx'"):
        read(tmp_path / "x.xlsx")


def test_unknown_platform_and_bad_pixel_size(tmp_path: Path) -> None:
    path = _write(tmp_path, _frame(), "ok.csv")
    with pytest.raises(InputError, match=r"platform='Visum' is not a known platform; allowed"):
        read(path, "Visum")
    with pytest.raises(InputError, match=r"pixel_size_um must be a finite number > 0, got -1"):
        read(path, pixel_size_um=-1)


def test_h5ad_round_trip_and_coordinates_from_obs(tmp_path: Path) -> None:
    adata = read_table(_write(tmp_path, _frame(), "ok.csv"))
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = read(tmp_path / "a.h5ad", "xenium")
    np.testing.assert_allclose(back.obsm[Keys.SPATIAL], adata.obsm[Keys.SPATIAL])
    del adata.obsm[Keys.SPATIAL]
    adata.write_h5ad(tmp_path / "nocoords.h5ad")
    with pytest.raises(InputError, match=r"no coordinates: neither obsm\['spatial'\]"):
        read(tmp_path / "nocoords.h5ad")
    (tmp_path / "broken.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable .h5ad file"):
        read(tmp_path / "broken.h5ad")


def test_ark_cell_table_with_index_written_twice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # what ark's own repository holds: pandas wrote its index on two round trips, the first header cell empty
    text = ",Unnamed: 0,cell_size,CD45,CD8,x,y\n0,0,169,0.5,0.0,10.0,20.0\n1,1,120,0.25,2.0,30.0,40.0\n"
    (tmp_path / "cell_table.csv").write_text(text)
    with caplog.at_level("INFO", logger="spatialmultiomics"):
        adata = read_table(tmp_path / "cell_table.csv", modality="protein")
    assert list(adata.var_names) == ["cell_size", "CD45", "CD8"]
    np.testing.assert_array_equal(adata.X, [[169, 0.5, 0.0], [120, 0.25, 2.0]])
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[10.0, 20.0], [30.0, 40.0]])
    assert adata.uns[Keys.PROVENANCE]["ignored_columns"] == ["Unnamed: 0", "Unnamed: 0.1"]
    assert "dropped 2 stray index column(s)" in caplog.text


def test_scimap_x_position_and_codex_channel_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # scimap's CyCIF example spells the centroids X_position / Y_position; CODEX toolkits name channels
    # "<marker> - <description>:Cyc_<c>_ch_<k>"
    frame = pd.DataFrame(
        {
            "CellID": ["c1", "c2"],
            "X_position": [100.0, 200.0],
            "Y_position": [5.0, 6.0],
            "CD8 - cytotoxic T cells:Cyc_3_ch_2": [1.5, 0.0],
            "CD4 - helper T cells:Cyc_2_ch_3": [0.0, 2.5],
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    with caplog.at_level("INFO", logger="spatialmultiomics"):
        adata = read_table(tmp_path / "t.csv", modality="protein", pixel_size_um=0.5)
    assert list(adata.var_names) == ["CD8", "CD4"]
    assert list(adata.var["original_name"]) == list(frame.columns[3:])
    assert list(adata.var["channel"]) == ["Cyc_3_ch_2", "Cyc_2_ch_3"]
    np.testing.assert_array_equal(adata.X, [[1.5, 0.0], [0.0, 2.5]])
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[50.0, 2.5], [100.0, 3.0]])
    assert "'X_position' / 'Y_position' taken as units (unstated) x pixel_size_um=0.5" in caplog.text


def test_micrometre_and_pixel_coordinate_names_are_stated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frame = pd.DataFrame({"Centroid X µm": [1.0, 2.0], "Centroid Y µm": [3.0, 4.0], "CD3": [1.0, 0.0]})
    frame.to_csv(tmp_path / "um.csv", index=False)
    adata = read_table(tmp_path / "um.csv", modality="protein")
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[1.0, 3.0], [2.0, 4.0]])
    assert adata.uns[Keys.PROVENANCE]["coordinate_unit"] == "µm"
    frame.columns = ["x_px", "y_px", "CD3"]
    frame.to_csv(tmp_path / "px.csv", index=False)
    with caplog.at_level("WARNING", logger="spatialmultiomics"):
        adata = read_table(tmp_path / "px.csv", modality="protein")
    assert "in pixels by their names and pixel_size_um=1" in caplog.text
    assert adata.uns[Keys.PROVENANCE]["coordinate_unit"] == "pixels"
