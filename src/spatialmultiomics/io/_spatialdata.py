"""SpatialData interop: read the table(s) of a SpatialData zarr store; export a pipeline result as one.

A SpatialData store (Marconato et al. 2024, *Nature Methods* 22:58) is one zarr folder with ``images/``,
``labels/``, ``points/``, ``shapes/`` and ``tables/<name>`` (AnnData tables; stores written before spatialdata 0.1
hold a single table at ``table/table``). A table annotates elements ("regions"): ``uns['spatialdata_attrs']`` names
the ``region`` (one element name or a list), the ``region_key`` column of ``obs`` that gives each row's element and
the ``instance_key`` column that gives the row's id inside that element (the shapes / points index, the label value).

Reading needs only anndata when a table has ``obsm['spatial']`` (every store written by :func:`write_spatialdata`
has it); coordinates taken from the annotated shapes, points or labels need the ``spatialdata`` library
(``pip install 'spatialmultiomics[interop]'``), and so does writing.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._optional import import_optional
from spatialmultiomics.io._common import existing_path, stamp_provenance

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["is_spatialdata_store", "read_spatialdata", "write_spatialdata"]

_EXTRA = "interop"
_ATTRS = "spatialdata_attrs"  # uns key of a table's annotation metadata, and root attribute of a store
CELLS = "cells"  # name of the element (or prefix of the per-FOV elements) holding the cells in our exports
_REGION_KEY = "region"
_INSTANCE_KEY = "instance_id"
_GLOBAL = "global"  # spatialdata's default coordinate system
_ELEMENT_GROUPS = ("shapes", "points", "labels")


# ----------------------------------------------------------------------------------------------------------- store
def _zarr_attrs(folder: Path) -> dict[str, Any] | None:
    """Attributes of the zarr group at ``folder`` (v3 ``zarr.json`` or v2 ``.zgroup`` + ``.zattrs``); None if none."""
    try:
        meta_v3 = folder / "zarr.json"
        if meta_v3.is_file():
            meta = json.loads(meta_v3.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("node_type") != "group":
                return None
            attrs = meta.get("attributes", {})
            return attrs if isinstance(attrs, dict) else {}
        if (folder / ".zgroup").is_file():
            zattrs = folder / ".zattrs"
            attrs = json.loads(zattrs.read_text(encoding="utf-8")) if zattrs.is_file() else {}
            return attrs if isinstance(attrs, dict) else {}
    except (OSError, ValueError):  # unreadable or not JSON: not a zarr group we can use
        return None
    return None


def _table_groups(store: Path) -> dict[str, Path]:
    """Table name -> folder: ``tables/<name>`` (spatialdata >= 0.1), else ``table/table`` (earlier stores)."""
    for parent in (store / "tables", store / "table"):
        if not parent.is_dir() or _zarr_attrs(parent) is None:
            continue
        found = {
            sub.name: sub
            for sub in sorted(parent.iterdir())
            if sub.is_dir() and not sub.name.startswith(".") and _zarr_attrs(sub) is not None
        }
        if found:
            return found
    return {}


def is_spatialdata_store(path: str | Path) -> bool:
    """Whether ``path`` is a SpatialData zarr store: a zarr group whose attributes carry ``spatialdata_attrs`` or
    that holds a ``tables/`` (or, before spatialdata 0.1, ``table/``) group of AnnData tables."""
    path = Path(path)
    if not path.is_dir():
        return False
    attrs = _zarr_attrs(path)
    if attrs is None:
        return False
    return _ATTRS in attrs or bool(_table_groups(path))


def _import_spatialdata() -> ModuleType | None:
    """The ``spatialdata`` module, or None when it is not installed (reading then falls back to anndata)."""
    try:
        import spatialdata
    except ImportError:
        return None
    return spatialdata


def _quietly(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a spatialdata function, moving its warnings (format notices, annotation checks) to our log and muting
    ome-zarr's warnings about label images without a parent image (normal in SpatialData stores)."""
    ome = logging.getLogger("ome_zarr")
    level = ome.level
    ome.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = func(*args, **kwargs)
    finally:
        ome.setLevel(level)
    for item in caught:
        logger.info("spatialdata: %s", item.message)
    return out


