"""``spatialmultiomics export RESULT --to spatialdata -o OUT.zarr`` (in-process through ``main``)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import spatialmultiomics as smo
from spatialmultiomics import Keys
from spatialmultiomics._mudata import read_h5mu, write_h5mu
from spatialmultiomics.cli import main


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A result folder as far as export reads it: result.h5mu of a small pipeline run."""
    mdata = smo.datasets.paper_benchmark(seed=0, n_cells=120)
    res = smo.run_pipeline(
        mdata["rna"], mdata["protein"], n_factors=4, markers=dict(mdata.uns["markers"]), progress=False
    )
    folder = tmp_path_factory.mktemp("results")
    write_h5mu(res.mdata, folder / "result.h5mu")
    return folder


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    return exc.value.code, [ln.strip() for ln in err.splitlines() if ln.strip()]


def test_export_without_the_extra_exits_2_naming_it(result_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "spatialdata", None)  # import spatialdata -> ImportError
    code, lines = _cli(["export", str(result_dir), "-o", str(tmp_path / "r.zarr")], capsys)
    assert code == 2
    assert lines == ["error: This feature needs 'spatialdata': pip install 'spatialmultiomics[interop]'"]
    assert not (tmp_path / "r.zarr").exists()


def test_export_of_a_folder_without_result_exits_2(tmp_path: Path, capsys) -> None:
    code, lines = _cli(["export", str(tmp_path), "-o", str(tmp_path / "r.zarr")], capsys)
    assert code == 2
    assert len(lines) == 1
    assert "result.h5mu: no such file; give a result folder" in lines[0]


@pytest.mark.interop
def test_export_writes_a_store_spatialdata_opens(result_dir: Path, tmp_path: Path, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = pytest.importorskip("spatialdata")
    out = tmp_path / "result.zarr"
    main(["export", str(result_dir), "--to", "SpatialData", "-o", str(out), "--radius", "4"])
    assert f"spatialdata: {out}" in capsys.readouterr().out
    mdata = read_h5mu(result_dir / "result.h5mu")
    sdata = sd.read_zarr(out)
    assert set(sdata.tables) == {"rna", "protein"}
    np.testing.assert_array_equal(sdata.shapes["cells"]["radius"].to_numpy(), np.full(mdata.n_obs, 4.0))
    for name in ("rna", "protein"):
        np.testing.assert_array_equal(np.asarray(sdata.tables[name].X), np.asarray(mdata[name].X))
        np.testing.assert_array_equal(sdata.tables[name].obsm[Keys.SPATIAL], mdata.obsm[Keys.SPATIAL])


def test_convert_a_cell_by_gene_table_and_refuse_an_existing_store(tmp_path: Path, capsys) -> None:
    import anndata as ad

    src = tmp_path / "cell_by_gene.csv"
    src.write_text("cell,CD3E,CD8A\nc1,3,0\nc2,0,5\nc3,1,1\n")
    out = tmp_path / "rna.zarr"
    assert main(["convert", str(src), "-o", str(out), "--chunk-cells", "2"]) in (None, 0)
    assert f"{out}: 3 cells x 2 features, 4 values" in capsys.readouterr().out
    assert ad.read_zarr(out).X.toarray().tolist() == [[3.0, 0.0], [0.0, 5.0], [1.0, 1.0]]
    code, lines = _cli(["convert", str(src), "-o", str(out)], capsys)
    assert code == 2 and lines[-1].endswith("the store exists; pass overwrite=True (--overwrite) to replace it.")
