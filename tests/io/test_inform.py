from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import detect_platform, inform, read

PHENOPTR = "mif_vectra_phenoptr/sample_cell_seg_data.csv.gz"
MARKERS = {
    "PDL1": "Opal 520",
    "CD8": "Opal 540",
    "FoxP3": "Opal 570",
    "CD68": "Opal 620",
    "PD1": "Opal 650",
    "CK": "Opal 690",
}


def test_real_inform_table_to_exact_values(shared_data: Path) -> None:
    path = shared_data / PHENOPTR
    table = pd.read_csv(path)
    adata = read(path)  # detected from the header
    assert adata.uns[Keys.PROVENANCE]["platform"] == "inform"
    assert adata.shape == (6072, 7)
    assert list(adata.var_names) == [*MARKERS, "DAPI"]
    assert list(adata.var["channel"]) == [*MARKERS.values(), ""]
    columns = [f"Entire Cell {m} ({d}) Mean" for m, d in MARKERS.items()] + ["Entire Cell DAPI Mean"]
    assert list(adata.var["original_name"]) == columns
    np.testing.assert_array_equal(adata.X, table[columns].to_numpy(np.float32))
    # one cell: Cell ID 11, a CD8+ cell of the stroma at (257.5, 6.5) µm
    cell = adata["11"]
    assert cell.X[0, 1] == pytest.approx(5.117, abs=1e-6)
    np.testing.assert_allclose(cell.obsm[Keys.SPATIAL][0], [257.5, 6.5])
    assert (cell.obs["Phenotype"].iloc[0], cell.obs["Tissue Category"].iloc[0]) == ("CD8+", "Stroma")
    # coordinates are microns already (the column names say so)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], table[["Cell X Position", "Cell Y Position"]].to_numpy())
    assert adata.uns[Keys.PROVENANCE]["pixel_size_um"] == 1.0
    # inForm's phenotypes and tissue categories, as published with the file
    assert adata.obs["Phenotype"].value_counts().to_dict() == {
        "other": 2942,
        "CK+": 2257,
        "CD68+": 417,
        "CD8+": 228,
        "FoxP3+": 228,
    }
    assert adata.obs["Tissue Category"].value_counts().to_dict() == {"Stroma": 3512, "Tumor": 2560}
    # autofluorescence is not a marker: kept apart
    assert adata.uns["control_features"] == {"name": ["Autofluorescence"], "feature_type": ["Autofluorescence"]}
    np.testing.assert_allclose(
        adata.obsm["control_counts"].toarray()[:, 0], table["Entire Cell Autofluorescence Mean"], rtol=1e-6
    )
    # another compartment on request
    membrane = inform(path, compartment="Membrane")
    assert membrane["11"].X[0, 1] == pytest.approx(5.418, abs=1e-6)
    assert membrane.var["original_name"].iloc[1] == "Membrane CD8 (Opal 540) Mean"


def _field(sample: str, n: int, seed: int) -> pd.DataFrame:
    """A field in inForm's own tab-separated layout: pixel positions, unit-suffixed expression columns."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "Path": "C:\\inForm",
            "Sample Name": sample,
            "Tissue Category": rng.choice(["Tumor", "Stroma"], n),
            "Phenotype": rng.choice(["CD8+", "other"], n),
            "Cell ID": np.arange(1, n + 1),
            "Cell X Position": rng.integers(0, 1860, n),
            "Cell Y Position": rng.integers(0, 1396, n),
            "Entire Cell Area (pixels)": rng.integers(50, 300, n),
        }
    )
    for comp in ("Nucleus", "Entire Cell"):
        for marker, dye in (("CD8", "Opal 540"), ("CK", "Opal 690")):
            for stat in ("Min", "Mean", "Max"):
                frame[f"{comp} {marker} ({dye}) {stat} (Normalized Counts, Total Weighting)"] = np.round(
                    rng.gamma(2, 3, n), 3
                )
        frame[f"{comp} DAPI Mean (Normalized Counts, Total Weighting)"] = np.round(rng.gamma(5, 2, n), 3)
    frame["Confidence"] = [f"{v:.2f}%" for v in rng.uniform(50, 100, n)]
    return frame


def test_inform_pixel_tables_of_several_fields(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _field("Slide1_[1000,2000].im3", 5, 0), _field("Slide1_[3000,2000].im3", 4, 1)
    folder = tmp_path / "export"
    folder.mkdir()
    a.to_csv(folder / "Slide1_[1000,2000]_cell_seg_data.txt", sep="\t", index=False)
    b.to_csv(folder / "Slide1_[3000,2000]_cell_seg_data.txt", sep="\t", index=False)
    (folder / "Slide1_[1000,2000]_cell_seg_data_summary.txt").write_text("not read\n")
    assert detect_platform(folder) == ["inform"]
    with caplog.at_level("INFO", logger="spatialmultiomics"):
        adata = read(folder)
    assert "cell positions in pixels x 0.5 µm (default: 2 pixels per µm)" in caplog.text
    assert list(adata.var_names) == ["CD8", "CK", "DAPI"]
    both = pd.concat([a, b], ignore_index=True)
    col = "Entire Cell CK (Opal 690) Mean (Normalized Counts, Total Weighting)"
    np.testing.assert_allclose(adata.X[:, 1], both[col], rtol=1e-6)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], both[["Cell X Position", "Cell Y Position"]] * 0.5)
    # cell ids repeat across fields: <field>_<id>; each field its own frame
    assert adata.obs_names[5] == "Slide1_[3000,2000].im3_1"
    assert adata.obs[Keys.FOV].value_counts().to_dict() == {"Slide1_[1000,2000].im3": 5, "Slide1_[3000,2000].im3": 4}
    nucleus = inform(folder, compartment="nucleus", statistic="max", pixel_size_um=0.4977)
    np.testing.assert_allclose(
        nucleus.X[:, 0], both["Nucleus CD8 (Opal 540) Max (Normalized Counts, Total Weighting)"], rtol=1e-6
    )
    np.testing.assert_allclose(nucleus.obsm[Keys.SPATIAL], both[["Cell X Position", "Cell Y Position"]] * 0.4977)
    with pytest.raises(
        InputError, match=r"no 'Membrane' 'Mean' columns; the file has compartments \['Entire Cell', 'Nucleus'\]"
    ):
        inform(folder, compartment="Membrane")
