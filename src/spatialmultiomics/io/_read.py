"""``read``: one entry point for every input this package reads."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics.io._platforms import PLATFORMS, normalize_platform
from spatialmultiomics.io._table import X_COLUMNS, Y_COLUMNS, is_table, read_table

__all__ = ["read", "read_h5ad"]


def read_h5ad(
    path: str | Path, *, pixel_size_um: float = 1.0, modality: str = "rna", platform: str = "generic"
) -> ad.AnnData:
    """Read an ``.h5ad`` file; coordinates come from ``obsm['spatial']`` or ``obs`` columns ``x`` / ``y``."""
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


def read(
    path: str | Path,
    platform: str | None = None,
    *,
    modality: str | None = None,
    pixel_size_um: float | None = None,
    id_column: str | None = None,
) -> ad.AnnData:
    """Read one modality from ``path`` into an AnnData with coordinates in µm.

    Parameters
    ----------
    path
        A standardized table (CSV / TSV / parquet: optional id column, ``x``, ``y``, features) or an ``.h5ad``
        file. Vendor output folders are not read yet.
    platform
        Instrument name, case-insensitive (``Visium``, ``MERFISH``, ``MERSCOPE``, ``Xenium``, ``Stereo-seq``,
        ``CODEX``, ``MIBI``, ``IMC``, ``CyCIF``); with a table file it is recorded in the provenance and decides
        whether the table holds counts (RNA platforms) or intensities (protein platforms).
    modality
        ``'rna'``, ``'protein'`` or another name; default from the platform (``'rna'`` when generic).
    pixel_size_um
        Micrometres per coordinate unit of the file (default 1: coordinates already in µm).
    id_column
        Name of the id column of a table when it cannot be detected.
    """
    from spatialmultiomics._validate import check_positive

    canon = normalize_platform(platform)
    kind = PLATFORMS[canon][0]
    mod = modality or (kind if kind != "any" else "rna")
    px = 1.0 if pixel_size_um is None else check_positive(pixel_size_um, name="pixel_size_um")
    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such file or folder."
        raise InputError(msg)
    if path.is_dir():
        msg = (
            f"{path}: reading a {PLATFORMS[canon][1]} output folder is not supported yet; pass a table "
            "(id, x, y, feature columns; CSV / TSV / parquet) or an .h5ad file."
        )
        raise InputError(msg)
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        return read_h5ad(path, pixel_size_um=px, modality=mod, platform=canon)
    if is_table(path):
        return read_table(path, modality=mod, platform=canon, pixel_size_um=px, id_column=id_column)
    msg = f"{path}: unsupported file type {suffix or '(none)'!r}; expected .csv, .tsv, .txt, .parquet (optionally .gz) or .h5ad."
    raise InputError(msg)
