from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics._warnings import SpatialMultiOmicsWarning
from spatialmultiomics.io import read, visium

POSITIONS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def _h5_value(path: Path, barcode: str, feature_name: str) -> float:
    """One count read straight from the 10x HDF5 arrays (compressed by barcode)."""
    with h5py.File(path, "r") as f:
        m = f["matrix"]
        j = [b.decode() for b in m["barcodes"][()]].index(barcode)
        i = [n.decode() for n in m["features/name"][()]].index(feature_name)
        lo, hi = m["indptr"][j], m["indptr"][j + 1]
        hit = np.flatnonzero(m["indices"][lo:hi] == i)
        return float(m["data"][lo:hi][hit[0]]) if hit.size else 0.0


def _dense(adata) -> np.ndarray:
    return adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)


def test_space_ranger_1_outs_to_exact_values(shared_data: Path) -> None:
    outs = shared_data / "visium_scanpy_fixture" / "1.0.0"
    adata = visium(outs)
    assert adata.shape == (100, 100)
    h5 = outs / "filtered_feature_bc_matrix.h5"
    # counts of given spots and genes, read independently
    for barcode, gene in [("AAACATGGTGAGAGGA-1", "ENSG00000188290"), ("AAACATGGTGAGAGGA-1", "ENSG00000078808")]:
        assert _dense(adata[barcode, gene])[0, 0] == _h5_value(h5, barcode, gene) == 1.0
    with h5py.File(h5) as f:
        assert float(adata.X.sum()) == pytest.approx(float(f["matrix/data"][()].sum()))
    # coordinates: full-resolution pixels x 55 µm / spot diameter
    pos = pd.read_csv(outs / "spatial" / "tissue_positions_list.csv", header=None, names=POSITIONS, index_col=0)
    diameter = json.loads((outs / "spatial" / "scalefactors_json.json").read_text())["spot_diameter_fullres"]
    um = 55.0 / diameter
    for barcode in adata.obs_names[:5]:
        expected = pos.loc[barcode, ["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float) * um
        np.testing.assert_allclose(adata[barcode].obsm[Keys.SPATIAL][0], expected)
    assert (adata.obs["in_tissue"] == 1).all()
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["version"] == "spaceranger-1.0.0"
    assert prov["pixel_size_um"] == pytest.approx(um)
    assert "no header" in prov["positions_layout"]
    assert {Path(p).name for p in prov["files"]} == {h5.name, "tissue_positions_list.csv", "scalefactors_json.json"}
    assert list(adata.var["gene_ids"][:2]) == ["ENSG00000243485", "ENSG00000237613"]


def test_space_ranger_2_1_probe_matrix(shared_data: Path) -> None:
    h5 = shared_data / "visium_scanpy_fixture" / "2.1.0" / "raw_probe_bc_matrix.h5"
    adata = visium(h5, require_coordinates=False)
    assert adata.shape == (4987, 1000)
    assert Keys.SPATIAL not in adata.obsm
    assert (
        _dense(adata["AACAGGTTCACCGAAG-1", "Ppan|e08fa9a"])[0, 0]
        == _h5_value(h5, "AACAGGTTCACCGAAG-1", "Ppan|e08fa9a")
        == 1
    )
    with h5py.File(h5) as f:
        assert int(adata.obs["filtered_barcodes"].sum()) == int(f["matrix/filtered_barcodes"][()].sum())
        assert int(adata.var["filtered_probes"].sum()) == int(f["matrix/features/filtered_probes"][()].sum())
        assert list(adata.var["gene_name"][:3]) == [v.decode() for v in f["matrix/features/gene_name"][:3]]
    assert "probe-level" in adata.uns[Keys.PROVENANCE]["version"]
    # a bare matrix folder: the positions and scale factors are reported missing together
    with pytest.raises(
        InputError, match=r"missing 2 file\(s\): spatial/tissue_positions.csv or .*; spatial/scalefactors_json.json"
    ):
        visium(h5.parent)


def _outs_copy(shared_data: Path, tmp_path: Path) -> Path:
    src = shared_data / "visium_scanpy_fixture" / "1.0.0"
    outs = tmp_path / "outs"
    (outs / "spatial").mkdir(parents=True)
    shutil.copy(src / "filtered_feature_bc_matrix.h5", outs)
    shutil.copy(src / "spatial" / "scalefactors_json.json", outs / "spatial")
    return outs


@pytest.mark.parametrize("layout", ["csv", "parquet"])
def test_space_ranger_2_header_positions_and_parquet(shared_data: Path, tmp_path: Path, layout: str) -> None:
    reference = visium(shared_data / "visium_scanpy_fixture" / "1.0.0")
    outs = _outs_copy(shared_data, tmp_path)
    pos = pd.read_csv(
        shared_data / "visium_scanpy_fixture" / "1.0.0" / "spatial" / "tissue_positions_list.csv",
        header=None,
        names=POSITIONS,
    )
    out_of_tissue = list(reference.obs_names[:3])
    pos.loc[pos["barcode"].isin(out_of_tissue), "in_tissue"] = 0
    if layout == "csv":
        pos.to_csv(outs / "spatial" / "tissue_positions.csv", index=False)
    else:
        pos.to_parquet(outs / "spatial" / "tissue_positions.parquet")
    adata = visium(outs)
    assert adata.n_obs == 97
    assert not set(out_of_tissue) & set(adata.obs_names)
    keep = reference.obs_names[3:]
    np.testing.assert_allclose(adata[keep].obsm[Keys.SPATIAL], reference[keep].obsm[Keys.SPATIAL])
    np.testing.assert_array_equal(_dense(adata[keep]), _dense(reference[keep]))
    assert ("header" if layout == "csv" else "parquet") in adata.uns[Keys.PROVENANCE]["positions_layout"]
    assert visium(outs, in_tissue_only=False).n_obs == 100


@pytest.mark.parametrize("features_file", ["features.tsv.gz", "genes.tsv"])
def test_mex_folder_equals_h5(shared_data: Path, tmp_path: Path, tenx, features_file: str) -> None:
    reference = visium(shared_data / "visium_scanpy_fixture" / "1.0.0")
    outs = _outs_copy(shared_data, tmp_path)
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    shutil.copy(
        shared_data / "visium_scanpy_fixture" / "1.0.0" / "spatial" / "tissue_positions_list.csv", outs / "spatial"
    )
    types = None if features_file == "genes.tsv" else ["Gene Expression"] * reference.n_vars
    tenx.mex(
        outs / "filtered_feature_bc_matrix",
        _dense(reference).astype(int),
        list(reference.obs_names),
        list(reference.var["gene_ids"]),
        list(reference.var_names),
        types,
    )
    adata = visium(outs)
    np.testing.assert_array_equal(_dense(adata), _dense(reference))
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], reference.obsm[Keys.SPATIAL])
    assert "MEX" in adata.uns[Keys.PROVENANCE]["matrix_format"]


