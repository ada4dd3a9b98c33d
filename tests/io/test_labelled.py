from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.io import read_labelled_table


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell_id": ["a", "b", "c", "d"],
            "Centroid_X": [0.0, 10.0, 20.0, 30.0],
            "Centroid_Y": [1.0, 2.0, 3.0, 4.0],
            "sample": ["s1", "s1", "s2", "s2"],
            "cluster": [3, 1, np.nan, 3],
            "CD3": [1.0, 2.0, 3.0, 4.0],
        }
    )


def test_table_defaults_detect_columns_and_scale_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    _frame().to_csv(path, index=False)
    adata = read_labelled_table(path, label_key="cluster", pixel_size_um=0.5)
    assert adata.obs_names.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_allclose(adata.obsm["spatial"], [[0, 0.5], [5, 1], [10, 1.5], [15, 2]])
    assert adata.obs["fov"].tolist() == ["s1", "s1", "s2", "s2"]  # 'sample' taken as the FOV column
    labels = adata.obs["cluster"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert pd.isna(labels.iloc[2])  # a missing label stays missing
    assert sorted(labels.cat.categories) == ["1.0", "3.0"]
    assert list(adata.obs.columns) == ["cluster", "fov"]  # nothing else is kept
    assert adata.uns["provenance"]["columns"]["x"] == "Centroid_X"


def test_explicit_columns_single_fov_and_duplicate_ids(tmp_path: Path) -> None:
    frame = _frame().assign(cell_id=["a", "a", "b", "c"], cluster=["T", "B", "T", "B"])
    path = tmp_path / "cells.parquet"
    frame.drop(columns=["sample"]).to_parquet(path)
    adata = read_labelled_table(path, label_key="cluster", x="Centroid_Y", y="Centroid_X")
    assert adata.obs_names.tolist() == ["cell_0", "cell_1", "cell_2", "cell_3"]  # ids not unique: by row
    np.testing.assert_allclose(adata.obsm["spatial"][1], [2.0, 10.0])
    assert adata.obs["fov"].unique().tolist() == ["all"]


def test_h5ad_from_obsm_or_obs_columns(tmp_path: Path) -> None:
    obs = _frame().set_index("cell_id").astype({"cluster": "category"})
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = np.arange(8, dtype=float).reshape(4, 2)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    back = read_labelled_table(path, label_key="cluster", fov_key="sample", pixel_size_um=2.0)
    np.testing.assert_allclose(back.obsm["spatial"], adata.obsm["spatial"] * 2)
    assert back.obs["fov"].tolist() == ["s1", "s1", "s2", "s2"]
    assert back.obs["CD3"].tolist() == [1.0, 2.0, 3.0, 4.0]  # an h5ad keeps its obs
    from_columns = read_labelled_table(path, label_key="cluster", x="Centroid_X", y="Centroid_Y")
    np.testing.assert_allclose(from_columns.obsm["spatial"][:, 0], [0, 10, 20, 30])


def test_errors_name_the_file_and_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    _frame().to_csv(path, index=False)
    with pytest.raises(InputError, match=r"missing label_key='type', x='px'; the columns are \['cell_id'"):
        read_labelled_table(path, label_key="type", x="px")
    with pytest.raises(InputError, match="no such file"):
        read_labelled_table(tmp_path / "nope.csv", label_key="cluster")
    with pytest.raises(InputError, match="is a folder"):
        read_labelled_table(tmp_path, label_key="cluster")
    _frame().assign(sample=["s1", None, "s2", "s2"]).to_csv(path, index=False)
    with pytest.raises(InputError, match="FOV column 'sample' has 1 missing values"):
        read_labelled_table(path, label_key="cluster")
    (tmp_path / "bad.h5ad").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable .h5ad file"):
        read_labelled_table(tmp_path / "bad.h5ad", label_key="cluster")
    no_xy = ad.AnnData(obs=pd.DataFrame({"cluster": ["a", "b"]}, index=["0", "1"]))
    no_xy.write_h5ad(tmp_path / "noxy.h5ad")
    with pytest.raises(InputError, match=r"missing x \(none of"):
        read_labelled_table(tmp_path / "noxy.h5ad", label_key="cluster")
