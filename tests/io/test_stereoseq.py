"""Stereo-seq: no small real GEM / GEF is available, so the tests write GEMs and GEFs in the documented layouts.

GEM (SAW / stereopy documentation): tab-separated, after ``#`` header lines (``#FileFormat=GEMv0.1``,
``#SortedBy=None``, ``#BinSize=1``, ``#Omics=Transcriptomics``, ``#Stereo-seqChip=...``, ``#OffsetX=...``,
``#OffsetY=...``); columns ``geneID x y MIDCount`` (``MIDCounts`` / ``UMICount`` in some versions, ``geneName``
and ``ExonCount`` in newer ones); cell-bin GEMs add ``CellID``. GEF (HDF5): see the GEF section below.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import detect_platform, read, stereoseq

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
    with pytest.raises(InputError, match=r"chip.gef: not a readable HDF5 file .*expected a Stereo-seq GEF"):
        read(tmp_path / "chip.gef")
    _write_gem(tmp_path / "other.gem", rows)
    with pytest.raises(
        InputError,
        match=r"expected exactly one GEM or GEF file, found 2 GEM files .* and 1 GEF file \(\['chip.gef'\]\)",
    ):
        stereoseq(tmp_path)
    (tmp_path / "empty.gem").write_text("")
    with pytest.raises(InputError, match="the file is empty"):
        stereoseq(tmp_path / "empty.gem")
    (tmp_path / "header_only.gem").write_text("\n".join(HEADER) + "\ngeneID\tx\ty\tMIDCount\n")
    with pytest.raises(InputError, match="has a header but no rows"):
        stereoseq(tmp_path / "header_only.gem")


# ------------------------------------------------------------------------------------------------------------ GEF
# Square-bin GEF (STOmics geftools bgef_writer.cpp / gef.h; GEF 4 per Stereopy and geftools_rs): file attributes
# version (uint32), geftool_ver (uint32[3]), omics / bin_type (32-byte strings); /geneExp/bin1/gene compound
# (gene S32 / S64 before GEF 4; geneID + geneName S64 from GEF 4) + offset, count (uint32), gene-major index into
# /geneExp/bin1/expression, a packed compound x, y (int32), count (uint8 / uint16 / uint32 after the largest count)
# with attributes minX, minY, maxX, maxY (int32), maxExp, resolution (uint32); /geneExp/bin1/exon (uint8);
# /geneExp/binN levels hold (x // N, y // N) bin indices (bin_task.cpp) and must not be used.
# Cell-bin GEF (cgef_writer.cpp): file attributes version, resolution (uint32), offsetX, offsetY (int32),
# geftool_ver, omics; /cellBin/cell compound id (uint32), x, y (int32), offset (uint32), geneCount, expCount,
# dnbCount, area, cellTypeID, clusterID (uint16); /cellBin/gene (geneName S32 without expCount in early geftools,
# S64 with expCount later, plus geneID in newer gefpy); /cellBin/cellExp geneID (uint16 before geftools 0.7.6,
# uint32 after) + count (uint16); /cellBin/geneExp cellID (uint32) + count; /cellBin/cellBorder int16
# (n, 32, 2) offsets from the centre padded with 32767.


def _u32(*values: int) -> np.ndarray:
    return np.array(values, dtype="<u4")


def _s32(text: str) -> np.ndarray:
    return np.array([text.encode()], dtype="S32")


def _count_type(max_count: int) -> str:
    return "u1" if max_count <= 0xFF else ("<u2" if max_count <= 0xFFFF else "<u4")


def _planted(seed: int = 3) -> tuple[pd.DataFrame, list[str]]:
    """(gene, DNB) records in absolute chip coordinates; genes with a repeated symbol; a gene order that is not
    sorted (the order SAW writes genes in is its own)."""
    rng = np.random.default_rng(seed)
    genes = pd.DataFrame(
        {
            "geneID": ["ENSMUSG07", "ENSMUSG02", "ENSMUSG11", "ENSMUSG05", "ENSMUSG03", "ENSMUSG09"],
            "geneName": ["Krt8", "Actb", "Ptprc", "Actb", "Cd3e", "Gapdh"],
        }
    )
    n = 900
    pick = rng.integers(0, len(genes), n)
    rows = pd.DataFrame(
        {
            "geneID": genes["geneID"].to_numpy()[pick],
            "geneName": genes["geneName"].to_numpy()[pick],
            "x": rng.integers(12_000, 12_260, n),
            "y": rng.integers(8_000, 8_170, n),
            "MIDCount": rng.integers(1, 7, n),
        }
    )
    rows = rows.drop_duplicates(["geneID", "x", "y"]).reset_index(drop=True)
    rows.loc[0, "MIDCount"] = 300  # counts above 255: uint16 count field
    return rows, list(genes["geneID"])


def _gene_major(rows: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Records gene by gene in ``order`` (as SAW / geftools write GEM and GEF), DNBs sorted within a gene."""
    key = rows["geneID"].map({g: i for i, g in enumerate(order)})
    return rows.assign(_k=key).sort_values(["_k", "x", "y"], kind="stable").drop(columns="_k").reset_index(drop=True)