def test_no_scalefactors_places_spots_on_the_hex_grid_with_a_warning(shared_data: Path, tmp_path: Path) -> None:
    outs = _outs_copy(shared_data, tmp_path)
    (outs / "spatial" / "scalefactors_json.json").unlink()
    shutil.copy(
        shared_data / "visium_scanpy_fixture" / "1.0.0" / "spatial" / "tissue_positions_list.csv", outs / "spatial"
    )
    with pytest.warns(SpatialMultiOmicsWarning, match="hexagonal grid"):
        adata = visium(outs)
    row, col = adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy()
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], np.column_stack([col * 50.0, row * 50.0 * math.sqrt(3)]))
    # neighbouring spots of the grid are 100 µm apart
    xy = adata.obsm[Keys.SPATIAL]
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    assert np.isclose(d[d > 0].min(), 100.0)


def test_protein_features_are_their_own_modality(tmp_path: Path, tenx) -> None:
    outs = tmp_path / "outs"
    (outs / "spatial").mkdir(parents=True)
    X = np.array([[1, 0, 5, 7], [0, 3, 2, 0]])
    tenx.h5(
        outs / "filtered_feature_bc_matrix.h5",
        X,
        ["AAAC-1", "AAAG-1"],
        ["ENSG1", "ENSG2", "CD3", "CD8"],
        ["GENE1", "GENE2", "CD3", "CD8"],
        ["Gene Expression", "Gene Expression", "Antibody Capture", "Antibody Capture"],
    )
    pd.DataFrame([["AAAC-1", 1, 0, 0, 100.0, 200.0], ["AAAG-1", 1, 0, 2, 100.0, 380.0]], columns=POSITIONS).to_csv(
        outs / "spatial" / "tissue_positions.csv", index=False
    )
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 110.0}))
    rna = read(outs, modality="rna")
    prot = read(outs, "Visium", modality="protein")
    assert list(rna.var_names) == ["GENE1", "GENE2"]
    assert list(prot.var_names) == ["CD3", "CD8"]
    np.testing.assert_array_equal(_dense(prot), [[5, 7], [2, 0]])
    np.testing.assert_allclose(prot.obsm[Keys.SPATIAL], [[200 * 0.5, 100 * 0.5], [380 * 0.5, 100 * 0.5]])
    assert prot.uns[Keys.PROVENANCE]["modality"] == "protein"


