"""Every real file in ../shared/data read through the public readers, to values taken from the files themselves.

The truth of each case is computed here, independently of the readers (pandas / h5py on the raw file). The
citeseq_eccite_citefuse folder is not a reader input (a non-spatial CITE-seq matrix without coordinates) and is
skipped on purpose. The documented vendor layouts without a small real file (Xenium, Stereo-seq, Visium HD, CosMx,
QuPath, HALO) are written by their own test modules in exactly the vendor layout.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import Keys
from spatialmultiomics.io import detect_platform, read, read_labelled_table, read_table


def _dense(X) -> np.ndarray:
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def test_every_shared_folder_is_covered(shared_data: Path) -> None:
    covered = {
        "visium_scanpy_fixture",
        "merscope_vpt_tests",
        "imc_steinbock_imcRtools_mock",
        "cycif_mcmicro_exemplar001_scimap",
        "mibi_ark_cell_table_slice",
        "mibi_tnbc_keren2018",
        "mif_vectra_phenoptr",
        "citeseq_eccite_citefuse",  # not spatial: no reader input
    }
    assert {p.name for p in shared_data.iterdir() if p.is_dir()} <= covered


def test_visium_space_ranger_1_and_2(shared_data: Path) -> None:
    folder = shared_data / "visium_scanpy_fixture" / "1.0.0"
    adata = read(folder)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5") as f:
        barcodes = [b.decode() for b in f["matrix/barcodes"][()]]
        data, indptr = f["matrix/data"][()], f["matrix/indptr"][()]
    assert list(adata.obs_names) == barcodes
    assert np.asarray(adata.X.sum(axis=1)).ravel() == pytest.approx(np.add.reduceat(data, indptr[:-1]), rel=1e-6)
    pos = pd.read_csv(folder / "spatial" / "tissue_positions_list.csv", header=None, index_col=0).loc[barcodes]
    um = 55.0 / pd.read_json(folder / "spatial" / "scalefactors_json.json", typ="series")["spot_diameter_fullres"]
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], pos[[5, 4]].to_numpy() * um)
    probe = read(
        shared_data / "visium_scanpy_fixture" / "2.1.0" / "raw_probe_bc_matrix.h5", "visium", require_coordinates=False
    )
    with h5py.File(shared_data / "visium_scanpy_fixture" / "2.1.0" / "raw_probe_bc_matrix.h5") as f:
        assert probe.n_obs == int(f["matrix/shape"][1])


def test_merscope_both_sets(shared_data: Path) -> None:
    small = shared_data / "merscope_vpt_tests" / "smallset"
    adata = read(small)
    counts = pd.read_csv(small / "cell_by_gene.csv", dtype={"cell": str}).set_index("cell")
    meta = pd.read_csv(small / "cell_metadata.csv", dtype={"EntityID": str}, index_col=0)
    genes = [c for c in counts.columns if not c.lower().startswith("blank")]
    np.testing.assert_array_equal(_dense(adata.X), counts.loc[adata.obs_names, genes].to_numpy(np.float32))
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], meta.loc[adata.obs_names, ["center_x", "center_y"]])
    liver = read(shared_data / "merscope_vpt_tests" / "liver94", require_coordinates=False)
    assert liver.shape == (94, 259)


def test_imc_steinbock(shared_data: Path) -> None:
    folder = shared_data / "imc_steinbock_imcRtools_mock"
    adata = read(folder)
    assert adata.shape == (404, 5)
    image = "20210305_NE_mockData1_001"
    intens = pd.read_csv(folder / "intensities" / f"{image}.csv", index_col="Object")
    props = pd.read_csv(folder / "regionprops" / f"{image}.csv", index_col="Object")
    cells = [f"{image}_{i}" for i in intens.index]
    np.testing.assert_allclose(_dense(adata[cells].X), intens.to_numpy(np.float32), rtol=1e-6)
    np.testing.assert_allclose(adata[cells].obsm[Keys.SPATIAL], props[["centroid-1", "centroid-0"]].to_numpy())


def test_cycif_mcmicro_and_scimap_reference(shared_data: Path) -> None:
    folder = shared_data / "cycif_mcmicro_exemplar001_scimap"
    table = pd.read_csv(folder / "exemplar-001--unmicst_cell.csv")
    adata = read(folder / "exemplar-001--unmicst_cell.csv")
    markers = list(table.columns[1 : table.columns.get_loc("X_centroid")])
    assert adata.shape == (11201, 12) and list(adata.var_names) == markers
    np.testing.assert_allclose(_dense(adata.X), table[markers].to_numpy(np.float32), rtol=1e-6)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], table[["X_centroid", "Y_centroid"]].to_numpy() * 0.65)
    ref = pd.read_csv(folder / "scimap_reference_rescaled_and_phenotypes.csv.gz")
    labelled = read_labelled_table(folder / "scimap_reference_rescaled_and_phenotypes.csv.gz", label_key="phenotype")
    assert labelled.obs["phenotype"].value_counts().to_dict() == ref["phenotype"].value_counts().to_dict()
    np.testing.assert_allclose(labelled.obsm[Keys.SPATIAL], ref[["X_centroid", "Y_centroid"]].to_numpy())
    as_table = read_table(folder / "scimap_reference_rescaled_and_phenotypes.csv.gz", modality="protein")
    assert list(as_table.var_names) == [c for c in ref.columns if c.startswith("rescaled_")]


def test_mibi_ark_and_tnbc(shared_data: Path) -> None:
    path = shared_data / "mibi_ark_cell_table_slice" / "cell_table_size_normalized.csv"
    table = pd.read_csv(path)
    adata = read(path)
    assert adata.n_obs == len(table) == 300 and adata.n_vars == 43
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], table[["centroid-1", "centroid-0"]].to_numpy() * 800 / 2048)
    tnbc = shared_data / "mibi_tnbc_keren2018" / "TNBC_pheno.csv.gz"
    pheno = pd.read_csv(tnbc)
    labelled = read_labelled_table(tnbc, label_key="Phenotype", fov_key="Person")
    assert labelled.n_obs == len(pheno) == 170171
    assert labelled.obs[Keys.FOV].nunique() == pheno["Person"].nunique() == 33
    np.testing.assert_allclose(labelled.obsm[Keys.SPATIAL], pheno[["cellx", "celly"]].to_numpy())


def test_mif_vectra_phenoptr(shared_data: Path) -> None:
    path = shared_data / "mif_vectra_phenoptr" / "sample_cell_seg_data.csv.gz"
    assert detect_platform(path) == ["inform"]
    table = pd.read_csv(path)
    adata = read(path)
    assert adata.shape == (6072, 7)
    means = [
        c for c in table.columns if c.startswith("Entire Cell ") and c.endswith(" Mean") and "Autofluorescence" not in c
    ]
    np.testing.assert_array_equal(adata.X, table[means].to_numpy(np.float32))
    assert adata.obs["Phenotype"].value_counts().to_dict() == table["Phenotype"].value_counts().to_dict()
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], table[["Cell X Position", "Cell Y Position"]].to_numpy())
