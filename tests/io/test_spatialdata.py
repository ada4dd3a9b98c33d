"""SpatialData interop: ``smo.io.read_spatialdata`` / ``write_spatialdata``.

The fallback reader (anndata only) is tested in every environment on stores built by hand in the documented
layout (root group attributes ``spatialdata_attrs``, tables under ``tables/<name>``, or ``table/table`` before
spatialdata 0.1). Tests marked ``interop`` need the ``spatialdata`` library (``make test-interop``) and are
skipped without it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import _spatialdata as sdio

ATTRS = "spatialdata_attrs"


# --------------------------------------------------------------------------------------------------------- helpers
def _table(n: int = 30, n_vars: int = 4, *, seed: int = 0, region: str = "cells", coords: bool = True) -> ad.AnnData:
    """A SpatialData-style table: counts, region / instance_id columns, the annotation in uns."""
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(2.0, size=(n, n_vars)).astype(np.float32))
    obs = pd.DataFrame(
        {"region": pd.Categorical([region] * n), "instance_id": np.arange(n, dtype=np.int64)},
        index=[f"c{seed}_{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_vars)]))
    adata.uns[ATTRS] = {"region": region, "region_key": "region", "instance_key": "instance_id"}
    if coords:
        adata.obsm["spatial"] = rng.random((n, 2)) * 500
    return adata


def _store(
    path: Path,
    tables: dict[str, ad.AnnData],
    *,
    zarr_format: int = 3,
    legacy: bool = False,
    version: str | None = "0.2",
) -> Path:
    """Write tables in SpatialData's on-disk layout with zarr + anndata only (what spatialdata writes for tables)."""
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    if version is not None:
        root.attrs[ATTRS] = {"version": version, "spatialdata_software_version": "0.7.3"}
    parent = "table" if legacy else "tables"
    root.create_group(parent)
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=zarr_format):
        warnings.simplefilter("ignore", UserWarning)  # anndata's notices of coming default changes (v2, sharding)
        for name, adata in tables.items():
            adata.write_zarr(path / parent / name)
            attrs = dict(adata.uns[ATTRS])
            group = zarr.open_group(path / parent / name, mode="r+", zarr_format=zarr_format)
            group.attrs.update({"spatialdata-encoding-type": "ngff:regions_table", "version": "0.2", **attrs})
    return path


