from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

from spatialmultiomics import Keys

SHARED_DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real vendor files not available at {SHARED_DATA}")
    return SHARED_DATA


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spatialmultiomics", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_read_writes_h5ad_and_info_summarises(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "imc_steinbock_imcRtools_mock"
    proc = _run(["read", str(folder), "-o", "imc.h5ad"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    adata = ad.read_h5ad(tmp_path / "imc.h5ad")
    assert adata.shape == (404, 5)
    assert adata.uns[Keys.PROVENANCE]["reader"] == "spatialmultiomics.io.imc"
    assert "cells:      404" in proc.stdout
    # refuses to overwrite without --overwrite
    again = _run(["read", str(folder), "-o", "imc.h5ad"], tmp_path)
    assert again.returncode == 2
    assert "exists; pass --overwrite" in again.stderr
    info = _run(
        ["info", str(shared_data / "mibi_ark_cell_table_slice"), "--platform", "mibi", "--pixel-size-um", "0.5"],
        tmp_path,
    )
    assert info.returncode == 0, info.stderr
    table = pd.read_csv(shared_data / "mibi_ark_cell_table_slice" / "cell_table_size_normalized.csv")
    x, y = table["centroid-1"] * 0.5, table["centroid-0"] * 0.5
    assert "cells:      300" in info.stdout
    assert "features:   43" in info.stdout
    assert "FOVs:       2 (1, 2)" in info.stdout
    assert (
        f"extent µm:  x {x.min():.1f} .. {x.max():.1f} ({x.max() - x.min():.1f}), y {y.min():.1f} .. {y.max():.1f}"
        in info.stdout
    )


def test_bad_input_exits_2_with_one_line(shared_data: Path, tmp_path: Path) -> None:
    proc = _run(["info", str(shared_data / "merscope_vpt_tests" / "liver94")], tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "missing 1 file(s): cell_metadata.csv" in lines[0]
    assert "Traceback" not in proc.stderr
    ok = _run(
        ["info", str(shared_data / "merscope_vpt_tests" / "liver94"), "--option", "require_coordinates=false"], tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    assert "controls:   15 (kept apart)" in ok.stdout
    assert "extent µm:  no coordinates" in ok.stdout


def test_new_platform_names_on_the_command_line(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "mif_vectra_phenoptr" / "sample_cell_seg_data.csv.gz"
    info = _run(["info", str(path), "--platform", "inForm"], tmp_path)
    assert info.returncode == 0, info.stderr
    assert "cells:      6072" in info.stdout
    assert "features:   7" in info.stdout
    helptext = _run(["run", "--help"], tmp_path).stdout
    for name in ("Visium HD", "CosMx", "inForm", "QuPath", "HALO"):
        assert name in " ".join(helptext.split())
