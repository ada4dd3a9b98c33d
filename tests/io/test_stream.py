"""stream_to_zarr: vendor matrices copied block by block into a zarr-backed AnnData, read back to the same values."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError
from spatialmultiomics.io import stream_to_zarr
from spatialmultiomics.io._tenx import read_10x_h5


def test_real_10x_h5_streamed_in_blocks_reads_back_exactly(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "visium_scanpy_fixture" / "1.0.0" / "filtered_feature_bc_matrix.h5"
    whole = read_10x_h5(src)
    genes = (whole.features["feature_type"] == "Gene Expression").to_numpy()
    out = stream_to_zarr(src, tmp_path / "spots.zarr", chunk_cells=7)  # blocks that do not divide the spots
    back = ad.read_zarr(out.path)
    assert (out.n_obs, out.n_vars) == (whole.X.shape[0], int(genes.sum()))
    assert back.X.format == "csr" and back.X.dtype == np.float32
    assert (whole.X[:, np.flatnonzero(genes)] != back.X).nnz == 0 and out.nnz == back.X.nnz
    assert back.obs_names.tolist() == [str(b) for b in whole.barcodes]
    assert back.var["name"].tolist() == whole.features.loc[genes, "name"].tolist()
    assert back.uns["provenance"]["format"] == "10x HDF5"
    # the lazy route of the out-of-core factorization sees the same matrix
    import zarr
    from anndata.experimental import read_elem_lazy

    lazy = read_elem_lazy(zarr.open_group(out.path, mode="r")["X"])
    assert (lazy.compute() != back.X).nnz == 0


def test_feature_type_selects_the_antibodies(tenx, tmp_path: Path) -> None:
    X = np.array([[1, 0, 7], [0, 2, 0], [3, 3, 9], [0, 0, 1]])
    src = tenx.h5(
        tmp_path / "cell_feature_matrix.h5",
        X,
        [f"b{i}" for i in range(4)],
        ["g1", "g2", "p1"],
        ["CD3E", "CD3E", "CD3"],
        ["Gene Expression", "Gene Expression", "Protein Expression"],
    )
    rna = ad.read_zarr(stream_to_zarr(src, tmp_path / "rna.zarr", chunk_cells=3).path)
    assert rna.var_names.tolist() == ["CD3E", "CD3E-1"] and rna.X.toarray().tolist() == X[:, :2].tolist()
    prot = ad.read_zarr(stream_to_zarr(src, tmp_path / "p.zarr", feature_type="Protein Expression").path)
    assert prot.var_names.tolist() == ["CD3"] and prot.X.toarray().ravel().tolist() == [7, 0, 9, 1]
    with pytest.raises(InputError, match=r"no feature of feature_type='Antibody Capture' .*'Protein Expression'"):
        stream_to_zarr(src, tmp_path / "x.zarr", feature_type="Antibody Capture")


def test_real_merscope_cell_by_gene_reads_back_exactly(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "merscope_vpt_tests" / "smallset" / "cell_by_gene.csv"
    table = pd.read_csv(src, index_col=0)
    out = stream_to_zarr(src, tmp_path / "cells.zarr", chunk_cells=100)
    back = ad.read_zarr(out.path)
    assert back.shape == table.shape == (out.n_obs, out.n_vars)
    np.testing.assert_array_equal(back.X.toarray(), table.to_numpy(dtype=np.float32))
    assert back.obs_names.tolist() == table.index.astype(str).tolist()
    assert back.var_names.tolist() == table.columns.tolist()
    # positions from cell_metadata.csv (EntityID, center_x, center_y), in the matrix's order
    meta = pd.read_csv(
        src.with_name("cell_metadata.csv"), dtype={"EntityID": str}, float_precision="round_trip"
    ).set_index("EntityID")
    placed = stream_to_zarr(src, tmp_path / "placed.zarr", coordinates=src.with_name("cell_metadata.csv"))
    xy = ad.read_zarr(placed.path).obsm["spatial"]
    expected = meta.loc[table.index.astype(str), ["center_x", "center_y"]].to_numpy()
    np.testing.assert_array_equal(xy, expected)


def test_refusals_leave_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "cell_by_gene.csv"
    src.write_text("cell,CD3E,CD8A\nc1,3,0\nc2,0,5\nc3,x,1\n")
    with pytest.raises(InputError, match=r"non-numeric \['CD3E'\] in rows 2-3"):
        stream_to_zarr(src, tmp_path / "cells.zarr", chunk_cells=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell_by_gene.csv"]  # no store, no partial one
    src.write_text("cell,CD3E,CD8A\nc1,3,0\n")
    stream_to_zarr(src, tmp_path / "cells.zarr")
    with pytest.raises(InputError, match="the store exists; pass overwrite=True"):
        stream_to_zarr(src, tmp_path / "cells.zarr")
    assert stream_to_zarr(src, tmp_path / "cells.zarr", overwrite=True).n_obs == 1
    pos = tmp_path / "cells.csv"
    pos.write_text("cell_id,x_centroid,y_centroid\nc1,1.5,2.5\n")
    assert ad.read_zarr(stream_to_zarr(src, tmp_path / "p.zarr", coordinates=pos, pixel_size_um=2.0).path).obsm[
        "spatial"
    ].tolist() == [[3.0, 5.0]]
    pos.write_text("cell_id,x_centroid,y_centroid\nc9,1.5,2.5\n")
    with pytest.raises(
        InputError, match=r"1 of 1 cells of the matrix have no row in column 'cell_id' \(e.g. \['c1'\]\)"
    ):
        stream_to_zarr(src, tmp_path / "q.zarr", coordinates=pos)
    assert not (tmp_path / "q.zarr").exists()
    with pytest.raises(InputError, match=r"reads 10x HDF5 \(\.h5\) and cell-by-feature tables"):
        stream_to_zarr(tmp_path / "cells.zarr" / "zarr.json", tmp_path / "y.zarr")


def test_repeated_cell_ids_are_refused_across_blocks(tmp_path: Path, monkeypatch) -> None:
    """A cell id that comes back in a later block is refused like the in-memory readers refuse it (the count and
    an example), and no store is left; ids whose 64-bit hashes collide but differ are written."""
    src = tmp_path / "cell_by_gene.csv"
    src.write_text("cell,CD3E,CD8A\nc1,3,0\nc2,0,5\nc3,1,1\nc1,2,2\nc2,0,1\n")
    with pytest.raises(InputError, match=r"cell_by_gene.csv: 2 duplicate cell ids \(e.g. 'c1'\); ids must be unique"):
        stream_to_zarr(src, tmp_path / "cells.zarr", chunk_cells=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cell_by_gene.csv"]
    src.write_text("cell,CD3E,CD8A\nc1,3,0\nc2,0,5\nc3,1,1\n")
    monkeypatch.setattr(pd.util, "hash_array", lambda values, **_: np.zeros(len(values), dtype=np.uint64))
    out = stream_to_zarr(src, tmp_path / "cells.zarr", chunk_cells=2)
    assert ad.read_zarr(out.path).obs_names.tolist() == ["c1", "c2", "c3"]
