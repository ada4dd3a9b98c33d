from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import detect_platform, read, visium_hd

MPP = 0.2737  # µm per full-resolution pixel
GENES = ["ACTB", "CD3E", "EPCAM"]


def _bins(outs: Path, tenx, size: int, n_rows: int = 3, n_cols: int = 4, seed: int = 0) -> dict:
    """One ``binned_outputs/square_XXXum`` folder in the Space Ranger 3 layout: filtered h5 (in-tissue bins only),
    ``spatial/tissue_positions.parquet`` (every bin of the grid, header, six columns), ``scalefactors_json.json``."""
    rng = np.random.default_rng(seed + size)
    folder = outs / "binned_outputs" / f"square_{size:03d}um"
    (folder / "spatial").mkdir(parents=True)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    barcodes = [f"s_{size:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows.ravel(), cols.ravel(), strict=True)]
    in_tissue = (rng.uniform(size=len(barcodes)) > 0.3).astype(np.int32)
    in_tissue[0] = 1
    px = size / MPP
    positions = pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": in_tissue,
            "array_row": rows.ravel(),
            "array_col": cols.ravel(),
            "pxl_row_in_fullres": 1000.0 + rows.ravel() * px,
            "pxl_col_in_fullres": 2000.0 + cols.ravel() * px,
        }
    )
    positions.to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
    keep = [b for b, t in zip(barcodes, in_tissue, strict=True) if t]
    X = rng.poisson(2.0, (len(keep), len(GENES) + 1))
    tenx.h5(
        folder / "filtered_feature_bc_matrix.h5",
        X,
        keep,
        [f"ENSG{i}" for i in range(len(GENES) + 1)],
        [*GENES, "NegControlProbe_1"],
        ["Gene Expression"] * len(GENES) + ["Negative Control Probe"],
        software_version="spaceranger-3.0.0",
    )
    (folder / "spatial" / "scalefactors_json.json").write_text(
        json.dumps(
            {
                "spot_diameter_fullres": px,
                "bin_size_um": float(size),
                "microns_per_pixel": MPP,
                "regist_target_img_scalef": 0.25,
                "tissue_lowres_scalef": 0.02,
                "fiducial_diameter_fullres": 1200.0,
                "tissue_hires_scalef": 0.2,
            }
        )
    )
    return {"positions": positions.set_index("barcode"), "barcodes": keep, "X": X}