@pytest.fixture
def no_spatialdata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the anndata-only reader even where spatialdata is installed."""
    monkeypatch.setattr(sdio, "_import_spatialdata", lambda: None)


@pytest.fixture
def sd():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dependency deprecation notices on import (not ours)
        return pytest.importorskip("spatialdata")


# -------------------------------------------------------------------------------------------- fallback (anndata)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_fallback_reads_table_values_and_coordinates(tmp_path: Path, no_spatialdata, zarr_format: int) -> None:
    table = _table()
    store = _store(tmp_path / "s.zarr", {"table": table}, zarr_format=zarr_format)
    assert sdio.is_spatialdata_store(store)
    adata = smo.io.read_spatialdata(store, pixel_size_um=0.5)
    np.testing.assert_array_equal(adata.X.toarray(), table.X.toarray())
    assert adata.X.dtype == np.float32
    assert list(adata.obs_names) == list(table.obs_names)
    np.testing.assert_array_equal(adata.obsm[Keys.SPATIAL], table.obsm["spatial"] * 0.5)
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["table"] == "table"
    assert prov["coordinates_from"] == "obsm['spatial']"
    assert "anndata.read_zarr" in prov["reader"]
    assert prov["version"] == "spatialdata format 0.2"
    assert prov["modality"] == "rna"
    assert Keys.FOV not in adata.obs


def test_several_tables_need_a_name_and_a_list_gives_a_mudata(tmp_path: Path, no_spatialdata) -> None:
    rna, protein = _table(seed=1), _table(seed=1, n_vars=3)
    protein.X = protein.X * 10
    store = _store(tmp_path / "s.zarr", {"rna": rna, "protein": protein})
    with pytest.raises(InputError, match=r"has 2 tables \['protein', 'rna'\]; pass table="):
        smo.io.read_spatialdata(store)
    with pytest.raises(InputError, match=r"table='atac': not in .*its tables are \['protein', 'rna'\]"):
        smo.io.read_spatialdata(store, table="atac")
    prot = smo.io.read_spatialdata(store, table="protein")
    np.testing.assert_array_equal(prot.X.toarray(), protein.X.toarray())
    assert prot.uns[Keys.PROVENANCE]["modality"] == "protein"
    mdata = smo.io.read_spatialdata(store, table=["rna", "protein"])
    assert set(mdata.mod) == {"rna", "protein"}
    np.testing.assert_array_equal(mdata["rna"].X.toarray(), rna.X.toarray())
    np.testing.assert_array_equal(mdata.obsm[Keys.SPATIAL], rna.obsm["spatial"])


def test_legacy_single_table_layout(tmp_path: Path, no_spatialdata) -> None:
    table = _table(seed=2)
    store = _store(tmp_path / "old.zarr", {"table": table}, zarr_format=2, legacy=True, version=None)
    assert sdio.is_spatialdata_store(store)
    adata = smo.io.read_spatialdata(store, modality="protein")
    np.testing.assert_array_equal(adata.X.toarray(), table.X.toarray())
    np.testing.assert_array_equal(adata.obsm[Keys.SPATIAL], table.obsm["spatial"])
    assert adata.uns[Keys.PROVENANCE]["modality"] == "protein"
    assert adata.uns[Keys.PROVENANCE]["version"] == "spatialdata format 0.1"


def test_element_coordinates_need_the_library(tmp_path: Path, no_spatialdata) -> None:
    store = _store(tmp_path / "s.zarr", {"table": _table(coords=False)})
    with pytest.raises(
        InputError, match=r"no obsm\['spatial'\].*\['cells'\].*pip install 'spatialmultiomics\[interop\]'"
    ):
        smo.io.read_spatialdata(store)


def test_repeated_ids_over_regions_become_region_instance_and_regions_fovs(tmp_path: Path, no_spatialdata) -> None:
    a, b = _table(n=5, seed=3, region="fov1"), _table(n=4, seed=3, region="fov2")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Observation names are not unique", category=UserWarning)
        table = ad.concat([a, b])  # same ids c3_0 .. c3_3 in both regions
    table.obs["region"] = pd.Categorical(table.obs["region"].astype(str))
    table.uns[ATTRS] = {"region": ["fov1", "fov2"], "region_key": "region", "instance_key": "instance_id"}
    store = _store(tmp_path / "s.zarr", {"table": table})
    adata = smo.io.read_spatialdata(store)
    assert list(adata.obs_names) == [f"fov1_{i}" for i in range(5)] + [f"fov2_{i}" for i in range(4)]
    assert list(adata.obs[Keys.FOV].astype(str)) == ["fov1"] * 5 + ["fov2"] * 4
    np.testing.assert_array_equal(adata.obsm[Keys.SPATIAL], table.obsm["spatial"])


def test_read_dispatches_a_store_and_rejects_other_folders(tmp_path: Path, no_spatialdata) -> None:
    rna, protein = _table(seed=4), _table(seed=5, n_vars=2)
    store = _store(tmp_path / "s.zarr", {"rna": rna, "protein": protein})
    adata = smo.io.read(store, table="protein")
    np.testing.assert_array_equal(adata.X.toarray(), protein.X.toarray())
    with pytest.raises(InputError, match=r"options \['bin_size'\] do not apply to a SpatialData store"):
        smo.io.read(store, table="rna", bin_size=3)
    plain = tmp_path / "plain.zarr"
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=3):
        warnings.simplefilter("ignore", UserWarning)  # anndata's notices of coming default changes
        rna.write_zarr(plain)  # an AnnData zarr is not a SpatialData store
    assert not sdio.is_spatialdata_store(plain)
    assert not sdio.is_spatialdata_store(tmp_path / "missing")
    with pytest.raises(InputError, match="not a SpatialData zarr store"):
        smo.io.read_spatialdata(plain)
    with pytest.raises(InputError, match="no such file or folder"):
        smo.io.read_spatialdata(tmp_path / "missing")
    empty = _store(tmp_path / "empty.zarr", {})
    with pytest.raises(InputError, match="has no table"):
        smo.io.read_spatialdata(empty)


def test_write_without_the_library_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spatialdata", None)  # import spatialdata -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'spatialmultiomics\[interop\]'"):
        smo.io.write_spatialdata(_table(), tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


# ------------------------------------------------------------------------------------------ with spatialdata
def _pipeline_result(n_cells: int = 200):
    mdata = smo.datasets.paper_benchmark(seed=0, n_cells=n_cells)
    return smo.run_pipeline(
        mdata["rna"], mdata["protein"], n_factors=4, markers=dict(mdata.uns["markers"]), progress=False
    )


def _element_xy(sd, element) -> pd.DataFrame:
    """(x, y) per instance of a circles / points element, read directly from its geometry or columns."""
    if hasattr(element, "geometry"):
        return pd.DataFrame({"x": element.geometry.x, "y": element.geometry.y}, index=element.index)
    frame = element.compute()
    return frame[["x", "y"]]


@pytest.mark.interop
def test_round_trip_pipeline_result_through_spatialdata(tmp_path: Path, sd) -> None:
    res = _pipeline_result()
    mdata = res.mdata
    store = smo.io.write_spatialdata(res, tmp_path / "result.zarr", radius=6.0)
    sdata = sd.read_zarr(store)
    assert set(sdata.tables) == {"rna", "protein"}
    assert set(sdata.shapes) == {"cells"}
    cells = sdata.shapes["cells"]
    np.testing.assert_array_equal(cells["radius"].to_numpy(), np.full(mdata.n_obs, 6.0))
    for name in ("rna", "protein"):
        table = sdata.tables[name]
        assert list(table.obs_names) == list(mdata.obs_names)
        np.testing.assert_array_equal(np.asarray(table.X), np.asarray(mdata[name].X))
        np.testing.assert_array_equal(table.varm[Keys.NMF_LOADINGS], mdata[name].varm[Keys.NMF_LOADINGS])
        assert list(table.obs[Keys.CELL_TYPE].astype(str)) == list(mdata.obs[Keys.CELL_TYPE].astype(str))
        np.testing.assert_array_equal(table.obsm[Keys.NMF], mdata.obsm[Keys.NMF])
        nh_ours, nh_back = mdata.uns[Keys.nhood()], table.uns[Keys.nhood()]
        np.testing.assert_array_equal(nh_back["zscore"], nh_ours["zscore"])
        np.testing.assert_array_equal(nh_back["count"], nh_ours["count"])
        # each row finds its cell in the shapes element through region / instance_id
        attrs = table.uns[ATTRS]
        assert attrs["region"] == "cells"
        xy = _element_xy(sd, cells).loc[table.obs[attrs["instance_key"]].to_numpy()].to_numpy()
        np.testing.assert_array_equal(xy, mdata.obsm[Keys.SPATIAL])
    back = smo.io.read_spatialdata(store, table="rna")
    np.testing.assert_array_equal(np.asarray(back.X), np.asarray(mdata["rna"].X))
    assert list(back.obs[Keys.CELL_TYPE].astype(str)) == list(mdata.obs[Keys.CELL_TYPE].astype(str))
    np.testing.assert_array_equal(back.obsm[Keys.SPATIAL], mdata.obsm[Keys.SPATIAL])
    assert "spatialdata.read_zarr" in back.uns[Keys.PROVENANCE]["reader"]


@pytest.mark.interop
def test_points_export_fovs_and_coordinates_from_the_elements(tmp_path: Path, sd) -> None:
    rng = np.random.default_rng(7)
    n = 40
    adata = ad.AnnData(
        X=rng.random((n, 3)).astype(np.float32),
        obs=pd.DataFrame(
            {Keys.FOV: pd.Categorical(["A"] * 25 + ["B 2"] * 15), Keys.CELL_TYPE: pd.Categorical(["T"] * n)},
            index=[f"cell{i}" for i in range(n)],
        ),
    )
    adata.obsm[Keys.SPATIAL] = rng.random((n, 2)) * 100
    adata.uns[Keys.PROVENANCE] = {"modality": "protein", "platform": "codex"}
    store = smo.io.write_spatialdata(adata, tmp_path / "fov.zarr")  # no radius known: points
    sdata = sd.read_zarr(store)
    assert set(sdata.points) == {"cells_A", "cells_B_2"}
    assert set(sdata.tables) == {"protein"}
    for name, rows, cs in (("cells_A", slice(0, 25), "A"), ("cells_B_2", slice(25, n), "B_2")):
        np.testing.assert_array_equal(_element_xy(sd, sdata.points[name]).to_numpy(), adata.obsm[Keys.SPATIAL][rows])
        assert set(sd.transformations.get_transformation(sdata.points[name], get_all=True)) == {cs}
    # coordinates from the elements alone: drop the table's copy and read again
    del sdata.tables["protein"].obsm[Keys.SPATIAL]
    bare = tmp_path / "bare.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata.write(bare)
    back = smo.io.read_spatialdata(bare)
    assert back.uns[Keys.PROVENANCE]["coordinates_from"] == "centroids of 'cells_A', 'cells_B_2'"
    np.testing.assert_array_equal(back.obsm[Keys.SPATIAL], adata.obsm[Keys.SPATIAL])
    assert list(back.obs[Keys.FOV].astype(str)) == ["A"] * 25 + ["B 2"] * 15
    np.testing.assert_array_equal(back.X, adata.X)
    with pytest.raises(InputError, match=r"coordinate_system='global': element 'cells_A' is not in it"):
        smo.io.read_spatialdata(bare, coordinate_system="global")


@pytest.mark.interop
def test_write_refuses_an_existing_store_unless_overwrite(tmp_path: Path, sd) -> None:
    adata = _table(n=10)
    target = tmp_path / "out.zarr"
    smo.io.write_spatialdata(adata, target, radius=2.0)
    with pytest.raises(InputError, match=r"path='.*out.zarr' exists; .*overwrite=True"):
        smo.io.write_spatialdata(adata, target, radius=3.0)
    smo.io.write_spatialdata(adata, target, radius=3.0, overwrite=True)
    assert set(sd.read_zarr(target).shapes["cells"]["radius"]) == {3.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no temporary folder left behind
    with pytest.raises(InputError, match=r"radius must be a finite number > 0, got -1.0"):
        smo.io.write_spatialdata(adata, tmp_path / "r.zarr", radius=-1.0)


def _polygon_centroid(ring: np.ndarray) -> np.ndarray:
    """Area centroid of a simple polygon (shoelace formula); ``ring`` closed (first == last vertex)."""
    x, y = ring[:, 0], ring[:, 1]
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    area = cross.sum() / 2
    return np.array([((x[:-1] + x[1:]) * cross).sum(), ((y[:-1] + y[1:]) * cross).sum()]) / (6 * area)


@pytest.fixture(scope="module")
def blobs_store(tmp_path_factory: pytest.TempPathFactory):
    """spatialdata's own ``blobs`` dataset written by spatialdata, plus tables annotating circles, polygons, points."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd = pytest.importorskip("spatialdata")
        from spatialdata.datasets import blobs
        from spatialdata.models import TableModel

        sdata = blobs()
        for kind, element in (("circles", "blobs_circles"), ("polygons", "blobs_polygons"), ("points", "blobs_points")):
            index = np.asarray(sdata[element].index.compute() if kind == "points" else sdata[element].index)
            obs = pd.DataFrame({"region": pd.Categorical([element] * index.size), "instance_id": index})
            obs.index = [f"{kind}{i}" for i in index]
            table = ad.AnnData(X=np.ones((index.size, 1), dtype=np.float32), obs=obs)
            sdata.tables[kind] = TableModel.parse(
                table, region=element, region_key="region", instance_key="instance_id"
            )
        path = tmp_path_factory.mktemp("blobs") / "blobs.zarr"
        sdata.write(path)
    return sd, sdata, path


