"""Tiled join counts on coordinates that stay on disk: the tasks read them, the result is the in-memory one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.spatial import colocalization_tiled, join_counts_tiled

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")


def _section(seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * [900.0, 600.0] - [50.0, 20.0]
    labels = np.where(xy[:, 0] < 300, rng.integers(0, 2, n), rng.integers(1, 4, n))  # spatial structure
    xy[:5] = xy[5]  # duplicated positions (distance 0) are still edges
    xy[7] = [100.0, 130.0]  # on tile borders (tile_size 40 / 130 from the origin) and inside halos
    fov = np.where(xy[:, 1] > 400, "b", "a")
    return xy, labels, fov


def _store(tmp_path, xy: np.ndarray, rows: int):
    root = zarr.open_group(tmp_path / "cells.zarr", mode="w")
    root.create_array("spatial", shape=xy.shape, chunks=(rows, 2), dtype=xy.dtype)[:] = xy
    return zarr.open_group(tmp_path / "cells.zarr", mode="r")["spatial"]


@pytest.mark.parametrize(("tile_size", "with_fov"), [(40.0, True), (130.0, False), (5000.0, True)])
def test_counts_from_the_store_equal_the_in_memory_tiles(client, tmp_path, tile_size: float, with_fov: bool) -> None:
    xy, labels, fov = _section()
    fov = fov if with_fov else None
    ref = join_counts_tiled(xy, labels, n_types=4, radius=40.0, tile_size=tile_size, fov=fov, neighbour_counts=True)
    stored = _store(tmp_path, xy, rows=700)  # 5 row chunks, not a divisor of the cells
    for coords in (stored, da.from_zarr(stored)):
        got = join_counts_tiled(
            coords, labels, n_types=4, radius=40.0, tile_size=tile_size, fov=fov, neighbour_counts=True
        )
        np.testing.assert_array_equal(got.count, ref.count)
        np.testing.assert_array_equal(got.n_cells, ref.n_cells)
        np.testing.assert_array_equal(got.degree_sum, ref.degree_sum)
        np.testing.assert_array_equal(got.degree_sq_sum, ref.degree_sq_sum)
        np.testing.assert_array_equal(got.neighbour_counts, ref.neighbour_counts)
        assert got.n_tiles == ref.n_tiles
    assert ref.count.sum() > 0 and (ref.n_tiles > 1 or tile_size == 5000.0)


def test_colocalization_from_the_store_is_the_in_memory_one_exactly(client, tmp_path) -> None:
    import pandas as pd

    xy, labels, fov = _section(1)
    types = pd.Categorical([f"t{c}" for c in labels])
    ref = colocalization_tiled(xy, types, radius=40.0, tile_size=100.0, fov=fov)
    got = colocalization_tiled(_store(tmp_path, xy, 512), types, radius=40.0, tile_size=100.0, fov=fov)
    assert got.categories == ref.categories and got.params == ref.params
    for name in ("count", "expected_exact", "variance", "score", "zscore", "pvalue", "qvalue"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    assert np.isfinite(ref.zscore).all() and (ref.qvalue < 0.05).any()
    # float32 coordinates on disk: the statistics of the same values in memory
    xy32 = xy.astype(np.float32)
    got32 = colocalization_tiled(_store(tmp_path / "f32", xy32, 512), types, radius=40.0, tile_size=100.0, fov=fov)
    ref32 = colocalization_tiled(xy32, types, radius=40.0, tile_size=100.0, fov=fov)
    np.testing.assert_array_equal(got32.zscore, ref32.zscore)


def test_no_coordinate_travels_in_the_task_graph(tmp_path) -> None:
    # the threaded scheduler (no cluster): record the graph that join_counts_tiled hands to Dask
    import dask
    from dask.threaded import get

    xy, labels, _ = _section(2, n=20_000)
    stored = _store(tmp_path, xy, rows=4096)
    root = zarr.open_group(tmp_path / "labels.zarr", mode="w")
    root.create_array("code", shape=labels.shape, chunks=(4096,), dtype="i1")[:] = labels
    sizes = []

    def recording_get(dsk, keys, **kwargs):
        sizes.append(len(pickle.dumps(dsk)))
        return get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=recording_get):
        got = join_counts_tiled(stored, labels, n_types=4, radius=40.0, tile_size=100.0)
    ref = join_counts_tiled(xy, labels, n_types=4, radius=40.0, tile_size=100.0)
    np.testing.assert_array_equal(got.count, ref.count)
    # the graph holds the 1-byte type codes and the store's address, not the 320 kB of coordinates
    assert max(sizes) < 0.25 * xy.nbytes, sizes
    sizes.clear()
    with dask.config.set(scheduler=recording_get):  # codes on disk too: only addresses and bounds
        got = join_counts_tiled(stored, root["code"], n_types=4, radius=40.0, tile_size=100.0)
    np.testing.assert_array_equal(got.count, ref.count)
    assert max(sizes) < 0.05 * xy.nbytes, sizes


def test_store_input_errors(tmp_path) -> None:
    xy, labels, _ = _section()
    root = zarr.open_group(tmp_path / "bad.zarr", mode="w")
    root.create_array("xyz", shape=(xy.shape[0], 3), chunks=(1000, 3), dtype="f8")[:] = 1.0
    with pytest.raises(InputError, match=r"coords on disk must be an array of shape \(n_cells, 2\).*\(3000, 3\)"):
        join_counts_tiled(root["xyz"], labels, n_types=4, radius=40.0)
    xy[[3, 10]] = np.nan
    with pytest.raises(InputError, match="coords has 2 cells with NaN or infinite coordinates"):
        join_counts_tiled(_store(tmp_path, xy, 1000), labels, n_types=4, radius=40.0)
    with pytest.raises(InputError, match=r"codes must be 3000 integers in \[0, 3\)"):
        join_counts_tiled(_store(tmp_path, xy, 1000), labels, n_types=3, radius=40.0)


def test_type_codes_on_disk_too(client, tmp_path, caplog) -> None:
    # the recipe of docs/scale.md: coordinates in the store, annotate_chunked's type codes in labels.zarr
    xy, labels, fov = _section(3)
    codes = np.where(labels == 2, -1, labels * 10).astype(np.int16)  # -1 (Unknown), 0, 10, 30
    root = zarr.open_group(tmp_path / "labels.zarr", mode="w")
    root.create_array("cell_type_code", shape=codes.shape, chunks=(600,), dtype="i2")[:] = codes
    ref = colocalization_tiled(xy, codes, radius=40.0, tile_size=100.0, fov=fov)
    got = colocalization_tiled(_store(tmp_path, xy, 700), root["cell_type_code"], radius=40.0, tile_size=100.0, fov=fov)
    assert got.categories == ref.categories == ["-1", "0", "10", "30"]
    # the passes over the store resubmit its read tasks with the same spec (no key collision on the scheduler)
    assert "Detected different `run_spec`" not in caplog.text
    for name in ("count", "expected_exact", "variance", "zscore", "pvalue", "qvalue"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
    tiled = join_counts_tiled(
        _store(tmp_path / "b", xy, 700),
        da.from_zarr(root["cell_type_code"]) + 1,
        n_types=32,
        radius=40.0,
        tile_size=100.0,
    )
    np.testing.assert_array_equal(
        tiled.count, join_counts_tiled(xy, codes + 1, n_types=32, radius=40.0, tile_size=100.0).count
    )
    with pytest.raises(InputError, match=r"codes must be 3000 integers in \[0, 31\), got values from 0 to 31"):
        join_counts_tiled(
            _store(tmp_path / "c", xy, 700), da.from_zarr(root["cell_type_code"]) + 1, n_types=31, radius=40.0
        )