def _cells(outs: Path, tenx) -> dict:
    """``segmented_outputs/`` in the Space Ranger 4 layout: cell matrix with ``cellid_<9 digits>-1`` barcodes, the
    cell polygons (GeoJSON, full-resolution pixels, property ``cell_id``), ``spatial/scalefactors_json.json``."""
    seg = outs / "segmented_outputs"
    (seg / "spatial").mkdir(parents=True)
    X = np.array([[4, 7, 0], [0, 1, 3], [2, 0, 5]])
    ids = [1, 2, 5]
    tenx.h5(
        seg / "filtered_feature_cell_matrix.h5",
        X,
        [f"cellid_{i:09d}-1" for i in ids],
        ["E1", "E2", "E3"],
        GENES,
        ["Gene Expression"] * 3,
        software_version="spaceranger-4.0.1",
    )
    square = {"type": "Polygon", "coordinates": [[[10, 0], [12, 0], [12, 2], [10, 2], [10, 0]]]}
    triangle = {"type": "Polygon", "coordinates": [[[100, 100], [106, 100], [100, 103], [100, 100]]]}
    two = {
        "type": "MultiPolygon",  # two unit squares: centroid halfway between them
        "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]], [[[4, 0], [5, 0], [5, 1], [4, 1], [4, 0]]]],
    }
    features = [
        {"type": "Feature", "properties": {"cell_id": i}, "geometry": g}
        for i, g in [(5, two), (2, triangle), (1, square), (9, square)]  # any order; cell 9 not in the matrix
    ]
    (seg / "cell_segmentations.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (seg / "spatial" / "scalefactors_json.json").write_text(json.dumps({"microns_per_pixel": MPP}))
    return {"X": X, "centroids_px": np.array([[11.0, 1.0], [102.0, 101.0], [2.5, 0.5]]), "areas_px": [4.0, 9.0, 2.0]}


@pytest.mark.parametrize("size", [2, 8, 16])
def test_bins_to_exact_values(tmp_path: Path, tenx, size: int) -> None:
    outs = tmp_path / "outs"
    truth = {s: _bins(outs, tenx, s) for s in (2, 8, 16)}[size]
    for where in (outs, outs / "binned_outputs", outs / "binned_outputs" / f"square_{size:03d}um"):
        adata = (
            visium_hd(where, bin_size=size)
            if where != outs / "binned_outputs" / f"square_{size:03d}um"
            else visium_hd(where)
        )
        assert list(adata.obs_names) == truth["barcodes"]
        assert list(adata.var_names) == GENES
        np.testing.assert_array_equal(adata.X.toarray(), truth["X"][:, :3])
        pos = truth["positions"].loc[truth["barcodes"]]
        np.testing.assert_allclose(
            adata.obsm[Keys.SPATIAL], pos[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy() * MPP
        )
        # bins of one row are bin_size µm apart per array column
        row0 = pos[pos["array_row"] == pos["array_row"].iloc[0]]
        xy = adata[row0.index].obsm[Keys.SPATIAL]
        np.testing.assert_allclose(np.diff(xy[:, 0]), np.diff(row0["array_col"].to_numpy()) * size)
        assert adata.uns["control_features"]["name"] == ["NegControlProbe_1"]
        prov = adata.uns[Keys.PROVENANCE]
        assert (prov["platform"], prov["level"], prov["bin_size_um"]) == ("visium_hd", "bins", float(size))
        assert prov["pixel_size_um"] == MPP


def test_default_is_8_um_bins_and_cells_when_segmented(tmp_path: Path, tenx) -> None:
    outs = tmp_path / "outs"
    for s in (2, 8, 16):
        _bins(outs, tenx, s)
    assert visium_hd(outs).uns[Keys.PROVENANCE]["bin_size_um"] == 8.0
    assert detect_platform(outs) == ["visium_hd"]
    assert detect_platform(outs / "binned_outputs" / "square_016um") == ["visium_hd"]
    truth = _cells(outs, tenx)
    cells = read(outs)  # segmented outputs present: cells
    assert cells.uns[Keys.PROVENANCE]["level"] == "cells"
    assert list(cells.obs_names) == ["cellid_000000001-1", "cellid_000000002-1", "cellid_000000005-1"]
    np.testing.assert_array_equal(cells.X.toarray(), truth["X"])
    np.testing.assert_allclose(cells.obsm[Keys.SPATIAL], truth["centroids_px"] * MPP)
    np.testing.assert_allclose(cells.obs["cell_area_um2"], np.array(truth["areas_px"]) * MPP**2)
    # bins on request
    assert visium_hd(outs, cells=False).uns[Keys.PROVENANCE]["bin_size_um"] == 8.0
    assert visium_hd(outs, bin_size=16).uns[Keys.PROVENANCE]["bin_size_um"] == 16.0
    assert read(outs / "segmented_outputs", "Visium HD").n_obs == 3


def test_bad_visium_hd_outputs(tmp_path: Path, tenx) -> None:
    outs = tmp_path / "outs"
    _bins(outs, tenx, 8)
    with pytest.raises(InputError, match=r"bin_size=2: no square_002um/ folder .* available bin sizes \(µm\): \[8\]"):
        visium_hd(outs, bin_size=2)
    with pytest.raises(InputError, match=r"cells=True but there is no segmented_outputs/ folder"):
        visium_hd(outs, cells=True)
    _cells(outs, tenx)
    (outs / "segmented_outputs" / "cell_segmentations.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": []})
    )
    with pytest.raises(InputError, match=r"cell_segmentations.geojson: expected a GeoJSON FeatureCollection"):
        visium_hd(outs)
    (outs / "segmented_outputs" / "cell_segmentations.geojson").unlink()
    with pytest.raises(InputError, match=r"not a complete Visium HD segmented output; missing 1 file\(s\)"):
        visium_hd(outs)
    sf = outs / "binned_outputs" / "square_008um" / "spatial" / "scalefactors_json.json"
    sf.write_text(json.dumps({"microns_per_pixel": MPP, "bin_size_um": 16.0}))
    with pytest.raises(InputError, match=r"bin_size_um=16 but the folder is square_008um"):
        visium_hd(outs, cells=False)


def test_a_matrix_file_of_the_tree_is_read_as_visium_hd(tmp_path: Path, tenx) -> None:
    outs = tmp_path / "outs"
    truth = _bins(outs, tenx, 16)
    _cells(outs, tenx)
    h5 = outs / "binned_outputs" / "square_016um" / "filtered_feature_bc_matrix.h5"
    assert detect_platform(h5) == ["visium_hd"]
    adata = read(h5)
    assert adata.uns[Keys.PROVENANCE]["bin_size_um"] == 16.0
    assert list(adata.obs_names) == truth["barcodes"]
    cells = read(outs / "segmented_outputs" / "filtered_feature_cell_matrix.h5")
    assert cells.uns[Keys.PROVENANCE]["level"] == "cells"