def _write_bgef(
    path: Path,
    rows: pd.DataFrame,
    order: list[str],
    *,
    gef4: bool = True,
    name_bytes: int = 64,
    resolution: int = 500,
    extra_level: int | None = 100,
) -> Path:
    recs = _gene_major(rows, order)
    counts = recs["MIDCount"].to_numpy()
    n_per_gene = recs.groupby("geneID", sort=False).size().reindex(order).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(n_per_gene)[:-1]])
    names = recs.drop_duplicates("geneID").set_index("geneID")["geneName"].reindex(order).to_numpy()
    with h5py.File(path, "w") as f:
        f.attrs.create("version", _u32(4 if gef4 else 2))
        f.attrs.create("geftool_ver", _u32(1, 1, 20) if gef4 else _u32(0, 8, 9))
        f.attrs.create("omics", _s32("Transcriptomics"))
        f.attrs.create("bin_type", _s32("Bin"))
        f.create_group("wholeExp")
        bin1 = f.create_group("geneExp/bin1")
        width = 8 + np.dtype(_count_type(int(counts.max()))).itemsize
        exp_type = np.dtype(
            {
                "names": ["x", "y", "count"],
                "formats": ["<i4", "<i4", _count_type(int(counts.max()))],
                "offsets": [0, 4, 8],
                "itemsize": width,
            }
        )
        exp = np.zeros(len(recs), dtype=exp_type)
        exp["x"], exp["y"], exp["count"] = recs["x"], recs["y"], counts
        ds = bin1.create_dataset("expression", data=exp)
        for key, value in (
            ("minX", recs["x"].min()),
            ("minY", recs["y"].min()),
            ("maxX", recs["x"].max()),
            ("maxY", recs["y"].max()),
        ):
            ds.attrs.create(key, np.array([value], dtype="<i4"))
        ds.attrs.create("maxExp", _u32(int(counts.max())))
        ds.attrs.create("resolution", _u32(resolution))
        if gef4:
            gene_type = np.dtype([("geneID", "S64"), ("geneName", "S64"), ("offset", "<u4"), ("count", "<u4")])
        else:
            gene_type = np.dtype([("gene", f"S{name_bytes}"), ("offset", "<u4"), ("count", "<u4")])
        gene = np.zeros(len(order), dtype=gene_type)
        gene["geneID" if gef4 else "gene"] = [g.encode() for g in order]
        if gef4:
            gene["geneName"] = [g.encode() for g in names]
        gene["offset"], gene["count"] = offsets, n_per_gene
        bin1.create_dataset("gene", data=gene)
        exon = bin1.create_dataset("exon", data=np.minimum(counts, 255).astype("u1"))
        exon.attrs.create("maxExon", np.array([min(int(counts.max()), 255)], dtype="<i4"))
        if extra_level:  # a pre-binned level in geftools' own convention (x // N): the reader must ignore it
            binned = recs.assign(x=recs["x"] // extra_level, y=recs["y"] // extra_level)
            binned = binned.groupby(["geneID", "x", "y"], sort=False, as_index=False)["MIDCount"].sum()
            binned = _gene_major(binned, order)
            lvl = f.create_group(f"geneExp/bin{extra_level}")
            e = np.zeros(len(binned), dtype=[("x", "<i4"), ("y", "<i4"), ("count", "<u4")])
            e["x"], e["y"], e["count"] = binned["x"], binned["y"], binned["MIDCount"]
            lvl.create_dataset("expression", data=e)
            g = np.zeros(len(order), dtype=[("gene", "S64"), ("offset", "<u4"), ("count", "<u4")])
            per = binned.groupby("geneID", sort=False).size().reindex(order).to_numpy()
            g["gene"], g["offset"], g["count"] = (
                [o.encode() for o in order],
                np.concatenate([[0], np.cumsum(per)[:-1]]),
                per,
            )
            lvl.create_dataset("gene", data=g)
    return path


@pytest.mark.parametrize(("gef4", "name_bytes"), [(True, 64), (False, 64), (False, 32)])
@pytest.mark.parametrize("bin_size", [1, 37, 50, 100])
def test_gem_and_gef_of_the_same_data_give_the_same_anndata(
    tmp_path: Path, gef4: bool, name_bytes: int, bin_size: int
) -> None:
    rows, order = _planted()
    gem_rows = _gene_major(rows, order)
    if not gef4:  # before GEF 4 there is no symbol: the GEM has geneID only
        gem_rows = gem_rows.drop(columns="geneName")
    gem = _write_gem(tmp_path / "chip.gem", gem_rows.assign(ExonCount=1))
    gef = _write_bgef(tmp_path / "chip.tissue.gef", rows, order, gef4=gef4, name_bytes=name_bytes)
    a, g = stereoseq(gem, bin_size=bin_size), stereoseq(gef, bin_size=bin_size)
    assert list(g.obs_names) == list(a.obs_names)
    assert list(g.var_names) == list(a.var_names)
    assert list(g.var["gene_ids"]) == list(a.var["gene_ids"]) == order
    assert (g.X != a.X).nnz == 0
    assert g.X.dtype == a.X.dtype == np.float32
    np.testing.assert_array_equal(g.obsm[Keys.SPATIAL], a.obsm[Keys.SPATIAL])
    pd.testing.assert_frame_equal(g.obs, a.obs)
    expected_names = ["Krt8", "Actb", "Ptprc", "Actb-1", "Cd3e", "Gapdh"] if gef4 else order
    assert list(g.var_names) == expected_names
    assert float(g.X.sum()) == float(rows["MIDCount"].sum())
    prov = g.uns[Keys.PROVENANCE]
    assert prov["version"] == ("GEF 4 (geftools 1.1.20)" if gef4 else "GEF 2 (geftools 0.8.9)")
    assert prov["bin_size"] == bin_size
    assert prov["pixel_size_um"] == a.uns[Keys.PROVENANCE]["pixel_size_um"] == 0.5
    assert prov["expression_attributes"]["minX"] == int(rows["x"].min())


def test_gef_square_bins_known_values_and_dispatch(tmp_path: Path) -> None:
    # gene A at DNBs (0, 0) x1 and (49, 0) x2; gene B at (50, 99) x300 (uint16 counts); gene C has no record;
    # the gene dataset lists B, C, A: its order, not the record order, is the var order
    with h5py.File(tmp_path / "SS2.gef", "w") as f:
        f.attrs.create("version", _u32(2))
        f.attrs.create("geftool_ver", _u32(0, 8, 9))
        f.attrs.create("omics", _s32("Transcriptomics"))
        bin1 = f.create_group("geneExp/bin1")
        exp_type = np.dtype(
            {"names": ["x", "y", "count"], "formats": ["<i4", "<i4", "<u2"], "offsets": [0, 4, 8], "itemsize": 10}
        )
        exp = np.array([(0, 0, 1), (49, 0, 2), (50, 99, 300)], dtype=exp_type)
        bin1.create_dataset("expression", data=exp).attrs.create("resolution", _u32(500))
        gene = np.array(
            [(b"B", 2, 1), (b"C", 3, 0), (b"A", 0, 2)], dtype=[("gene", "S64"), ("offset", "<u4"), ("count", "<u4")]
        )
        bin1.create_dataset("gene", data=gene)
    adata = read(tmp_path / "SS2.gef")  # smo.io.read dispatches .gef to the Stereo-seq reader
    assert (adata.n_obs, adata.n_vars) == (2, 3)
    assert list(adata.obs_names) == ["bin50_0_0", "bin50_1_1"]
    assert list(adata.var_names) == ["B", "C", "A"]
    assert adata["bin50_0_0", "A"].X.toarray()[0, 0] == 3
    assert adata["bin50_1_1", "B"].X.toarray()[0, 0] == 300
    np.testing.assert_array_equal(adata.X.toarray(), [[0, 0, 3], [300, 0, 0]])
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], [[12.25, 12.25], [37.25, 37.25]])
    np.testing.assert_array_equal(adata.obs["bin_x"], [0, 1])
    assert adata.uns[Keys.PROVENANCE]["gef_attributes"]["omics"] == "Transcriptomics"
    adata.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert back.uns[Keys.PROVENANCE]["gef_attributes"]["geftool_ver"].tolist() == [0, 8, 9]
    # a folder holding one GEF; geftools' .bgef suffix; bin_size=1 keeps every DNB
    assert detect_platform(tmp_path) == ["stereoseq"]
    assert read(tmp_path, bin_size=1).n_obs == 3
    (tmp_path / "SS2.gef").rename(tmp_path / "SS2.bgef")
    assert read(tmp_path / "SS2.bgef", platform="Stereo-seq").n_obs == 2


