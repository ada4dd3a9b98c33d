from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError
from spatialmultiomics.io._common import make_unique, numeric_block, read_frame, require_columns, require_files


def _big(tmp_path: Path, n: int = 60_000) -> pd.DataFrame:
    """A table larger than pyarrow's 1 MB type-inference block."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "cell": [str(2317032900000100001 + i) for i in range(n)],
            "count": rng.integers(0, 9, n),
            "value": rng.uniform(0, 1, n).round(4),
        }
    )


def test_values_after_the_inference_block_are_checked(tmp_path: Path) -> None:
    frame = _big(tmp_path)
    frame["count"] = frame["count"].astype(object)
    frame.loc[55_000, "count"] = "lots"
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert (tmp_path / "t.csv").stat().st_size > 1 << 20
    got, _ = read_frame(tmp_path / "t.csv", text_columns=lambda i, n: i == 0)
    with pytest.raises(InputError, match=r"column 'count' has non-numeric values \(e.g. 'lots' in data row 55001\)"):
        numeric_block(got, ["count", "value"], tmp_path / "t.csv")


def test_late_float_in_an_integer_column_and_exact_long_ids(tmp_path: Path) -> None:
    frame = _big(tmp_path)
    frame["count"] = frame["count"].astype(float)
    frame.loc[59_000, "count"] = 2.5
    frame.to_csv(tmp_path / "t.csv", index=False)
    got, _ = read_frame(tmp_path / "t.csv", text_columns=lambda i, n: n == "cell")
    values = numeric_block(got, ["count", "value"], tmp_path / "t.csv")
    np.testing.assert_allclose(values, frame[["count", "value"]].to_numpy(np.float32))
    assert list(got["cell"][:2]) == ["2317032900000100001", "2317032900000100002"]


def test_header_quirks(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("\ufeff,x,y,\nc1,1,2,3\n")
    got, _ = read_frame(tmp_path / "a.csv")
    assert list(got.columns) == ["Unnamed: 0", "x", "y", "Unnamed: 3"]
    (tmp_path / "b.csv").write_text("id,CD3,CD3\nc1,1,2\n")
    with pytest.raises(InputError, match=r"duplicate column name 'CD3' in the header"):
        read_frame(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("id,x\nc1,1\nc2,1,5\n")
    with pytest.raises(
        InputError, match=r"cannot be parsed as a CSV table \(CSV parse error: Expected 2 columns, got 3"
    ):
        read_frame(tmp_path / "c.csv")
    (tmp_path / "d.gem").write_text("#A=1\n#B=2\ngeneID\tx\n g\t4\n")
    got, comments = read_frame(tmp_path / "d.gem", comment_prefix="#")
    assert comments == ["#A=1", "#B=2"]
    assert list(got.columns) == ["geneID", "x"] and got["x"].tolist() == [4]
    (tmp_path / "e.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable parquet file"):
        read_frame(tmp_path / "e.parquet")


def test_missing_files_and_columns_are_listed_at_once(tmp_path: Path) -> None:
    (tmp_path / "present.csv").write_text("a\n1\n")
    with pytest.raises(
        InputError,
        match=r"not a complete Demo output; missing 2 file\(s\): one.h5 or one/; two.csv. The folder has: \['present.csv'\]",
    ):
        require_files(
            tmp_path,
            {
                "one": (("one.h5", "one/"), "any"),
                "two": (("two.csv",), "file"),
                "?three": (("three.json",), "file"),
                "p": (("present.csv",), "file"),
            },
            platform="Demo",
        )
    with pytest.raises(
        InputError,
        match=r"lacks column\(s\) x \('x' / 'X_centroid'\), y \('y'\); its columns are \['id', 'X_centriod', 'yy'\]; did you mean 'X_centriod' for 'X_centroid'",
    ):
        require_columns(["id", "X_centriod", "yy"], {"x": ("x", "X_centroid"), "y": ("y",)}, path="t.csv")


def test_make_unique() -> None:
    assert make_unique(["A", "B", "A", "A-1", "A"]) == ["A", "B", "A-2", "A-1", "A-3"]
