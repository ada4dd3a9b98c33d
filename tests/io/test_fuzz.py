"""Property-based fuzzing of the table reader: any table either reads correctly or raises InputError.

Never another exception (no KeyError, pyarrow error, UnicodeDecodeError, ...), never a warning turned into a crash,
and when it reads, the AnnData is consistent with the file: one row per cell, unique ids, finite coordinates in µm,
finite non-negative values.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spatialmultiomics import InputError  # noqa: E402
from spatialmultiomics.io import read_table  # noqa: E402

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_counter = itertools.count()

NAMES = st.sampled_from(
    [
        "cell_id",
        "id",
        "x",
        "y",
        "X",
        "fov",
        "CD3",
        "CD8",
        "GENE_1",
        "gene 2",
        "",
        "Unnamed: 0",
        "x_centroid",
        "y_centroid",
        "Blank-1",
        "é",
        "a,b",
        'q"t',
        "1",
        "nan",
    ]
)
CELLS = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(0, 1e4, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.text(max_size=6),
    st.sampled_from(["", "NA", "nan", "inf", "-inf", "1e400", "TRUE", "0x10", " 3 ", "1,5", '"', "\n"]),
)


NUMBERS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.floats(0, 1e4, allow_nan=False).map(lambda v: f"{v:.3f}"),
)


@st.composite
def tables(draw) -> tuple[str, str]:
    """(suffix, text): a CSV or TSV, mostly well-formed (coordinates present, unique header, numbers), with
    random defects: odd or duplicate column names, missing coordinates, text / NaN / inf / negative cells, ragged
    rows, no rows."""
    sep = draw(st.sampled_from([",", "\t"]))
    features = draw(st.lists(NAMES, max_size=5, unique=draw(st.booleans()) or draw(st.booleans())))
    base = ["cell_id", "x", "y"] if draw(st.integers(0, 4)) else draw(st.lists(NAMES, max_size=3))
    header = base + features
    n_rows = draw(st.integers(0, 6))
    clean = draw(st.integers(0, 2)) > 0  # two thirds of the tables have only numeric cells

    def row(i: int) -> list[str]:
        width = len(header) if draw(st.integers(0, 9)) else draw(st.integers(0, len(header) + 1))
        cells = [draw(NUMBERS if clean else st.one_of(NUMBERS, CELLS)) for _ in range(width)]
        if cells and header[:1] == ["cell_id"] and draw(st.booleans()):
            cells[0] = f"c{i}"
        return cells

    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(row(i) for i in range(n_rows))
    return (".csv" if sep == "," else ".tsv"), buf.getvalue()


def _check(path: Path) -> None:
    """Read ``path``: an InputError is a valid answer; a result must be a consistent AnnData."""
    try:
        adata = read_table(path, modality="protein")
    except InputError as err:
        msg = str(err)
        assert msg and "\n" not in msg, f"error message must be one non-empty line: {msg!r}"
        return
    xy = np.asarray(adata.obsm["spatial"])
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    assert adata.n_obs >= 1
    assert xy.shape == (adata.n_obs, 2) and np.isfinite(xy).all()
    assert X.shape == (adata.n_obs, adata.n_vars)
    assert np.isfinite(X).all() and (X >= 0).all()
    assert adata.obs_names.is_unique and adata.var_names.is_unique


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(table=tables())
def test_random_tables_read_or_raise_input_error(folder: Path, table) -> None:
    suffix, text = table
    path = folder / f"t{next(_counter)}{suffix}"
    path.write_text(text, encoding="utf-8")
    _check(path)


@settings(SETTINGS, max_examples=60)
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".txt", ".parquet", ".csv.gz"]))
def test_random_bytes_read_or_raise_input_error(folder: Path, data: bytes, suffix: str) -> None:
    path = folder / f"b{next(_counter)}{suffix}"
    path.write_bytes(data)
    _check(path)


@st.composite
def clean_tables(draw) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    n = draw(st.integers(1, 12))
    n_feat = draw(st.integers(1, 5))
    feats = [f"F{i}" for i in range(n_feat)]
    values = np.array(
        draw(st.lists(st.floats(0, 1e5, allow_nan=False, width=32), min_size=n * n_feat, max_size=n * n_feat)),
        dtype=np.float32,
    ).reshape(n, n_feat)
    xy = np.array(
        draw(st.lists(st.floats(-1e5, 1e5, allow_nan=False, width=32), min_size=2 * n, max_size=2 * n)),
        dtype=np.float32,
    ).reshape(n, 2)
    px = draw(st.sampled_from([1.0, 0.377, 2.5]))
    return feats, values, xy, px


@SETTINGS
@given(table=clean_tables())
def test_valid_tables_read_exactly(folder: Path, table) -> None:
    feats, values, xy, px = table
    ids = [f"cell{i}" for i in range(values.shape[0])]
    path = folder / f"c{next(_counter)}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cell_id", "x", "y", *feats])
        for i, cid in enumerate(ids):
            writer.writerow([cid, repr(float(xy[i, 0])), repr(float(xy[i, 1])), *(repr(float(v)) for v in values[i])])
    adata = read_table(path, modality="protein", pixel_size_um=px)
    assert list(adata.obs_names) == ids
    assert list(adata.var_names) == feats
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    assert np.array_equal(X, values)
    assert np.allclose(
        np.asarray(adata.obsm["spatial"]),
        xy.astype(np.float64) * px,
        rtol=1e-6,
        atol=1e-6 * max(1.0, float(np.abs(xy).max()) * px),
    )
    assert not any(math.isnan(v) for v in X.ravel())