def test_gef_resolution_sets_the_dnb_pitch(tmp_path: Path) -> None:
    rows, order = _planted()
    gef = _write_bgef(tmp_path / "a.gef", rows, order, resolution=715)
    adata = stereoseq(gef, bin_size=10)
    bx, by = adata.obs["bin_x"].to_numpy(), adata.obs["bin_y"].to_numpy()
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], np.column_stack([bx * 10 + 4.5, by * 10 + 4.5]) * 0.715)
    assert adata.uns[Keys.PROVENANCE]["pixel_size_um"] == pytest.approx(0.715)


def _write_cgef(path: Path, *, new: bool = True) -> tuple[Path, np.ndarray]:
    """A cell-bin GEF of 5 cells x 4 genes; cell id 0 is a real cell, cell 3 holds no gene."""
    X = np.array([[2, 0, 1, 0], [0, 5, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 9, 0, 300]])
    names = ["Actb", "Krt8", "Actb", "Ptprc"]
    ids = ["ENSMUSG02", "ENSMUSG07", "ENSMUSG05", "ENSMUSG11"]
    centre = np.array([[12010, 8010], [12040, 8022], [12100, 8150], [12200, 8001], [12255, 8169]])
    cell_rows, cell_cols = np.nonzero(X)
    gene_count = np.bincount(cell_rows, minlength=5)
    offset = np.concatenate([[0], np.cumsum(gene_count)[:-1]])
    with h5py.File(path, "w") as f:
        f.attrs.create("version", _u32(2))
        f.attrs.create("resolution", _u32(500))
        f.attrs.create("offsetX", np.array([12000], dtype="<i4"))
        f.attrs.create("offsetY", np.array([8000], dtype="<i4"))
        f.attrs.create("geftool_ver", _u32(0, 8, 9) if new else _u32(0, 7, 2))
        f.attrs.create("omics", _s32("Transcriptomics"))
        grp = f.create_group("cellBin")
        cell_type = [("id", "<u4"), ("x", "<i4"), ("y", "<i4"), ("offset", "<u4")] + [
            (k, "<u2") for k in ("geneCount", "expCount", "dnbCount", "area", "cellTypeID", "clusterID")
        ]
        cell = np.zeros(5, dtype=cell_type)
        cell["id"], cell["x"], cell["y"], cell["offset"] = np.arange(5), centre[:, 0], centre[:, 1], offset
        cell["geneCount"], cell["expCount"] = gene_count, X.sum(axis=1)
        cell["dnbCount"], cell["area"] = [30, 41, 52, 10, 77], [60, 80, 101, 20, 150]
        ds = grp.create_dataset("cell", data=cell)
        for key, value in (("minX", 12010), ("minY", 8001), ("maxX", 12255), ("maxY", 8169)):
            ds.attrs.create(key, np.array([value], dtype="<i4"))
        cexp = np.zeros(cell_rows.size, dtype=[("geneID", "<u4" if new else "<u2"), ("count", "<u2")])
        cexp["geneID"], cexp["count"] = cell_cols, X[cell_rows, cell_cols]
        grp.create_dataset("cellExp", data=cexp).attrs.create("maxCount", np.array([300], dtype="<u2"))
        by_gene = np.lexsort((cell_rows, cell_cols))
        gexp = np.zeros(cell_rows.size, dtype=[("cellID", "<u4"), ("count", "<u2")])
        gexp["cellID"], gexp["count"] = cell_rows[by_gene], X[cell_rows, cell_cols][by_gene]
        grp.create_dataset("geneExp", data=gexp)
        cells_per_gene = np.bincount(cell_cols, minlength=4)
        if new:
            gene_type = [
                ("geneID", "S64"),
                ("geneName", "S64"),
                ("offset", "<u4"),
                ("cellCount", "<u4"),
                ("expCount", "<u4"),
                ("maxMIDcount", "<u2"),
            ]
        else:
            gene_type = [("geneName", "S32"), ("offset", "<u4"), ("cellCount", "<u4"), ("maxMIDcount", "<u2")]
        gene = np.zeros(4, dtype=gene_type)
        gene["geneName"] = [n.encode() for n in names]
        if new:
            gene["geneID"], gene["expCount"] = [i.encode() for i in ids], X.sum(axis=0)
        gene["offset"], gene["cellCount"] = np.concatenate([[0], np.cumsum(cells_per_gene)[:-1]]), cells_per_gene
        gene["maxMIDcount"] = X.max(axis=0)
        grp.create_dataset("gene", data=gene)
        border = np.full((5, 32, 2), 32767, dtype="<i2")
        border[:, :4] = [[-3, -3], [3, -3], [3, 3], [-3, 3]]
        grp.create_dataset("cellBorder", data=border)
        grp.create_dataset("cellTypeList", data=np.array([b"default"], dtype="S32"))
    return path, X


