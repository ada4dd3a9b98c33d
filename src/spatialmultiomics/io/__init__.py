"""Reading instrument outputs and tables, writing results.

One reader per platform, named after it (``smo.io.visium``, ``visium_hd``, ``merfish``, ``xenium``,
``xenium_mudata``, ``stereoseq``, ``cosmx``, ``codex``, ``mibi``, ``imc``, ``cycif``, ``inform``, ``qupath``,
``halo``), each returning an AnnData with coordinates in µm;
``smo.io.read`` dispatches and detects the platform of a folder.

The reader functions are bound here eagerly: a module named like its function (``io/visium.py`` defining
``visium``) would otherwise replace the function on this package the first time the module is imported. The reader
modules import nothing heavy at load time (anndata, h5py and pyarrow load inside the functions); the rest of the
namespace loads on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from spatialmultiomics.io._platforms import PLATFORMS, normalize_platform
from spatialmultiomics.io._read import read
from spatialmultiomics.io.codex import codex
from spatialmultiomics.io.cosmx import cosmx
from spatialmultiomics.io.cycif import cycif
from spatialmultiomics.io.halo import halo
from spatialmultiomics.io.imc import imc
from spatialmultiomics.io.inform import inform
from spatialmultiomics.io.merfish import merfish
from spatialmultiomics.io.mibi import mibi
from spatialmultiomics.io.qupath import qupath
from spatialmultiomics.io.stereoseq import stereoseq
from spatialmultiomics.io.visium import visium
from spatialmultiomics.io.visium_hd import visium_hd
from spatialmultiomics.io.xenium import xenium, xenium_mudata

#: public name -> implementing module (loaded on first access)
_LAZY = {
    "read_h5ad": "spatialmultiomics.io._read",
    "read_table": "spatialmultiomics.io._table",
    "read_labelled_table": "spatialmultiomics.io._labelled",
    "detect_platform": "spatialmultiomics.io._detect",
    "atomic_output_dir": "spatialmultiomics.io._write",
    "check_output_dir": "spatialmultiomics.io._write",
    "write_h5mu": "spatialmultiomics.io._write",
    "read_spatialdata": "spatialmultiomics.io._spatialdata",
    "write_spatialdata": "spatialmultiomics.io._spatialdata",
    "stream_to_zarr": "spatialmultiomics.io._stream",
    "StreamedStore": "spatialmultiomics.io._stream",
}

__all__ = [
    "codex",
    "cosmx",
    "cycif",
    "halo",
    "imc",
    "inform",
    "merfish",
    "mibi",
    "qupath",
    "stereoseq",
    "visium",
    "visium_hd",
    "xenium",
    "xenium_mudata",
    "PLATFORMS",
    "normalize_platform",
    "read",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'spatialmultiomics.io' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
