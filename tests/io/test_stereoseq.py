"""Stereo-seq: no small real GEM is available, so the tests write GEMs in the documented SAW layout.

GEM (SAW / stereopy documentation): tab-separated, after ``#`` header lines (``#FileFormat=GEMv0.1``,
``#SortedBy=None``, ``#BinSize=1``, ``#Omics=Transcriptomics``, ``#Stereo-seqChip=...``, ``#OffsetX=...``,
``#OffsetY=...``); columns ``geneID x y MIDCount`` (``MIDCounts`` / ``UMICount`` in some versions, ``geneName``
and ``ExonCount`` in newer ones); cell-bin GEMs add ``CellID``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import read, stereoseq

HEADER = [
    "#FileFormat=GEMv0.1",
    "#SortedBy=None",
    "#BinSize=1",
    "#Omics=Transcriptomics",
    "#Stereo-seqChip=SS200000135TL_D1",
    "#OffsetX=12000",
    "#OffsetY=8000",
]


def _rows(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "geneID": rng.choice(["Actb", "Gapdh", "Krt8", "Cd3e", "Ptprc"], n),
            "x": rng.integers(0, 260, n),
            "y": rng.integers(0, 170, n),
            "MIDCount": rng.integers(1, 6, n),
        }
    )
    return frame.drop_duplicates(["geneID", "x", "y"]).reset_index(drop=True)


def _write_gem(path: Path, frame: pd.DataFrame, header: list[str] = HEADER) -> Path:
    text = "\n".join(header) + ("\n" if header else "") + frame.to_csv(sep="\t", index=False)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("count_name", "name", "bin_size"),
    [("MIDCount", "a.gem", 50), ("MIDCounts", "a.gem.gz", 100), ("UMICount", "a.txt", 1)],
)
def test_square_bins_match_a_brute_force_binning(tmp_path: Path, count_name: str, name: str, bin_size: int) -> None:
    rows = _rows()
    gem = _write_gem(tmp_path / name, rows.rename(columns={"MIDCount": count_name}).assign(ExonCount=1))
    adata = stereoseq(gem, bin_size=bin_size)
    expected = rows.assign(bx=rows["x"] // bin_size, by=rows["y"] // bin_size).pivot_table(
        index=["bx", "by"], columns="geneID", values="MIDCount", aggfunc="sum", fill_value=0
    )
    assert adata.n_obs == len(expected)
    for (bx, by), counts in expected.iloc[:: max(1, len(expected) // 7)].iterrows():
        cell = f"bin{bin_size}_{bx}_{by}"
        for gene, value in counts.items():
            assert adata[cell, gene].X.toarray()[0, 0] == value
        centre = (np.array([bx, by]) * bin_size + (bin_size - 1) / 2) * 0.5
        np.testing.assert_allclose(adata[cell].obsm[Keys.SPATIAL][0], centre)
    assert float(adata.X.sum()) == float(rows["MIDCount"].sum())
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["version"] == "GEMv0.1"
    assert prov["gem_header"]["OffsetX"] == "12000"
    assert prov["bin_size"] == bin_size
    assert prov["pixel_size_um"] == 0.5


def test_default_bin_is_25_um_and_read_dispatches_gems(tmp_path: Path) -> None:
    rows = pd.DataFrame({"geneID": ["A", "A", "B"], "x": [0, 49, 50], "y": [0, 0, 99], "MIDCount": [1, 2, 3]})
    gem = _write_gem(tmp_path / "s.gem.gz", rows)
    adata = read(gem)
    assert list(adata.obs_names) == ["bin50_0_0", "bin50_1_1"]
    np.testing.assert_array_equal(adata.X.toarray(), [[3, 0], [0, 3]])
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[12.25, 12.25], [37.25, 37.25]])
    # a folder holding one GEM
    assert read(tmp_path).n_obs == 2


def test_gene_names_and_cell_bins(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "geneID": ["ENSMUSG1", "ENSMUSG2", "ENSMUSG1", "ENSMUSG1", "ENSMUSG2", "ENSMUSG3"],
            "geneName": ["Actb", "Krt8", "Actb", "Actb", "Krt8", "Actb"],
            "x": [10, 12, 12, 40, 41, 5],
            "y": [10, 10, 10, 40, 40, 5],
            "MIDCount": [2, 1, 4, 3, 1, 9],
            "ExonCount": [2, 1, 4, 3, 1, 9],
            "CellID": [7, 7, 7, 12, 12, 0],
        }
    )
    gem = _write_gem(tmp_path / "cellbin.gem", rows)
    adata = stereoseq(gem)
    assert list(adata.obs_names) == ["7", "12"]  # CellID 0 (outside every cell) left out
    assert list(adata.var_names) == ["Actb", "Krt8", "Actb-1"]
    assert list(adata.var["gene_ids"]) == ["ENSMUSG1", "ENSMUSG2", "ENSMUSG3"]
    np.testing.assert_array_equal(adata.X.toarray(), [[6, 1, 0], [3, 1, 0]])
    # centroid of the distinct DNBs: cell 7 has DNBs (10,10) and (12,10)
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[11 * 0.5, 10 * 0.5], [40.5 * 0.5, 40 * 0.5]])
    np.testing.assert_array_equal(adata.obs["n_dnb"], [2, 2])
    adata.write_h5ad(tmp_path / "s.h5ad")
    assert ad.read_h5ad(tmp_path / "s.h5ad").uns[Keys.PROVENANCE]["gem_header"]["FileFormat"] == "GEMv0.1"
    square = stereoseq(gem, cell_bins=False, bin_size=20)
    assert list(square.obs_names) == ["bin20_0_0", "bin20_2_2"]  # DNB (5, 5) of no cell is kept in square bins
    assert float(square.X.sum()) == 20


def test_bad_gem_inputs(tmp_path: Path) -> None:
    rows = _rows(20)
    gem = _write_gem(tmp_path / "bad.gem", rows.rename(columns={"MIDCount": "MIDCnt"}))
    with pytest.raises(
        InputError,
        match=r"GEM file lacks column\(s\) count \('MIDCount' / 'MIDCounts' / 'UMICount'.*its columns are \['geneID', 'x', 'y', 'MIDCnt'\]",
    ):
        stereoseq(gem)
    rows2 = rows.astype({"x": object})
    rows2.loc[3, "x"] = "12a"
    with pytest.raises(InputError, match=r"column 'x' has non-numeric values \(e.g. '12a' in data row 4\)"):
        stereoseq(_write_gem(tmp_path / "bad.gem", rows2))
    with pytest.raises(InputError, match=r"column 'MIDCount' has 1 negative counts"):
        stereoseq(_write_gem(tmp_path / "bad.gem", rows.assign(MIDCount=rows["MIDCount"].where(rows.index != 0, -1))))
    with pytest.raises(InputError, match="cell_bins=True needs a cell id column"):
        stereoseq(_write_gem(tmp_path / "bad.gem", rows), cell_bins=True)
    with pytest.raises(InputError, match=r"bin_size must be an integer >= 1, got 0"):
        stereoseq(tmp_path / "bad.gem", bin_size=0)
    (tmp_path / "chip.gef").write_bytes(b"\x89HDF")
    with pytest.raises(InputError, match="GEF .* not read; export a GEM"):
        read(tmp_path / "chip.gef")
    _write_gem(tmp_path / "other.gem", rows)
    with pytest.raises(InputError, match=r"expected exactly one GEM file, found 2 GEM files"):
        stereoseq(tmp_path)
    (tmp_path / "empty.gem").write_text("")
    with pytest.raises(InputError, match="the file is empty"):
        stereoseq(tmp_path / "empty.gem")
    (tmp_path / "header_only.gem").write_text("\n".join(HEADER) + "\ngeneID\tx\ty\tMIDCount\n")
    with pytest.raises(InputError, match="has a header but no rows"):
        stereoseq(tmp_path / "header_only.gem")
