from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import cosmx, detect_platform, read

PX = 0.120280945


def _flat_files(folder: Path, *, protein: bool = False, mm: bool = False, seed: int = 0) -> dict:
    """A CosMx flat-file export: ``<run>_exprMat_file.csv`` (fov, cell_ID, targets incl. controls, cell_ID 0 rows
    for the transcripts outside cells), ``<run>_metadata_file.csv`` (rows in another order) and
    ``<run>_fov_positions_file.csv``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    fovs, cells = [1, 1, 1, 2, 2], [1, 2, 3, 1, 2]
    if protein:
        targets = ["CD3", "CD8", "PanCK", "Ms IgG1", "Rb IgG"]
        values = np.round(rng.gamma(2.0, 300.0, (len(cells), len(targets))), 3)
    else:
        targets = ["CD3E", "KRT19", "MS4A1", "NegPrb1", "NegPrb2", "SystemControl1", "FalseCode1"]
        values = rng.poisson(3.0, (len(cells), len(targets)))
    expr = pd.DataFrame(values, columns=targets)
    expr.insert(0, "cell_ID", cells)
    expr.insert(0, "fov", fovs)
    background = pd.DataFrame([[1, 0, *([9] * len(targets))], [2, 0, *([7] * len(targets))]], columns=expr.columns)
    pd.concat([background.iloc[:1], expr.iloc[:3], background.iloc[1:], expr.iloc[3:]]).to_csv(
        folder / "Run5_exprMat_file.csv", index=False
    )
    meta = pd.DataFrame(
        {
            "fov": fovs,
            "cell_ID": cells,
            "Area": rng.integers(500, 5000, len(cells)),
            "AspectRatio": rng.uniform(0.5, 2, len(cells)).round(3),
            "CenterX_local_px": rng.uniform(0, 4256, len(cells)).round(1),
            "CenterY_local_px": rng.uniform(0, 4256, len(cells)).round(1),
            "CenterX_global_px": rng.uniform(0, 50000, len(cells)).round(1),
            "CenterY_global_px": rng.uniform(0, 50000, len(cells)).round(1),
            "Mean.MembraneStain": rng.integers(100, 5000, len(cells)),
            "cell": [f"c_1_{f}_{c}" for f, c in zip(fovs, cells, strict=True)],
        }
    )
    if mm:
        meta["CenterX_global_mm"] = meta.pop("CenterX_global_px") * PX / 1000
        meta["CenterY_global_mm"] = meta.pop("CenterY_global_px") * PX / 1000
    meta.iloc[::-1].to_csv(folder / "Run5_metadata_file.csv", index=False)
    pd.DataFrame({"fov": [1, 2], "x_global_px": [0.0, 4256.0], "y_global_px": [0.0, 0.0]}).to_csv(
        folder / "Run5_fov_positions_file.csv", index=False
    )
    return {"expr": expr, "meta": meta, "targets": targets}


def test_rna_panel_to_exact_values(tmp_path: Path) -> None:
    truth = _flat_files(tmp_path / "run")
    assert detect_platform(tmp_path / "run") == ["cosmx"]
    adata = read(tmp_path / "run")
    expr, meta = truth["expr"], truth["meta"]
    assert list(adata.obs_names) == ["1_1", "1_2", "1_3", "2_1", "2_2"]
    assert list(adata.var_names) == ["CD3E", "KRT19", "MS4A1"]
    np.testing.assert_array_equal(adata.X.toarray(), expr[["CD3E", "KRT19", "MS4A1"]].to_numpy())
    assert adata.uns["control_features"] == {
        "name": ["NegPrb1", "NegPrb2", "SystemControl1", "FalseCode1"],
        "feature_type": ["Negative Control Probe", "Negative Control Probe", "System Control", "False Code"],
    }
    np.testing.assert_array_equal(
        adata.obsm["control_counts"].toarray(), expr[["NegPrb1", "NegPrb2", "SystemControl1", "FalseCode1"]]
    )
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], meta[["CenterX_global_px", "CenterY_global_px"]] * PX)
    # FOVs are tiles of one global frame: kept, but not as separate frames
    assert list(adata.obs["tile_fov"]) == ["1", "1", "1", "2", "2"] and Keys.FOV not in adata.obs
    assert list(adata.obs["Area"]) == list(meta["Area"])
    prov = adata.uns[Keys.PROVENANCE]
    assert (prov["platform"], prov["modality"], prov["background_rows_dropped"]) == ("cosmx", "rna", 2)
    assert len(prov["files"]) == 3
    # a flat file itself, and mm coordinates
    assert cosmx(tmp_path / "run" / "Run5_exprMat_file.csv").shape == (5, 3)
    _flat_files(tmp_path / "mm", mm=True)
    mm = cosmx(tmp_path / "mm")
    np.testing.assert_allclose(mm.obsm[Keys.SPATIAL], adata.obsm[Keys.SPATIAL], rtol=1e-9)


def test_protein_panel_is_detected_and_isotype_controls_kept_apart(tmp_path: Path) -> None:
    truth = _flat_files(tmp_path / "prot", protein=True)
    adata = read(tmp_path / "prot", "CosMx")
    assert adata.uns[Keys.PROVENANCE]["modality"] == "protein"
    assert list(adata.var_names) == ["CD3", "CD8", "PanCK"]
    assert adata.uns["control_features"]["name"] == ["Ms IgG1", "Rb IgG"]
    np.testing.assert_allclose(adata.X, truth["expr"][["CD3", "CD8", "PanCK"]].to_numpy(np.float32))
    assert isinstance(adata.X, np.ndarray)


def test_local_coordinates_only_make_each_fov_its_own_frame(tmp_path: Path) -> None:
    truth = _flat_files(tmp_path / "run")
    meta = truth["meta"].drop(columns=["CenterX_global_px", "CenterY_global_px"])
    meta.to_csv(tmp_path / "run" / "Run5_metadata_file.csv", index=False)
    adata = cosmx(tmp_path / "run")
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], meta[["CenterX_local_px", "CenterY_local_px"]] * PX)
    assert list(adata.obs[Keys.FOV]) == ["1", "1", "1", "2", "2"]


def test_bad_cosmx_exports(tmp_path: Path) -> None:
    truth = _flat_files(tmp_path / "run")
    meta = truth["meta"]
    meta.iloc[1:].to_csv(tmp_path / "run" / "Run5_metadata_file.csv", index=False)
    with pytest.raises(
        InputError, match=r"1 cells of the expression matrix are not in the metadata \(e.g. fov 1, cell_ID 1\)"
    ):
        cosmx(tmp_path / "run")
    (tmp_path / "run" / "Run5_metadata_file.csv").unlink()
    with pytest.raises(InputError, match=r"not a complete CosMx flat-file export; missing \*_metadata_file.csv"):
        cosmx(tmp_path / "run")
    _flat_files(tmp_path / "neg")
    expr = pd.read_csv(tmp_path / "neg" / "Run5_exprMat_file.csv")
    expr.loc[2, "KRT19"] = -1
    expr.to_csv(tmp_path / "neg" / "Run5_exprMat_file.csv", index=False)
    with pytest.raises(InputError, match=r"column 'KRT19' has negative values"):
        cosmx(tmp_path / "neg")
    with pytest.raises(InputError, match=r"modality='atac'"):
        cosmx(tmp_path / "neg", modality="atac")


def test_gzip_files_and_a_late_non_integer_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    cosmx_module = importlib.import_module("spatialmultiomics.io.cosmx")
    truth = _flat_files(tmp_path / "gz", protein=False)
    expr = pd.read_csv(tmp_path / "gz" / "Run5_exprMat_file.csv")
    (tmp_path / "gz" / "Run5_exprMat_file.csv").unlink()
    expr.to_csv(tmp_path / "gz" / "Run5_exprMat_file.csv.gz", index=False)
    adata = cosmx(tmp_path / "gz")
    np.testing.assert_array_equal(adata.X.toarray(), truth["expr"][["CD3E", "KRT19", "MS4A1"]].to_numpy())
    # integers in the first bytes looked at, a fraction further down: read again as floats, not refused
    monkeypatch.setattr(cosmx_module, "_SNIFF", 40)
    expr["MS4A1"] = expr["MS4A1"].astype(float)
    expr.loc[len(expr) - 1, "MS4A1"] = 2.5
    expr.to_csv(tmp_path / "gz" / "Run5_exprMat_file.csv.gz", index=False)
    late = cosmx(tmp_path / "gz", modality="rna")
    assert late.X[-1, 2] == 2.5


def test_counts_beyond_16_bits_are_read_exactly(tmp_path: Path) -> None:
    truth = _flat_files(tmp_path / "big")
    expr = truth["expr"].copy()
    expr.loc[4, "KRT19"] = 70_000  # past int16: the parser falls back to floats, the value stays exact
    expr.to_csv(tmp_path / "big" / "Run5_exprMat_file.csv", index=False)
    adata = cosmx(tmp_path / "big")
    assert adata.X[4, 1] == 70_000
    np.testing.assert_array_equal(adata.X.toarray(), expr[["CD3E", "KRT19", "MS4A1"]].to_numpy())
