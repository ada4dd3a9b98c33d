"""Write a generated dataset as the seed's standardized tables (the inputs of ``run_pipeline`` and the CLI)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["write_tables"]

_FILES = {Keys.RNA: "transcriptomics.csv", Keys.PROTEIN: "proteomics.csv"}


def _plain(value: Any) -> Any:
    """Nested mappings / arrays from ``uns`` as plain JSON-serialisable dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _table(mdata: MuData, name: str, xy: np.ndarray) -> pd.DataFrame:
    adata = mdata.mod[name]
    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    if X.size and np.array_equal(X, np.round(X)) and np.abs(X).max() < 2**31:
        X = X.astype(np.int32)  # counts: integers are written (and parsed) much faster than floats
    frame = pd.DataFrame(X, columns=adata.var_names.astype(str))
    frame.insert(0, "y", xy[:, 1])
    frame.insert(0, "x", xy[:, 0])
    frame.insert(0, "cell_id", adata.obs_names.astype(str))
    return frame


def write_tables(mdata: MuData, directory: str | Path) -> dict[str, Path]:
    """Write ``mdata`` as the seed's standardized tables in ``directory`` (created if needed).

    Parameters
    ----------
    mdata
        A MuData with modalities ``rna`` and/or ``protein`` sharing ``obs_names`` and with ``obsm['spatial']``
        in µm, e.g. from :func:`paper_benchmark` or :func:`synthetic_tissue`.
    directory
        Output folder; existing files of the same names are replaced.

    Returns
    -------
    Paths of the files written, by key:

    - ``"rna"``: ``transcriptomics.csv`` (``cell_id, x, y`` then one column per gene: raw counts);
    - ``"protein"``: ``proteomics.csv`` (``cell_id, x, y`` then one column per protein: intensities);
    - ``"markers"``: ``markers.json`` (``{type: {"genes": [...], "proteins": [...]}}``), when
      ``uns['markers']`` exists;
    - ``"truth"``: ``truth.csv`` (``cell_id, cell_type``), when ``obs['true_cell_type']`` exists.

    Coordinates are written in µm (``x``, ``y``), so the tables are read back with ``pixel_size_um=1``.
    """
    directory = Path(directory)
    if Keys.SPATIAL not in mdata.obsm:
        msg = f"mdata.obsm[{Keys.SPATIAL!r}] is missing; write_tables needs cell coordinates in µm."
        raise InputError(msg)
    present = [name for name in _FILES if name in mdata.mod]
    if not present:
        msg = f"mdata has none of the modalities {list(_FILES)}; got {list(mdata.mod)}."
        raise InputError(msg)
    directory.mkdir(parents=True, exist_ok=True)
    xy = np.asarray(mdata.obsm[Keys.SPATIAL], dtype=np.float64)
    written: dict[str, Path] = {}
    for name in present:
        path = directory / _FILES[name]
        _table(mdata, name, xy).to_csv(path, index=False, float_format="%.6g")
        written[name] = path
    if "markers" in mdata.uns:
        path = directory / "markers.json"
        path.write_text(json.dumps(_plain(mdata.uns["markers"]), indent=2) + "\n", encoding="utf-8")
        written["markers"] = path
    if "true_cell_type" in mdata.obs:
        path = directory / "truth.csv"
        truth = pd.DataFrame(
            {"cell_id": mdata.obs_names.astype(str), "cell_type": mdata.obs["true_cell_type"].astype(str)}
        )
        truth.to_csv(path, index=False)
        written["truth"] = path
    return written