# ------------------------------------------------------------------------------------------------------------ read
def _pick_tables(groups: dict[str, Path], table: str | Sequence[str] | None, path: Path) -> list[str]:
    """The table names to read; one error names every table of the store."""
    names = sorted(groups)
    if table is None:
        if len(names) > 1:
            msg = (
                f"{path}: the SpatialData store has {len(names)} tables {names}; pass table= one of them "
                "(or a list of names for a MuData)."
            )
            raise InputError(msg)
        return names
    wanted = [table] if isinstance(table, str) else [str(t) for t in table]
    missing = [t for t in wanted if t not in groups]
    if missing or not wanted:
        msg = f"table={table!r}: not in {path}; its tables are {names}."
        raise InputError(msg)
    return wanted


def _read_table_direct(folder: Path) -> AnnData:
    """One table read with anndata alone."""
    import anndata as ad

    try:
        with warnings.catch_warnings():
            # rows of several regions may repeat ids; _finish renames them <region>_<instance>
            warnings.filterwarnings("ignore", message="Observation names are not unique", category=UserWarning)
            return ad.read_zarr(folder)
    except Exception as err:
        msg = f"{folder}: not a readable AnnData zarr table ({type(err).__name__}: {str(err).splitlines()[0][:200]})."
        raise InputError(msg) from err


def _table_keys(adata: AnnData) -> tuple[list[str], str | None, str | None]:
    """(regions, region_key, instance_key) of a table's ``uns['spatialdata_attrs']``; empty / None when absent."""
    attrs = adata.uns.get(_ATTRS, {})
    if not isinstance(attrs, dict):
        return [], None, None
    region = attrs.get("region")
    if region is None or (isinstance(region, str) and region == "None"):
        regions: list[str] = []
    elif isinstance(region, str):
        regions = [region]
    else:
        regions = [str(r) for r in np.asarray(region).ravel().tolist()]
    region_key = attrs.get("region_key")
    instance_key = attrs.get("instance_key")
    return regions, (str(region_key) if region_key else None), (str(instance_key) if instance_key else None)


def _element_centroids(sd: ModuleType, element: Any, coordinate_system: str | None, *, where: str) -> pd.DataFrame:
    """(x, y) of every instance of a shapes / points / labels element in a coordinate system, indexed by instance id
    as text. Circles give their centres, polygons their centroids, labels the mean position of their pixels."""
    from spatialdata.transformations import get_transformation

    systems = list(get_transformation(element, get_all=True))
    if coordinate_system is None:
        cs = _GLOBAL if _GLOBAL in systems or not systems else sorted(systems)[0]
    elif coordinate_system in systems:
        cs = coordinate_system
    else:
        msg = f"coordinate_system={coordinate_system!r}: element {where} is not in it; its coordinate systems are {sorted(systems)}."
        raise InputError(msg)
    centroids = _quietly(sd.get_centroids, element, coordinate_system=cs)
    frame = centroids.compute() if hasattr(centroids, "compute") else centroids
    xy = pd.DataFrame(frame[["x", "y"]].to_numpy(dtype=np.float64), columns=["x", "y"])
    xy.index = pd.Index(np.asarray(frame.index).astype(str))
    return xy