@pytest.mark.parametrize("new", [True, False])
def test_cell_bin_gef(tmp_path: Path, new: bool) -> None:
    gef, X = _write_cgef(tmp_path / "SS2.cellbin.gef", new=new)
    adata = stereoseq(gef)
    assert (adata.n_obs, adata.n_vars) == (5, 4)
    assert list(adata.obs_names) == ["0", "1", "2", "3", "4"]  # geftools numbers cells from 0
    np.testing.assert_array_equal(adata.X.toarray(), X)
    assert adata["4", "Ptprc"].X.toarray()[0, 0] == 300
    assert list(adata.var_names) == ["Actb", "Krt8", "Actb-1", "Ptprc"]
    expected_ids = ["ENSMUSG02", "ENSMUSG07", "ENSMUSG05", "ENSMUSG11"] if new else ["Actb", "Krt8", "Actb", "Ptprc"]
    assert list(adata.var["gene_ids"]) == expected_ids
    np.testing.assert_array_equal(adata.obsm[Keys.SPATIAL][0], [6005.0, 4005.0])
    np.testing.assert_array_equal(adata.obsm[Keys.SPATIAL][4], [12255 * 0.5, 8169 * 0.5])
    np.testing.assert_array_equal(adata.obs["n_dnb"], [30, 41, 52, 10, 77])
    np.testing.assert_array_equal(adata.obs["area"], [60, 80, 101, 20, 150])
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["binning"] == "cell bins (/cellBin/cell)"
    assert prov["gef_attributes"]["offsetX"] == 12000
    adata.write_h5ad(tmp_path / "cells.h5ad")
    assert ad.read_h5ad(tmp_path / "cells.h5ad").uns[Keys.PROVENANCE]["gef_attributes"]["omics"] == "Transcriptomics"
    # smo.io.read on a folder with the one cell-bin GEF: cells by default
    assert read(tmp_path).n_obs == 5
    with pytest.raises(
        InputError, match=r"cell_bins=False needs a square-bin GEF .*cell-bin GEF \(groups \['cellBin'\]\)"
    ):
        stereoseq(gef, cell_bins=False)


