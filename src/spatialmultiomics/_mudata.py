"""Building and writing MuData objects without mudata's transition warnings.

mudata 0.3 warns on every ``update()`` that it will stop pulling obs/var columns from the modalities; we adopt the
new behaviour (``pull_on_update=False``) inside our own calls only, never globally. Feature names may repeat
across modalities (gene ``CD4`` and protein ``CD4``), which is legitimate here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["make_mudata", "mudata_options", "read_h5mu", "write_h5mu"]


@contextlib.contextmanager
def mudata_options() -> Iterator[None]:
    """Context in which MuData updates do not pull columns and do not warn about shared feature names."""
    import mudata

    with mudata.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique", category=UserWarning)
        yield


def make_mudata(mods: Mapping[str, AnnData]) -> MuData:
    """Return a MuData of ``mods`` (modality name -> AnnData)."""
    import mudata

    with mudata_options():
        return mudata.MuData(dict(mods))


def _h5_safe(value: object) -> object:
    """Replace what HDF5 cannot store (None, tuples of mixed types) by storable equivalents."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): _h5_safe(v) for k, v in value.items()}
    if isinstance(value, tuple | list) and not all(isinstance(v, int | float | str | bool) for v in value):
        return [_h5_safe(v) for v in value] if all(isinstance(v, dict) for v in value) else [str(v) for v in value]
    if isinstance(value, tuple):
        return list(value)
    return value


def write_h5mu(mdata: MuData, path: str | Path) -> None:
    """Write ``mdata`` to ``path``; ``None`` values in ``uns`` are stored as the string ``'None'``."""
    for holder in (mdata, *mdata.mod.values()):
        for key in list(holder.uns.keys()):
            holder.uns[key] = _h5_safe(holder.uns[key])
    with mudata_options():
        mdata.write(str(path))


def read_h5mu(path: str | Path) -> MuData:
    """Read a ``.h5mu`` file."""
    import mudata

    with mudata_options():
        return mudata.read_h5mu(str(path))