def _coordinates_from_elements(
    sd: ModuleType, sdata: Any, adata: AnnData, *, name: str, path: Path, coordinate_system: str | None
) -> tuple[np.ndarray, str]:
    """(n_obs, 2) coordinates of a table's rows from the elements it annotates, and a description of the source."""
    regions, region_key, instance_key = _table_keys(adata)
    if not regions or region_key not in adata.obs or instance_key not in adata.obs:
        msg = (
            f"{path}: table {name!r} has no obsm['spatial'] and does not annotate an element "
            f"(uns['{_ATTRS}'] = {adata.uns.get(_ATTRS)!r}); no coordinates to read."
        )
        raise InputError(msg)
    coords = np.full((adata.n_obs, 2), np.nan)
    row_region = adata.obs[region_key].astype(str).to_numpy()
    row_instance = adata.obs[instance_key].astype(str).to_numpy()
    for region in regions:
        rows = np.flatnonzero(row_region == region)
        if rows.size == 0:
            continue
        element = next(
            (getattr(sdata, kind).get(region) for kind in _ELEMENT_GROUPS if region in getattr(sdata, kind)), None
        )
        if element is None:
            msg = f"{path}: table {name!r} annotates {region!r}, which is not a shapes, points or labels element of the store."
            raise InputError(msg)
        xy = _element_centroids(sd, element, coordinate_system, where=repr(region))
        found = xy.reindex(row_instance[rows])
        lost = found["x"].isna().to_numpy()
        if lost.any():
            example = row_instance[rows][lost][0]
            msg = f"{path}: {int(lost.sum())} rows of table {name!r} have no instance in {region!r} (e.g. {instance_key}={example!r})."
            raise InputError(msg)
        coords[rows] = found.to_numpy(dtype=np.float64)
    if np.isnan(coords).any():
        msg = f"{path}: {int(np.isnan(coords).any(axis=1).sum())} rows of table {name!r} belong to no region of {regions}."
        raise InputError(msg)
    return coords, f"centroids of {', '.join(map(repr, regions))}"


def _finish(
    adata: AnnData,
    coords: np.ndarray,
    *,
    name: str,
    path: Path,
    version: str,
    source: str,
    modality: str | None,
    pixel_size_um: float,
    reader: str,
) -> AnnData:
    """Coordinates in µm, float32 values, unique ids, ``obs['fov']`` from the regions and provenance."""
    import scipy.sparse as sp

    xy = np.asarray(coords, dtype=np.float64)[:, :2] * float(pixel_size_um)
    if not np.isfinite(xy).all():
        msg = f"{path}: table {name!r} has {int((~np.isfinite(xy)).any(axis=1).sum())} rows with missing or infinite coordinates."
        raise InputError(msg)
    adata.obsm[Keys.SPATIAL] = xy
    if adata.X is not None and adata.X.dtype != np.float32:
        adata.X = adata.X.astype(np.float32) if sp.issparse(adata.X) else np.asarray(adata.X, dtype=np.float32)
    regions, region_key, instance_key = _table_keys(adata)
    if not adata.obs_names.is_unique:
        if region_key in adata.obs and instance_key in adata.obs:
            ids = adata.obs[region_key].astype(str) + "_" + adata.obs[instance_key].astype(str)
            adata.obs_names = pd.Index(ids.to_numpy(), dtype=object)
        if not adata.obs_names.is_unique:
            dup = adata.obs_names[adata.obs_names.duplicated()][0]
            msg = f"{path}: table {name!r} has duplicate row ids (e.g. {dup!r}); ids must be unique."
            raise InputError(msg)
        logger.info("%s: table %r had repeated row ids; rows are named <region>_<instance> instead.", path, name)
    if Keys.FOV not in adata.obs and len(regions) > 1 and region_key in adata.obs:
        # several annotated elements are separate images / sections: graphs must not join them
        adata.obs[Keys.FOV] = pd.Categorical(adata.obs[region_key].astype(str))
    before = adata.uns.get(Keys.PROVENANCE, {})
    before = before if isinstance(before, dict) else {}
    mod = modality or str(before.get("modality") or (name if name in (Keys.RNA, Keys.PROTEIN) else Keys.RNA))
    return stamp_provenance(
        adata,
        platform=str(before.get("platform", "generic")),
        reader=reader,
        version=f"spatialdata format {version}",
        pixel_size_um=pixel_size_um,
        files=[path],
        modality=mod,
        table=name,
        coordinates_from=source,
        source_reader=before.get("reader"),
    )