def test_bad_visium_inputs(shared_data: Path, tmp_path: Path, tenx) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        InputError,
        match=r"missing 3 file\(s\): filtered_feature_bc_matrix.h5 or filtered_feature_bc_matrix/; spatial/tissue_positions.csv.*; spatial/scalefactors_json.json",
    ) as info:
        visium(empty)
    assert "\n" not in str(info.value)

    outs = _outs_copy(shared_data, tmp_path)
    (outs / "filtered_feature_bc_matrix.h5").write_bytes(b"this is not HDF5")
    shutil.copy(
        shared_data / "visium_scanpy_fixture" / "1.0.0" / "spatial" / "tissue_positions_list.csv", outs / "spatial"
    )
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        visium(outs)
    (outs / "filtered_feature_bc_matrix.h5").write_bytes(b"")
    with pytest.raises(InputError, match="the file is empty"):
        visium(outs)
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=np.ones(3))
    with pytest.raises(
        InputError,
        match=r"lacks dataset\(s\) \['indices', 'indptr', 'shape', 'barcodes', 'features/id', 'features/name'\]",
    ):
        visium(outs)
    tenx.h5(
        outs / "filtered_feature_bc_matrix.h5",
        np.ones((2, 2)),
        ["NOPE-1", "AAACAAGTATCTCCCA-1"],
        ["a", "b"],
        ["a", "b"],
        ["Gene Expression"] * 2,
    )
    with pytest.raises(
        InputError, match=r"1 of the matrix's 2 barcodes are not in the positions file \(e.g. 'NOPE-1'\)"
    ):
        visium(outs)
    # a corrupt index array
    with h5py.File(outs / "filtered_feature_bc_matrix.h5", "a") as f:
        del f["matrix/indices"]
        f["matrix/indices"] = np.array([0, 5, 1, 0])
    with pytest.raises(InputError, match=r"corrupt 10x matrix: feature indices outside 0..1"):
        visium(outs)
    (outs / "spatial" / "tissue_positions_list.csv").write_text("")
    tenx.h5(outs / "filtered_feature_bc_matrix.h5", np.ones((1, 1)), ["A-1"], ["a"], ["a"], ["Gene Expression"])
    with pytest.raises(InputError, match="cannot be parsed|empty"):
        visium(outs)
