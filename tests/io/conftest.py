from __future__ import annotations

from pathlib import Path

import pytest

#: real vendor files shared by the project (../shared/data relative to the repository root)
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real vendor files not available at {SHARED_DATA}")
    return SHARED_DATA.resolve()


def write_10x_h5(
    path: Path,
    X,
    barcodes: list[str],
    ids: list[str],
    names: list[str],
    types: list[str],
    *,
    software_version: str = "spaceranger-2.1.0",
    dtype: str = "int32",
) -> Path:
    """Write a feature-barcode matrix exactly in the 10x HDF5 (v3) schema: ``matrix/`` with data, indices, indptr
    (compressed by barcode), shape = (n_features, n_barcodes), barcodes, ``features/`` id, name, feature_type,
    genome, _all_tag_keys; file attributes filetype, version, software_version, library_ids."""
    import h5py
    import numpy as np
    import scipy.sparse as sp

    csr = sp.csr_matrix(np.asarray(X))  # barcodes x features == CSC of features x barcodes
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = np.int32(2)
        f.attrs["software_version"] = software_version
        f.attrs["library_ids"] = np.array([b"sample"])
        f.attrs["chemistry_description"] = np.array([b"Spatial 3' v1"])
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=csr.data.astype(dtype))
        g.create_dataset("indices", data=csr.indices.astype(np.int64))
        g.create_dataset("indptr", data=csr.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array([len(ids), len(barcodes)], dtype=np.int32))
        fg = g.create_group("features")
        fg.create_dataset("id", data=np.array(ids, dtype="S"))
        fg.create_dataset("name", data=np.array(names, dtype="S"))
        fg.create_dataset("feature_type", data=np.array(types, dtype="S"))
        fg.create_dataset("genome", data=np.array(["GRCh38"] * len(ids), dtype="S"))
        fg.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
    return path


def write_10x_mex(
    folder: Path, X, barcodes: list[str], ids: list[str], names: list[str], types: list[str] | None
) -> Path:
    """Write a 10x MEX folder: matrix.mtx.gz (features x barcodes, 1-based coordinates), barcodes.tsv.gz and
    features.tsv.gz (id, name, feature_type); with ``types=None`` the Cell Ranger 2 genes.tsv (id, name)."""
    import gzip

    import numpy as np
    import scipy.io
    import scipy.sparse as sp

    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, sp.coo_matrix(np.asarray(X).T), field="integer")
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as handle:
        handle.write("".join(f"{b}\n" for b in barcodes))
    if types is None:
        (folder / "genes.tsv").write_text("".join(f"{i}\t{n}\n" for i, n in zip(ids, names, strict=True)))
    else:
        with gzip.open(folder / "features.tsv.gz", "wt") as handle:
            handle.write("".join(f"{i}\t{n}\t{t}\n" for i, n, t in zip(ids, names, types, strict=True)))
    return folder


@pytest.fixture
def tenx():
    """The 10x writers above, as a fixture (helpers cannot be imported from conftest in importlib mode)."""
    import types

    return types.SimpleNamespace(h5=write_10x_h5, mex=write_10x_mex)
