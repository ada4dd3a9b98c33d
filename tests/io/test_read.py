from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import detect_platform, read

REAL = {
    "visium": "visium_scanpy_fixture/1.0.0",
    "merfish": "merscope_vpt_tests/smallset",
    "imc": "imc_steinbock_imcRtools_mock",
    "cycif": "cycif_mcmicro_exemplar001_scimap",
    "mibi": "mibi_ark_cell_table_slice",
    "inform": "mif_vectra_phenoptr",
}


@pytest.mark.parametrize("platform", sorted(REAL))
def test_detects_every_real_folder_and_round_trips_h5ad(shared_data: Path, tmp_path: Path, platform: str) -> None:
    folder = shared_data / REAL[platform]
    assert detect_platform(folder) == [platform]
    adata = read(folder)
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["platform"] == platform
    assert prov["reader"] == f"spatialmultiomics.io.{platform}"
    assert prov["files"] and all(Path(f).is_absolute() for f in prov["files"])
    assert adata.obsm[Keys.SPATIAL].shape == (adata.n_obs, 2)
    # the same reader under its case-insensitive names, and the result stores as .h5ad unchanged
    assert read(folder, platform.upper()).shape == adata.shape
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_allclose(back.obsm[Keys.SPATIAL], adata.obsm[Keys.SPATIAL])
    assert back.uns[Keys.PROVENANCE]["platform"] == platform
    again = read(tmp_path / "a.h5ad", platform)
    assert again.shape == adata.shape


def test_ambiguous_and_unknown_folders(shared_data: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(shared_data / "merscope_vpt_tests" / "smallset", mixed)
    shutil.copy(shared_data / "visium_scanpy_fixture" / "1.0.0" / "filtered_feature_bc_matrix.h5", mixed)
    assert detect_platform(mixed) == ["merfish", "visium"]
    with pytest.raises(
        InputError,
        match=r"ambiguous folder, it matches 2 platforms \(MERFISH / MERSCOPE, 10x Visium\); pass platform= one of \['merfish', 'visium'\]",
    ):
        read(mixed)
    assert read(mixed, "merscope").n_obs == 997  # naming the platform settles it
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "notes.txt").write_text("hello")
    with pytest.raises(
        InputError, match=r"no known instrument output layout in this folder \(it has \['notes.txt'\]\)"
    ):
        read(unknown)
    with pytest.raises(InputError, match=r"not a complete 10x Visium output|not a complete Space Ranger output"):
        read(unknown, "Visium")


def test_reader_options_pass_through_and_unknown_options_are_named(shared_data: Path, tmp_path: Path) -> None:
    liver = shared_data / "merscope_vpt_tests" / "liver94"
    assert read(liver, require_coordinates=False).n_obs == 94
    with pytest.raises(InputError, match=r"\['bin_size'\] is not an option of smo.io.merfish; it accepts"):
        read(liver, bin_size=3)
    frame = pd.DataFrame({"cell_id": ["a"], "x": [1.0], "y": [2.0], "G": [1]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match=r"options \['bin_size'\] do not apply to a standardized table"):
        read(tmp_path / "t.csv", bin_size=3)


def test_public_namespace() -> None:
    for name in ("visium", "merfish", "xenium", "xenium_mudata", "stereoseq", "codex", "mibi", "imc", "cycif", "read"):
        func = getattr(smo.io, name)
        assert callable(func), name
        assert func.__doc__

    assert callable(smo.io.visium)


def test_pipeline_reads_vendor_folders(shared_data: Path) -> None:
    """run_pipeline accepts a vendor folder as input: the steinbock folder, FOVs kept apart."""
    result = smo.run_pipeline(
        protein_path=shared_data / REAL["imc"],
        platform_prot="IMC",
        n_factors=3,
        radius=20.0,
        markers={"Epithelial": {"proteins": ["Cytokeratin 5"]}, "Stroma": {"proteins": ["Laminin"]}},
    )
    assert len(result.shared_labels) == 404
    assert result.shared_labels["cell_id"].iloc[0] == "20210305_NE_mockData1_001_1"
    assert result.mdata["protein"].uns[Keys.PROVENANCE]["reader"] == "spatialmultiomics.io.imc"
    # the graph never joins cells of different images
    graph = result.mdata.obsp["spatial_connectivities"].tocoo()
    fov = result.mdata.obs[Keys.FOV].to_numpy()
    assert graph.nnz > 0
    assert (fov[graph.row] == fov[graph.col]).all()