def test_bad_gef_inputs(tmp_path: Path) -> None:
    (tmp_path / "text.gef").write_text("geneID\tx\ty\tMIDCount\n")
    with pytest.raises(InputError, match=r"text.gef: not a readable HDF5 file .*expected a Stereo-seq GEF"):
        stereoseq(tmp_path / "text.gef")
    with h5py.File(tmp_path / "other.gef", "w") as f:
        f.create_group("matrix")
        f.create_dataset("X", data=np.zeros(3))
    with pytest.raises(
        InputError,
        match=r"no /geneExp \(square-bin GEF\) or /cellBin \(cell-bin GEF\) group; the file has \['X', 'matrix'\]",
    ):
        stereoseq(tmp_path / "other.gef")
    rows, order = _planted()
    good = _write_bgef(tmp_path / "good.gef", rows, order)
    with pytest.raises(
        InputError, match=r"cell_bins=True needs a cell-bin GEF .*square-bin GEF \(groups \['geneExp', 'wholeExp'\]\)"
    ):
        stereoseq(good, cell_bins=True)

    def edited(name: str, edit: Callable[[h5py.File], object]) -> Path:
        path = tmp_path / name
        path.write_bytes(good.read_bytes())
        with h5py.File(path, "r+") as f:
            edit(f)
        return path

    no_bin1 = edited("no_bin1.gef", lambda f: f.__delitem__("geneExp/bin1"))
    with pytest.raises(InputError, match=r"/geneExp has no bin1 level \(it has \['bin100'\]\)"):
        stereoseq(no_bin1)
    no_exp = edited("no_exp.gef", lambda f: f.__delitem__("geneExp/bin1/expression"))
    with pytest.raises(
        InputError, match=r"/geneExp/bin1 lacks dataset\(s\) \['expression'\]; it has \['exon', 'gene'\]"
    ):
        stereoseq(no_exp)

    def rename_count(f: h5py.File) -> None:
        old = f["geneExp/bin1/expression"][()]
        del f["geneExp/bin1/expression"]
        new = np.zeros(old.size, dtype=[("x", "<i4"), ("y", "<i4"), ("cnt", "<u4")])
        new["x"], new["y"], new["cnt"] = old["x"], old["y"], old["count"]
        f["geneExp/bin1"].create_dataset("expression", data=new)

    with pytest.raises(
        InputError, match=r"expression lacks field\(s\) count \('count'\); its fields are \['x', 'y', 'cnt'\]"
    ):
        stereoseq(edited("cnt.gef", rename_count))

    def plain(f: h5py.File) -> None:
        del f["geneExp/bin1/expression"]
        f["geneExp/bin1"].create_dataset("expression", data=np.zeros(5, dtype="<u4"))

    with pytest.raises(InputError, match=r"expression is not a compound dataset \(dtype uint32\)"):
        stereoseq(edited("plain.gef", plain))

    def shift_offset(f: h5py.File) -> None:
        gene = f["geneExp/bin1/gene"][()]
        gene["offset"][-1] += 10_000
        f["geneExp/bin1/gene"][...] = gene

    with pytest.raises(
        InputError,
        match=r"/geneExp/bin1/gene \(offset, count\) points outside /geneExp/bin1/expression .*corrupt or truncated",
    ):
        stereoseq(edited("offset.gef", shift_offset))
    truncated = tmp_path / "truncated.gef"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match=r"truncated.gef: (not a readable HDF5 file|could not read the GEF data)"):
        stereoseq(truncated)
    cgef, _ = _write_cgef(tmp_path / "c.cellbin.gef")
    with h5py.File(cgef, "r+") as f:
        cexp = f["cellBin/cellExp"][()]
        cexp["geneID"][2] = 4
        f["cellBin/cellExp"][...] = cexp
    with pytest.raises(
        InputError, match=r"/cellBin/cellExp field 'geneID' has 1 gene indices outside /cellBin/gene \(0..3\)"
    ):
        stereoseq(cgef)
    with pytest.raises(
        InputError,
        match=r"expected exactly one GEM or GEF file, found no GEM file \(\*.gem, \*.gem.gz\) and \d+ GEF files",
    ):
        stereoseq(tmp_path)