def read_spatialdata(
    path: str | Path,
    table: str | Sequence[str] | None = None,
    modality: str | None = None,
    *,
    pixel_size_um: float = 1.0,
    coordinate_system: str | None = None,
) -> AnnData | MuData:
    """Read the table(s) of a SpatialData zarr store into AnnData with coordinates in µm.

    With the ``spatialdata`` library installed (``pip install 'spatialmultiomics[interop]'``) the store is opened
    with ``spatialdata.read_zarr``; without it the tables are read with ``anndata.read_zarr`` from
    ``tables/<name>`` (or ``table/table`` in stores written before spatialdata 0.1), which works whenever the table
    carries ``obsm['spatial']``.

    Parameters
    ----------
    path
        The store (a folder, usually ``*.zarr``).
    table
        Name of the table to read; may be omitted when the store has one table. A list of names returns a MuData
        with one modality per table (named after it).
    modality
        Modality recorded in ``uns['provenance']`` (``'rna'``, ``'protein'`` ...). Default: the one recorded in the
        table, else the table's name when it is ``rna`` / ``protein``, else ``'rna'``. With a list of tables each
        modality is named after its table.
    pixel_size_um
        Micrometres per coordinate unit of the store (default 1: already µm, as in Xenium / MERSCOPE stores;
        Visium stores are in full-resolution pixels).
    coordinate_system
        Coordinate system in which element coordinates are taken (only when the table has no ``obsm['spatial']``).
        Default: ``'global'`` when the element has it, else its first coordinate system.

    Returns
    -------
    AnnData (a MuData for a list of tables) with

    - ``X`` the table's values (float32), ``obs`` / ``var`` / ``obsm`` / ``layers`` / ``uns`` as stored;
    - ``obsm['spatial']`` (x, y) in µm: the table's own ``obsm['spatial']`` when present, else the centroids of the
      instances it annotates (circle centres, polygon centroids, points, label centroids; needs ``spatialdata``);
    - ``obs['fov']`` = the annotated element when a table annotates several (separate images or sections);
    - ``uns['provenance']`` with ``table``, ``coordinates_from`` and the store's format version.

    Examples
    --------
    >>> adata = smo.io.read_spatialdata("xenium.zarr", table="table")  # doctest: +SKIP
    >>> mdata = smo.io.read_spatialdata("result.zarr", table=["rna", "protein"])  # doctest: +SKIP
    """
    from spatialmultiomics._validate import check_positive

    path = existing_path(path)
    px = check_positive(pixel_size_um, name="pixel_size_um")
    if not is_spatialdata_store(path):
        msg = f"{path}: not a SpatialData zarr store (expected a zarr group with {_ATTRS!r} or a 'tables/' group)."
        raise InputError(msg)
    groups = _table_groups(path)
    if not groups:
        msg = f"{path}: the SpatialData store has no table (no tables/<name> group); nothing to read."
        raise InputError(msg)
    names = _pick_tables(groups, table, path)
    root = _zarr_attrs(path) or {}
    version = str((root.get(_ATTRS) or {}).get("version", "0.1"))
    legacy = groups[names[0]].parent.name == "table"
    sd = None if legacy else _import_spatialdata()
    sdata = None
    if sd is not None:
        selection = ["points", "shapes", "tables"] + (["labels"] if (path / "labels").is_dir() else [])
        try:
            sdata = _quietly(sd.read_zarr, path, selection=tuple(selection))
        except Exception as err:
            msg = (
                f"{path}: spatialdata cannot read this store ({type(err).__name__}: {str(err).splitlines()[0][:200]})."
            )
            raise InputError(msg) from err
        tables = {n: sdata.tables[n] for n in names}
        reader = "spatialmultiomics.io.read_spatialdata (spatialdata.read_zarr)"
    else:
        tables = {n: _read_table_direct(groups[n]) for n in names}
        reader = "spatialmultiomics.io.read_spatialdata (anndata.read_zarr)"
    out: dict[str, AnnData] = {}
    for name in names:
        adata = tables[name]
        if Keys.SPATIAL in adata.obsm:
            coords, source = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64), "obsm['spatial']"
        elif sdata is None:
            regions = _table_keys(adata)[0]
            msg = (
                f"{path}: table {name!r} has no obsm['spatial']; its coordinates are in the element(s) {regions}, "
                f"which need the spatialdata library: pip install 'spatialmultiomics[{_EXTRA}]'."
            )
            raise InputError(msg)
        else:
            coords, source = _coordinates_from_elements(
                sd, sdata, adata, name=name, path=path, coordinate_system=coordinate_system
            )
        out[name] = _finish(
            adata,
            coords,
            name=name,
            path=path,
            version=version,
            source=source,
            modality=modality if len(names) == 1 else name,
            pixel_size_um=px,
            reader=reader,
        )
    if isinstance(table, str) or table is None:
        return out[names[0]]
    return _as_mudata(out)


