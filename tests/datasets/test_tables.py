import json

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.datasets import paper_benchmark, synthetic_tissue, write_tables


def test_write_tables_paper(tmp_path):
    mdata = paper_benchmark(seed=0)
    paths = write_tables(mdata, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == {
        "rna": "transcriptomics.csv",
        "protein": "proteomics.csv",
        "markers": "markers.json",
        "truth": "truth.csv",
    }
    tx = pd.read_csv(paths["rna"])
    assert list(tx.columns[:3]) == ["cell_id", "x", "y"]
    assert list(tx.columns[3:]) == list(mdata["rna"].var_names)
    assert tx["cell_id"].tolist() == list(mdata.obs_names)
    np.testing.assert_allclose(tx[["x", "y"]].to_numpy(), mdata.obsm["spatial"], rtol=1e-5)
    np.testing.assert_array_equal(tx.iloc[:, 3:].to_numpy(), np.asarray(mdata["rna"].X))
    pr = pd.read_csv(paths["protein"])
    assert list(pr.columns[3:]) == list(mdata["protein"].var_names)
    np.testing.assert_allclose(pr.iloc[:, 3:].to_numpy(), mdata["protein"].X, rtol=1e-5)
    markers = json.loads(paths["markers"].read_text())
    assert markers["T cells"] == {"genes": ["CD3E", "CD3D", "CD2", "TRAC"], "proteins": ["CD3", "CD8"]}
    truth = pd.read_csv(paths["truth"])
    assert list(truth.columns) == ["cell_id", "cell_type"]
    assert truth["cell_type"].tolist() == mdata.obs["true_cell_type"].astype(str).tolist()


def test_tables_read_back_by_the_generic_reader(tmp_path):
    from spatialmultiomics.io import read_table

    mdata = synthetic_tissue(300, seed=2)
    paths = write_tables(mdata, tmp_path)
    back = read_table(paths["protein"])
    assert list(back.obs_names) == list(mdata.obs_names)
    assert list(back.var_names) == list(mdata["protein"].var_names)
    np.testing.assert_allclose(np.asarray(back.X), mdata["protein"].X, rtol=1e-5)
    np.testing.assert_allclose(back.obsm["spatial"], mdata.obsm["spatial"], rtol=1e-5)
    rna = read_table(paths["rna"])
    X = rna.X.toarray() if hasattr(rna.X, "toarray") else np.asarray(rna.X)
    np.testing.assert_array_equal(X, mdata["rna"].X.toarray())


def test_write_tables_needs_coordinates(tmp_path):
    mdata = paper_benchmark(seed=0, n_cells=8)
    del mdata.obsm["spatial"]
    with pytest.raises(InputError, match="spatial"):
        write_tables(mdata, tmp_path)
