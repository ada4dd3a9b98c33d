"""stream_to_zarr writes obs / obsm block by block: ids and positions in order, memory that does not grow with cells."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

from spatialmultiomics import InputError
from spatialmultiomics.io import stream_to_zarr


def _counts(n_cells: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.random(n_cells, 6, density=0.4, format="csr", rng=rng, data_rvs=lambda k: rng.integers(1, 9, k))


def test_ids_and_shuffled_positions_land_in_the_matrix_order(tenx, tmp_path: Path) -> None:
    n = 10_007  # blocks of 1,000 cells: ten full ones and a short last one
    X = _counts(n, 0)
    barcodes = [f"AAC{i:06d}-1" for i in range(n)]
    src = tenx.h5(
        tmp_path / "m.h5", X.toarray(), barcodes, [f"g{j}" for j in range(6)], list("ABCDEF"), ["Gene Expression"] * 6
    )
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 5000, size=(n, 2)).round(3)
    order = rng.permutation(n + 5)  # the table in another order, with 5 cells that are not in the matrix
    ids = np.array(barcodes + [f"extra{i}" for i in range(5)])
    pos = np.vstack([xy, np.zeros((5, 2))])
    pd.DataFrame({"cell_id": ids[order], "x_centroid": pos[order, 0], "y_centroid": pos[order, 1]}).to_csv(
        tmp_path / "cells.csv", index=False
    )
    out = stream_to_zarr(
        src, tmp_path / "s.zarr", coordinates=tmp_path / "cells.csv", pixel_size_um=0.5, chunk_cells=1000
    )
    back = ad.read_zarr(out.path)
    assert back.obs_names.tolist() == barcodes
    np.testing.assert_array_equal(back.obsm["spatial"], xy * 0.5)
    assert (back.X != X).nnz == 0
    # obs and obsm grew a block at a time: one zarr chunk per block of cells
    root = zarr.open_group(out.path, mode="r")
    assert root["obs/_index"].chunks == (1000,) and root["obsm/spatial"].chunks == (1000, 2)
    assert root["obs/_index"].shape == (n,) and root["obsm/spatial"].shape == (n, 2)


@pytest.mark.parametrize("kind", ["csv.gz", "parquet", "diverging"])
def test_positions_in_the_matrix_order_are_read_alongside(tenx, tmp_path: Path, kind: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="spatialmultiomics")
    n = 5003
    X = _counts(n, 4)
    barcodes = [f"cell{i:05d}" for i in range(n)]
    src = tenx.h5(
        tmp_path / "m.h5", X.toarray(), barcodes, [f"g{j}" for j in range(6)], list("ABCDEF"), ["Gene Expression"] * 6
    )
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 9000, size=(n, 2))
    table = pd.DataFrame({"cell_id": barcodes, "x_centroid": xy[:, 0], "y_centroid": xy[:, 1], "area": 1.0})
    if kind == "diverging":  # in order for the first blocks, then two rows swapped and extra cells
        table = pd.concat(
            [
                table.iloc[:4001],
                table.iloc[[4002, 4001]],
                table.iloc[4003:],
                table.iloc[:3].assign(cell_id=["z1", "z2", "z3"]),
            ]
        )
    path = tmp_path / ("cells.parquet" if kind == "parquet" else "cells.csv.gz")
    if kind == "parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, index=False, float_format="%.17g")
    out = stream_to_zarr(src, tmp_path / "s.zarr", coordinates=path, pixel_size_um=0.2125, chunk_cells=1000)
    np.testing.assert_array_equal(ad.read_zarr(out.path).obsm["spatial"], xy * 0.2125)
    # read alongside the matrix (a block at a time) unless the rows stop following it: then read whole, once
    assert caplog.text.count("does not follow the matrix's cells; read whole") == (kind == "diverging")


def test_cells_without_a_position_are_reported_together(tmp_path: Path) -> None:
    src = tmp_path / "cell_by_gene.csv"
    src.write_text("cell,CD3E\n" + "".join(f"c{i},{i}\n" for i in range(7)))
    pos = tmp_path / "cells.csv"
    pos.write_text("cell_id,x,y\n" + "".join(f"c{i},{i},{i}\n" for i in (0, 2, 4, 6)))
    with pytest.raises(
        InputError, match=r"3 of 7 cells of the matrix have no row in column 'cell_id' \(e.g. \['c1', 'c3', 'c5'\]\)"
    ):
        stream_to_zarr(src, tmp_path / "s.zarr", coordinates=pos, chunk_cells=2)  # missing cells in 3 blocks
    assert not (tmp_path / "s.zarr").exists()


def _peak_bytes(src: Path, store: Path, coordinates: Path) -> int:
    tracemalloc.start()
    try:
        stream_to_zarr(src, store, coordinates=coordinates, chunk_cells=4000)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_one_block_whatever_the_number_of_cells(tenx, tmp_path: Path) -> None:
    # 6x the cells, same blocks: the peak of Python/NumPy allocations stays that of one block, positions table in
    # the matrix's order included (14 -> 15 MiB here; keeping the ids to write obs at the end took it from 13 to
    # 36 MiB without positions, and a positions table in another order, read whole, from 15 to 21 MiB)
    genes = [f"g{j}" for j in range(6)]
    warm = tenx.h5(tmp_path / "w.h5", np.eye(6), genes, genes, genes, ["Gene Expression"] * 6)
    pd.DataFrame({"cell_id": genes, "x": 1.0, "y": 2.0}).to_csv(tmp_path / "w.csv", index=False)
    stream_to_zarr(warm, tmp_path / "w.zarr", coordinates=tmp_path / "w.csv")  # imports out of the measurement
    peaks = []
    for n in (8_000, 48_000):
        X = _counts(n, 2)
        barcodes = [f"cell{i:09d}-{'x' * 40}" for i in range(n)]  # long ids: 55 characters
        src = tenx.h5(tmp_path / f"m{n}.h5", X.toarray(), barcodes, genes, genes, ["Gene Expression"] * 6)
        xy = np.arange(2 * n, dtype=np.float64).reshape(n, 2)
        pd.DataFrame({"cell_id": barcodes, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(tmp_path / f"c{n}.csv", index=False)
        peaks.append(_peak_bytes(src, tmp_path / f"s{n}.zarr", tmp_path / f"c{n}.csv"))
        back = ad.read_zarr(tmp_path / f"s{n}.zarr")
        assert back.obs_names[-1] == barcodes[-1] and back.obsm["spatial"][-1].tolist() == xy[-1].tolist()
    assert peaks[1] < 1.1 * peaks[0] + (1 << 20), peaks
