"""``read``: one entry point for every input this package reads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.io._common import existing_path
from spatialmultiomics.io._constants import StereoseqFiles
from spatialmultiomics.io._platforms import PLATFORMS, normalize_platform

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["READERS", "read", "read_h5ad"]


def read_h5ad(
    path: str | Path, *, pixel_size_um: float = 1.0, modality: str = "rna", platform: str = "generic"
) -> ad.AnnData:
    """Read an ``.h5ad`` file; coordinates come from ``obsm['spatial']`` or ``obs`` columns ``x`` / ``y``."""
    import anndata as ad

    from spatialmultiomics.io._table import X_COLUMNS, Y_COLUMNS

    path = Path(path)
    try:
        adata = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as err:
        msg = f"{path}: not a readable .h5ad file ({type(err).__name__}: {str(err).splitlines()[0][:200]})."
        raise InputError(msg) from err
    if Keys.SPATIAL not in adata.obsm:
        lower = {c.lower(): c for c in adata.obs.columns}
        xc = next((lower[c] for c in X_COLUMNS if c in lower), None)
        yc = next((lower[c] for c in Y_COLUMNS if c in lower), None)
        if xc is None or yc is None:
            msg = f"{path}: no coordinates: neither obsm['spatial'] nor obs columns 'x' and 'y' (obsm keys: {list(adata.obsm)})."
            raise InputError(msg)
        adata.obsm[Keys.SPATIAL] = adata.obs[[xc, yc]].to_numpy(dtype=np.float64)
    coords = np.asarray(adata.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2] * float(pixel_size_um)
    if not np.isfinite(coords).all():
        msg = f"{path}: obsm['spatial'] has missing or infinite coordinates."
        raise InputError(msg)
    adata.obsm[Keys.SPATIAL] = coords
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][0]
        msg = f"{path}: duplicate cell ids in obs_names (e.g. {dup!r}); ids must be unique."
        raise InputError(msg)
    prov = dict(adata.uns.get(Keys.PROVENANCE, {}))
    prov.update(
        platform=platform,
        reader="spatialmultiomics.io.read_h5ad",
        path=str(path.resolve()),
        pixel_size_um=float(pixel_size_um),
        modality=modality,
    )
    adata.uns[Keys.PROVENANCE] = prov
    return adata


#: canonical platform -> (module, reader function)
READERS: dict[str, tuple[str, str]] = {
    "visium": ("spatialmultiomics.io.visium", "visium"),
    "merfish": ("spatialmultiomics.io.merfish", "merfish"),
    "xenium": ("spatialmultiomics.io.xenium", "xenium"),
    "stereoseq": ("spatialmultiomics.io.stereoseq", "stereoseq"),
    "codex": ("spatialmultiomics.io.codex", "codex"),
    "mibi": ("spatialmultiomics.io.mibi", "mibi"),
    "imc": ("spatialmultiomics.io.imc", "imc"),
    "cycif": ("spatialmultiomics.io.cycif", "cycif"),
    "visium_hd": ("spatialmultiomics.io.visium_hd", "visium_hd"),
    "cosmx": ("spatialmultiomics.io.cosmx", "cosmx"),
    "inform": ("spatialmultiomics.io.inform", "inform"),
    "qupath": ("spatialmultiomics.io.qupath", "qupath"),
    "halo": ("spatialmultiomics.io.halo", "halo"),
}


def _vendor(
    platform: str,
    path: Path,
    *,
    modality: str | None,
    pixel_size_um: float | None,
    id_column: str | None,
    options: dict[str, Any],
) -> ad.AnnData:
    """Call the platform's reader with the options it accepts; unknown options are an InputError."""
    import importlib
    import inspect

    module, name = READERS[platform]
    func = importlib.import_module(module).__dict__[name]
    accepted = set(inspect.signature(func).parameters) - {"path"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        msg = f"{unknown} {'is not an option' if len(unknown) == 1 else 'are not options'} of smo.io.{name}; it accepts {sorted(accepted)}."
        raise InputError(msg)
    kwargs = dict(options)
    if pixel_size_um is not None:
        if "pixel_size_um" in accepted:
            kwargs["pixel_size_um"] = pixel_size_um
        elif pixel_size_um != 1.0:
            logger.warning(
                "pixel_size_um=%g ignored for %s: its files give coordinates in µm.",
                pixel_size_um,
                PLATFORMS[platform][1],
            )
    if id_column is not None and "id_column" in accepted:
        kwargs["id_column"] = id_column
    if modality is not None and "modality" in accepted:
        kwargs["modality"] = modality
    adata = func(path, **kwargs)
    if modality is not None and adata.uns[Keys.PROVENANCE].get("modality") != modality:
        adata.uns[Keys.PROVENANCE]["modality"] = modality
    return adata


def read(
    path: str | Path,
    platform: str | None = None,
    *,
    modality: str | None = None,
    pixel_size_um: float | None = None,
    id_column: str | None = None,
    **options: Any,
) -> ad.AnnData:
    """Read one modality from ``path`` into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        A vendor output folder or file (Space Ranger ``outs/``, MERSCOPE region folder, Xenium bundle, GEM file,
        steinbock folder, MCMICRO quantification, ark cell table, CODEX table ...), a standardized table
        (CSV / TSV / parquet: optional id column, ``x``, ``y``, features), an ``.h5ad`` file or a SpatialData
        ``.zarr`` store written for any instrument (its table, see :func:`read_spatialdata`; ``table=`` picks one
        of several; a platform named here is recorded in the provenance).
    platform
        Instrument name, case-insensitive (``Visium``, ``Visium HD``, ``MERFISH``, ``MERSCOPE``, ``Xenium``,
        ``Stereo-seq``, ``CosMx``, ``CODEX``, ``MIBI``, ``IMC``, ``CyCIF``, ``inForm``, ``QuPath``, ``HALO``,
        ``generic``). Not given (or ``generic``): detected from a folder's
        files (an ambiguous folder is an error naming the candidates) or from a table's header. Given with a table:
        the table is read as the standardized table (the platform decides counts vs intensities) unless its header
        is unmistakably that vendor's export (an ark cell table for MIBI, an MCMICRO quantification for CyCIF or
        CODEX, CellSeg headers for CODEX, a steinbock / CellProfiler table for IMC, a GEM for Stereo-seq), which
        then goes to the vendor reader.
    modality
        ``'rna'``, ``'protein'`` or another name; default from the platform (``'rna'`` when generic). For Visium
        and Xenium it selects the features (``'protein'``: antibody / protein features).
    pixel_size_um
        Micrometres per coordinate unit of the file. Default: 1 for standardized tables, the vendor's default for
        pixel-based vendor readers (CODEX 0.377, MIBI 0.390625, IMC 1, CyCIF 0.65). Ignored (with a warning in the
        log) by Visium, Xenium and Stereo-seq, whose files give µm.
    id_column
        Name of the id column of a table when it cannot be detected.
    **options
        Passed to the platform reader (e.g. ``bin_size`` for Stereo-seq, ``require_coordinates`` for Visium /
        MERFISH, ``markers_file`` for CyCIF); see ``smo.io.<platform>``.

    Returns
    -------
    AnnData with raw values in ``X``, ``obsm['spatial']`` (x, y) in µm, ``obs['fov']`` for multi-FOV inputs and
    ``uns['provenance']`` (platform, reader, version read, pixel size, files).
    """
    from spatialmultiomics._validate import check_positive
    from spatialmultiomics.io._detect import detect_platform, table_header, table_layout
    from spatialmultiomics.io._spatialdata import is_spatialdata_store, read_spatialdata
    from spatialmultiomics.io._table import is_table, read_table

    canon = normalize_platform(platform)
    px = None if pixel_size_um is None else check_positive(pixel_size_um, name="pixel_size_um")
    path = existing_path(path)
    vendor_kw = {"modality": modality, "pixel_size_um": px, "id_column": id_column, "options": options}
    if path.is_dir():
        if is_spatialdata_store(path):  # a SpatialData store, whatever instrument wrote it
            unknown = sorted(set(options) - {"table", "coordinate_system"})
            if unknown:
                msg = f"options {unknown} do not apply to a SpatialData store; it takes table=, coordinate_system=."
                raise InputError(msg)
            kind = PLATFORMS[canon][0]
            store_modality = modality or (kind if canon != "generic" and kind != "any" else None)
            out = read_spatialdata(path, modality=store_modality, pixel_size_um=1.0 if px is None else px, **options)
            if canon != "generic" and hasattr(out, "uns") and Keys.PROVENANCE in out.uns:
                out.uns[Keys.PROVENANCE]["platform"] = canon
            return out
        if canon == "generic":
            found = detect_platform(path)
            if not found:
                present = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:15]
                msg = (
                    f"{path}: no known instrument output layout in this folder (it has {present}); pass "
                    "platform=... or a table file."
                )
                raise InputError(msg)
            if len(found) > 1:
                names = ", ".join(PLATFORMS[f][1] for f in found)
                msg = f"{path}: ambiguous folder, it matches {len(found)} platforms ({names}); pass platform= one of {found}."
                raise InputError(msg)
            canon = found[0]
            logger.info("%s: detected %s output.", path, PLATFORMS[canon][1])
        return _vendor(canon, path, **vendor_kw)
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        if options:
            msg = f"options {sorted(options)} do not apply to .h5ad files."
            raise InputError(msg)
        kind = PLATFORMS[canon][0]
        mod = modality or (kind if kind != "any" else "rna")
        return read_h5ad(path, pixel_size_um=1.0 if px is None else px, modality=mod, platform=canon)
    if suffix in (".h5", *StereoseqFiles.GEF_SUFFIXES):
        target = canon if canon in ("visium", "visium_hd", "xenium", "stereoseq") else detect_platform(path)[0]
        return _vendor(target, path, **vendor_kw)
    header = table_header(path)
    layout = table_layout(path, header)
    if layout is not None and (
        canon == layout
        or canon == "generic"
        or (canon == "codex" and layout in ("cycif", "qupath", "halo"))
        or (canon == "inform" and layout == "qupath")
    ):
        return _vendor(canon if canon != "generic" else layout, path, **vendor_kw)
    if canon in ("stereoseq", "cosmx") or (canon == "merfish" and is_table(path)):
        # a MERFISH table is the standardized table plus Blank-* controls kept apart: the merfish reader does both
        return _vendor(canon, path, **vendor_kw)
    if is_table(path):
        if options:
            msg = f"options {sorted(options)} do not apply to a standardized table; they belong to the vendor readers."
            raise InputError(msg)
        kind = PLATFORMS[canon][0]
        mod = modality or (kind if kind != "any" else "rna")
        return read_table(
            path, modality=mod, platform=canon, pixel_size_um=1.0 if px is None else px, id_column=id_column
        )
    msg = f"{path}: unsupported file type {suffix or '(none)'!r}; expected .csv, .tsv, .txt, .parquet (optionally .gz), .h5ad, .h5, .gem or a vendor output folder."
    raise InputError(msg)