@pytest.mark.interop
def test_store_written_by_spatialdata_labels_table(blobs_store) -> None:
    _, sdata, path = blobs_store
    with pytest.raises(InputError, match=r"has 4 tables \['circles', 'points', 'polygons', 'table'\]"):
        smo.io.read_spatialdata(path)
    adata = smo.io.read_spatialdata(path, table="table")
    expected = sdata.tables["table"]
    assert (adata.n_obs, adata.n_vars) == (26, 3)
    assert list(adata.var_names) == list(expected.var_names)
    X = expected.X.toarray() if sp.issparse(expected.X) else np.asarray(expected.X)
    np.testing.assert_array_equal(adata.X.toarray() if sp.issparse(adata.X) else adata.X, X.astype(np.float32))
    # centroids of the annotated labels, brute force over the label image (pixel centres at +0.5)
    labels = np.asarray(sdata.labels["blobs_labels"].data)
    for name, label in zip(adata.obs_names, adata.obs["instance_id"], strict=True):
        rows, cols = np.nonzero(labels == label)
        np.testing.assert_allclose(
            adata[name].obsm[Keys.SPATIAL][0], [cols.mean() + 0.5, rows.mean() + 0.5], rtol=1e-12
        )
    assert adata.uns[Keys.PROVENANCE]["coordinates_from"] == "centroids of 'blobs_labels'"