def _as_mudata(tables: dict[str, AnnData]) -> MuData:
    """One modality per table; the joint ``obsm['spatial']`` when every table has the same rows in the same order."""
    from spatialmultiomics._mudata import make_mudata

    mdata = make_mudata(tables)
    first = next(iter(tables.values()))
    if all(a.obs_names.equals(first.obs_names) for a in tables.values()):
        mdata.obsm[Keys.SPATIAL] = np.asarray(first.obsm[Keys.SPATIAL])
    return mdata


# ----------------------------------------------------------------------------------------------------------- write
def _element_name(text: str, taken: set[str]) -> str:
    """A valid, case-insensitively unique SpatialData element name (letters, digits, ``_ - .``) for ``text``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(text)) or "x"
    if name.startswith("__") or name in (".", ".."):
        name = "x" + name
    candidate, i = name, 0
    while candidate.lower() in taken:
        i += 1
        candidate = f"{name}-{i}"
    taken.add(candidate.lower())
    return candidate


def _containers(result: Any) -> tuple[Any, dict[str, AnnData]]:
    """(joint container, modality name -> AnnData) of a PipelineResult, a MuData or an AnnData."""
    from anndata import AnnData

    obj = getattr(result, "mdata", result)
    mods = getattr(obj, "mod", None)
    if isinstance(mods, Mapping) and len(mods) > 0:
        return obj, dict(mods)
    if isinstance(obj, AnnData):
        prov = obj.uns.get(Keys.PROVENANCE, {})
        name = str(prov.get("modality", "table")) if isinstance(prov, dict) else "table"
        return obj, {name: obj}
    msg = f"result must be a PipelineResult, a MuData or an AnnData, got {type(result).__name__}."
    raise InputError(msg)


def _default_radius(joint: Any, mods: dict[str, AnnData]) -> float | None:
    """Visium spots: 27.5 µm (55 µm wide); cells of other platforms have no known size (None: points)."""
    from spatialmultiomics.io._constants import VisiumColumns

    platforms = set()
    for adata in mods.values():
        prov = adata.uns.get(Keys.PROVENANCE, {})
        if isinstance(prov, dict):
            platforms.add(str(prov.get("platform", "")).lower())
    route = joint.uns.get("alignment", {}).get("route") if isinstance(joint.uns.get("alignment"), dict) else None
    if "visium" in platforms or route == "spots":
        return VisiumColumns.SPOT_DIAMETER_UM / 2
    return None


def _uns(*sources: Any) -> dict[str, Any]:
    """``uns`` of the joint container and a modality merged, with what zarr cannot store replaced."""
    from spatialmultiomics._mudata import _h5_safe

    out: dict[str, Any] = {}
    for source in sources:
        for key, value in source.uns.items():
            if key != _ATTRS:
                out[str(key)] = _h5_safe(value)
    return out


def _table(
    adata: AnnData, joint: Any, rows: np.ndarray, *, region: np.ndarray, instance: np.ndarray, keys: tuple[str, str]
) -> AnnData:
    """One modality as a SpatialData table: its values and features, the joint per-cell results, the annotation."""
    import anndata as ad
    import scipy.sparse as sp

    obs = joint.obs.iloc[rows].copy() if joint is not adata else adata.obs.copy()
    obs.index = adata.obs_names.copy()
    for column in adata.obs.columns:
        if column not in obs.columns:
            obs[column] = adata.obs[column].to_numpy()
    region_key, instance_key = keys
    obs[region_key] = pd.Categorical(region[rows], categories=list(dict.fromkeys(region[rows])))
    obs[instance_key] = instance[rows].astype(np.int64)
    obsm: dict[str, Any] = {}
    for key, value in joint.obsm.items():
        if joint is not adata and key in getattr(joint, "mod", {}):
            continue  # MuData's per-modality membership masks
        obsm[key] = value.iloc[rows].set_axis(obs.index) if isinstance(value, pd.DataFrame) else np.asarray(value)[rows]
    for key, value in adata.obsm.items():
        obsm.setdefault(key, value)
    obsp = {key: sp.csr_matrix(value)[rows][:, rows] for key, value in joint.obsp.items()}
    if joint is not adata:
        for key, value in adata.obsp.items():
            obsp.setdefault(key, value)
    return ad.AnnData(
        X=adata.X,
        obs=obs,
        var=adata.var.copy(),
        obsm=obsm,
        obsp=obsp,
        varm=dict(adata.varm),
        layers=dict(adata.layers),
        uns=_uns(joint, adata) if joint is not adata else _uns(adata),
    )


def write_spatialdata(result: Any, path: str | Path, *, overwrite: bool = False, radius: float | None = None) -> Path:
    """Export a pipeline result as a SpatialData zarr store that spatialdata / napari-spatialdata / squidpy open.

    Needs the ``spatialdata`` library: ``pip install 'spatialmultiomics[interop]'``.

    Parameters
    ----------
    result
        A :class:`~spatialmultiomics.PipelineResult`, its ``mdata`` (a MuData with the pipeline's slots, also as
        read back from ``result.h5mu``) or a single AnnData.
    path
        The store to create (a folder, conventionally ``*.zarr``). Written into a hidden sibling folder first and
        moved into place at the end: a failure leaves no partial store.
    overwrite
        Replace an existing store at ``path`` (otherwise an existing file or non-empty folder is an error).
    radius
        Radius of every cell in µm: cells become circles (``shapes``). Default: 27.5 µm for Visium spots (55 µm
        wide), else unknown and cells become ``points``.

    Returns
    -------
    The store's path. It holds

    - ``shapes/cells`` (circles, when a radius is known) or ``points/cells``: one instance per cell, indexed
      ``0 .. n-1``, (x, y) in µm in the ``global`` coordinate system (identity). With several FOVs
      (``obs['fov']``), one element ``cells_<fov>`` per FOV, each in its own coordinate system ``<fov>``;
    - ``tables/<modality>`` for each modality (``rna``, ``protein`` ...): ``X`` its raw values, ``layers``,
      ``var`` and ``varm['nmf_loadings']``; ``obs`` the per-cell results (``cell_type``,
      ``cell_type_confidence``, ``nmf_factor``, ``niche_type``, ``n_neighbors``, ``fov``) plus ``region`` and
      ``instance_id`` linking each row to its cell; ``obsm`` (``spatial``, ``X_nmf``, ``niche_composition``),
      ``obsp`` (the neighbour graph) and ``uns`` (co-localization ``cell_type_nhood_enrichment`` in squidpy's
      schema, factorization, parameters, provenance).

    Examples
    --------
    >>> res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=4)  # doctest: +SKIP
    >>> smo.io.write_spatialdata(res, "result.zarr")  # doctest: +SKIP
    >>> import spatialdata; sdata = spatialdata.read_zarr("result.zarr")  # doctest: +SKIP
    """
    from spatialmultiomics._validate import check_positive
    from spatialmultiomics.io._write import atomic_output_dir

    sd = import_optional("spatialdata", extra=_EXTRA)
    from spatialdata.models import PointsModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    joint, mods = _containers(result)
    out = Path(path)
    if out.exists() and (out.is_file() or any(out.iterdir())) and not overwrite:
        msg = f"path={str(out)!r} exists; choose another path or pass overwrite=True."
        raise InputError(msg)
    if Keys.SPATIAL not in joint.obsm:
        msg = "result has no obsm['spatial'] coordinates; nothing to place the cells with."
        raise InputError(msg)
    radius = _default_radius(joint, mods) if radius is None else check_positive(radius, name="radius")
    coords = np.asarray(joint.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]
    n = coords.shape[0]
    taken: set[str] = set()
    # one element per FOV: FOVs are separate images / sections with coordinate frames of their own
    fov = joint.obs[Keys.FOV].astype(str).to_numpy() if Keys.FOV in joint.obs else None
    groups = list(dict.fromkeys(fov)) if fov is not None else []
    region = np.empty(n, dtype=object)
    instance = np.zeros(n, dtype=np.int64)
    elements: dict[str, tuple[np.ndarray, str]] = {}
    if len(groups) <= 1:
        name = _element_name(CELLS, taken)
        region[:] = name
        instance[:] = np.arange(n)
        elements[name] = (np.arange(n), _GLOBAL)
    else:
        for value in groups:
            rows = np.flatnonzero(fov == value)
            name = _element_name(f"{CELLS}_{value}", taken)
            region[rows] = name
            instance[rows] = np.arange(rows.size)
            elements[name] = (rows, _element_name(value, set()))
    shapes, points = {}, {}
    for name, (rows, cs) in elements.items():
        transformations = {cs: Identity()}
        if radius is not None:
            shapes[name] = ShapesModel.parse(
                coords[rows],
                geometry=0,
                radius=np.full(rows.size, float(radius)),
                index=np.arange(rows.size),
                transformations=transformations,
            )
        else:
            frame = pd.DataFrame({"x": coords[rows, 0], "y": coords[rows, 1]}, index=np.arange(rows.size))
            points[name] = PointsModel.parse(frame, coordinates={"x": "x", "y": "y"}, transformations=transformations)
    columns = set(joint.obs.columns).union(*(a.obs.columns for a in mods.values()))
    keys = (
        _REGION_KEY if _REGION_KEY not in columns else f"spatialdata_{_REGION_KEY}",
        _INSTANCE_KEY if _INSTANCE_KEY not in columns else f"spatialdata_{_INSTANCE_KEY}",
    )
    tables = {}
    for mod_name, adata in mods.items():
        rows = joint.obs_names.get_indexer(adata.obs_names) if adata is not joint else np.arange(n)
        if (rows < 0).any():
            msg = f"modality {mod_name!r} has cells that are not in the joint container; align the modalities first."
            raise InputError(msg)
        table = _table(adata, joint, rows, region=region, instance=instance, keys=keys)
        present = list(table.obs[keys[0]].cat.categories)
        tables[_element_name(mod_name, taken)] = TableModel.parse(
            table, region=present if len(present) > 1 else present[0], region_key=keys[0], instance_key=keys[1]
        )
    sdata = _quietly(sd.SpatialData, shapes=shapes, points=points, tables=tables)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        tmp.rmdir()  # spatialdata creates the store itself
        _quietly(sdata.write, tmp)
    logger.info(
        "SpatialData store written to %s: %d cells as %s, tables %s",
        out,
        n,
        "circles" if radius else "points",
        list(tables),
    )
    return out
