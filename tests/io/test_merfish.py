from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import merfish, read


def _dense(adata) -> np.ndarray:
    return adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)


def test_merscope_vpt_smallset_to_exact_values(shared_data: Path) -> None:
    folder = shared_data / "merscope_vpt_tests" / "smallset"
    adata = merfish(folder)
    counts = pd.read_csv(folder / "cell_by_gene.csv", dtype={"cell": str}).set_index("cell")
    meta = pd.read_csv(folder / "cell_metadata.csv", dtype={"EntityID": str}).set_index("EntityID")
    assert adata.shape == (997, 130) == counts.shape
    # 19-digit EntityIDs survive exactly (no float round trip)
    assert list(adata.obs_names[:2]) == ["2317032900000100001", "2317032900000100002"]
    cell = counts.index[1]
    for gene in ("THBS1", "AFF4", "EGFR"):
        assert _dense(adata[cell, gene])[0, 0] == counts.loc[cell, gene]
    assert counts.loc[cell, "AFF4"] == 6
    np.testing.assert_array_equal(_dense(adata), counts.to_numpy(np.float32))
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], meta.loc[adata.obs_names, ["center_x", "center_y"]].to_numpy())
    np.testing.assert_allclose(adata[cell].obsm[Keys.SPATIAL][0], [70.38284004828098, 3.7931618605085164])
    # the empty fov column is the imaging tile, not a separate frame
    assert Keys.FOV not in adata.obs
    assert adata.obs["tile_fov"].isna().all()
    assert adata.obs.loc[cell, "volume"] == pytest.approx(2662.348321370409)
    assert "control_counts" not in adata.obsm
    assert adata.uns[Keys.PROVENANCE]["version"] == "vpt (EntityID)"


def test_liver94_blanks_are_kept_apart(shared_data: Path) -> None:
    folder = shared_data / "merscope_vpt_tests" / "liver94"
    counts = pd.read_csv(folder / "cell_by_gene.csv", dtype={"cell": str}).set_index("cell")
    blanks = [c for c in counts.columns if c.startswith("Blank-")]
    assert len(blanks) == 15
    # no cell_metadata.csv: refused by default, naming the missing file
    with pytest.raises(InputError, match=r"missing 1 file\(s\): cell_metadata.csv"):
        merfish(folder)
    adata = merfish(folder, require_coordinates=False)
    assert adata.shape == (94, 274 - 15)
    assert not any(v.startswith("Blank") for v in adata.var_names)
    assert adata.uns["control_features"]["name"] == blanks
    np.testing.assert_array_equal(adata.obsm["control_counts"].toarray(), counts[blanks].to_numpy(np.float32))
    genes = [c for c in counts.columns if c not in blanks]
    np.testing.assert_array_equal(_dense(adata), counts[genes].to_numpy(np.float32))
    # float-typed counts are read as numbers
    assert float(adata.X.sum()) == float(counts[genes].to_numpy().sum())
    assert Keys.SPATIAL not in adata.obsm


def test_cell_by_gene_file_and_merscope_index_metadata(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "merscope_vpt_tests" / "smallset"
    shutil.copy(src / "cell_by_gene.csv", tmp_path)
    meta = pd.read_csv(src / "cell_metadata.csv", dtype={"EntityID": str}).set_index("EntityID")
    meta.index.name = None  # MERSCOPE writes the cell id as an unnamed index column
    meta.iloc[::-1].to_csv(tmp_path / "cell_metadata.csv")  # other row order: joined on ids
    adata = read(tmp_path / "cell_by_gene.csv")
    reference = merfish(src)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], reference.obsm[Keys.SPATIAL])
    assert adata.uns[Keys.PROVENANCE]["version"] == "MERSCOPE cell_metadata.csv"


def test_plain_merfish_table_with_blanks(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "cell_id": ["a", "b", "c"],
            "x": [1.0, 2.0, 3.0],
            "y": [4.0, 5.0, 6.0],
            "Gad1": [0, 3, 1],
            "Blank-01": [1, 0, 0],
        }
    )
    frame.to_csv(tmp_path / "merfish.csv", index=False)
    adata = merfish(tmp_path / "merfish.csv")
    assert list(adata.var_names) == ["Gad1"]
    np.testing.assert_array_equal(_dense(adata)[:, 0], [0, 3, 1])
    np.testing.assert_array_equal(adata.obsm["control_counts"].toarray()[:, 0], [1, 0, 0])
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], frame[["x", "y"]].to_numpy())
    assert adata.uns[Keys.PROVENANCE]["reader"] == "spatialmultiomics.io.merfish"
    # through the dispatcher with platform MERFISH (the pipeline's path) the blanks are kept apart too
    via_read = read(tmp_path / "merfish.csv", "MERFISH", modality="rna")
    assert list(via_read.var_names) == ["Gad1"]
    assert via_read.uns["control_features"]["name"] == ["Blank-01"]


def test_bad_merscope_inputs(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "merscope_vpt_tests" / "smallset"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        InputError, match=r"missing 2 file\(s\): cell_by_gene.csv or cell_by_gene\*.csv; cell_metadata.csv"
    ):
        merfish(empty)
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(src / "cell_by_gene.csv", folder)
    meta = pd.read_csv(src / "cell_metadata.csv", dtype={"EntityID": str})
    meta.rename(columns={"center_x": "centre_x"}).to_csv(folder / "cell_metadata.csv", index=False)
    with pytest.raises(
        InputError,
        match=r"lacks column\(s\) x \('center_x'\); its columns are .*did you mean 'centre_x' for 'center_x'",
    ):
        merfish(folder)
    meta.iloc[1:].to_csv(folder / "cell_metadata.csv", index=False)
    with pytest.raises(
        InputError, match=r"1 of the 997 cells of cell_by_gene.csv have no metadata row \(e.g. '2317032900000100001'\)"
    ):
        merfish(folder)
    meta.to_csv(folder / "cell_metadata.csv", index=False)
    counts = pd.read_csv(src / "cell_by_gene.csv", dtype={"cell": str})
    counts.loc[1, "cell"] = counts.loc[0, "cell"]
    counts.to_csv(folder / "cell_by_gene.csv", index=False)
    with pytest.raises(InputError, match=r"1 duplicate ids in column 'cell'"):
        merfish(folder)
    counts = pd.read_csv(src / "cell_by_gene.csv", dtype={"cell": str})
    counts["EGFR"] = counts["EGFR"].astype(object)
    counts.loc[990, "EGFR"] = "many"
    counts.to_csv(folder / "cell_by_gene.csv", index=False)
    with pytest.raises(InputError, match=r"column 'EGFR' has non-numeric values \(e.g. 'many' in data row 991\)"):
        merfish(folder)