@pytest.mark.interop
def test_store_written_by_spatialdata_shapes_and_points(blobs_store) -> None:
    _, sdata, path = blobs_store
    circles = smo.io.read(path, table="circles")
    geom = sdata.shapes["blobs_circles"].geometry
    np.testing.assert_array_equal(circles.obsm[Keys.SPATIAL], np.column_stack([geom.x, geom.y]))
    polygons = smo.io.read_spatialdata(path, table="polygons")
    expected = np.array(
        [_polygon_centroid(np.asarray(p.exterior.coords)) for p in sdata.shapes["blobs_polygons"].geometry]
    )
    np.testing.assert_allclose(polygons.obsm[Keys.SPATIAL], expected, rtol=1e-9)
    points = smo.io.read_spatialdata(path, table="points", pixel_size_um=2.0)
    frame = sdata.points["blobs_points"].compute()
    np.testing.assert_array_equal(points.obsm[Keys.SPATIAL], frame[["x", "y"]].to_numpy(dtype=float) * 2.0)


@pytest.mark.parametrize(("platform", "modality"), [("CosMx", "rna"), ("Visium HD", "rna"), ("inForm", "protein")])
def test_a_store_of_any_platform_is_read_as_that_platform(
    tmp_path: Path, no_spatialdata, platform: str, modality: str
) -> None:
    table = _table(seed=7)
    store = _store(tmp_path / "any.zarr", {"table": table})
    adata = smo.io.read(store, platform, pixel_size_um=0.5)
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["platform"] == smo.io.normalize_platform(platform)
    assert prov["modality"] == modality
    np.testing.assert_allclose(adata.obsm[Keys.SPATIAL], table.obsm["spatial"] * 0.5)
    np.testing.assert_array_equal(adata.X.toarray(), table.X.toarray())
