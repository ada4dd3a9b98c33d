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
    assert labels.cat.categories.tolist() == ["1", "3"]  # integer codes (float only because of the gap)
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


def test_numeric_label_columns_are_codes_or_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {
            "x": rng.random(n),
            "y": rng.random(n),
            "cluster": rng.integers(0, 12, n),  # integer codes: accepted, in numeric order
            "intensity": rng.gamma(2.0, 50.0, n),  # a float measurement
            "area": rng.integers(20, 900, n),  # integers, but a measurement: 400+ distinct values
            "label_id": np.arange(n),  # one integer per cell (an id)
            "barcode": [f"AAC{i:05d}" for i in range(n)],  # one string per cell
        }
    )
    path = tmp_path / "cells.csv"
    frame.to_csv(path, index=False)
    labels = read_labelled_table(path, label_key="cluster").obs["cluster"]
    assert labels.cat.categories.tolist() == [str(i) for i in range(12)]  # 2 before 10
    assert labels.astype(str).tolist() == frame["cluster"].astype(str).tolist()
    n_float = frame["intensity"].nunique()
    with pytest.raises(InputError, match=rf"label_key='intensity' \(dtype float64\) has {n_float} distinct values, "):
        read_labelled_table(path, label_key="intensity")
    n_area = frame["area"].nunique()
    with pytest.raises(
        InputError,
        match=rf"label_key='area' \(dtype int64\) has {n_area} distinct values in 600 rows; an integer label column "
        r"must hold codes \(cell type or cluster ids\) with at most 200 distinct values",
    ):
        read_labelled_table(path, label_key="area")
    with pytest.raises(InputError, match="label_key='label_id' .* at most 200 distinct values for 600 rows"):
        read_labelled_table(path, label_key="label_id")
    with pytest.raises(InputError, match=r"label_key='barcode' \(dtype object\) has 600 distinct values in 600 rows"):
        read_labelled_table(path, label_key="barcode")
    # a small table: at most half the rows (never fewer than 20) as integer codes
    small = frame.iloc[:100].assign(code=np.arange(100) % 51)
    small.to_csv(path, index=False)
    with pytest.raises(InputError, match="has 51 distinct values in 100 rows; .* at most 50 distinct values for 100"):
        read_labelled_table(path, label_key="code")
    small.assign(code=np.arange(100) % 50).to_csv(path, index=False)
    assert len(read_labelled_table(path, label_key="code").obs["code"].cat.categories) == 50
    tiny = frame.iloc[:30].assign(code=np.arange(30) % 20)
    tiny.to_csv(path, index=False)
    assert len(read_labelled_table(path, label_key="code").obs["code"].cat.categories) == 20


def test_h5ad_float_label_column_is_refused(tmp_path: Path) -> None:
    obs = _frame().set_index("cell_id").assign(score=[0.5, 1.25, 3.0, 0.5])
    adata = ad.AnnData(obs=obs)
    adata.obsm["spatial"] = np.arange(8, dtype=float).reshape(4, 2)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(
        InputError, match=r"cells.h5ad: label_key='score' \(dtype float64\) has 3 distinct values, not all whole "
    ):
        read_labelled_table(path, label_key="score")
    assert read_labelled_table(path, label_key="cluster").obs["cluster"].cat.categories.tolist() == ["1", "3"]
