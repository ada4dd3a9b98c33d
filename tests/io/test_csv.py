"""io._csv: pyarrow CSV output reads back as the table pandas writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spatialmultiomics.io._csv import write_csv, write_csv_parts


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[::7] = np.nan
    return pd.DataFrame(
        {
            "cell_id": [f"c{i}" for i in range(n)],
            "label": pd.Categorical(rng.choice(["T cell", 'B "naive"', "Mono,cyte"], n)),
            "composition": [f'{{"T cell": {v:.4f}}}' for v in rng.random(n)],
            "x": x,
            "f32": rng.random(n).astype(np.float32),
            "n": rng.integers(0, 50, n),
        }
    )


def test_reads_back_as_pandas_writes(tmp_path) -> None:
    frame = _frame(50, 0)
    write_csv(frame, tmp_path / "ours.csv")
    frame.to_csv(tmp_path / "pandas.csv", index=False)
    ours = pd.read_csv(tmp_path / "ours.csv")
    ref = pd.read_csv(tmp_path / "pandas.csv")
    pd.testing.assert_frame_equal(ours, ref)
    assert ours["x"].isna().sum() == 8  # missing values stay empty fields
    assert ours.loc[0, "composition"].startswith('{"T cell": ')  # quotes inside a field survive


def test_parts_make_one_table(tmp_path) -> None:
    frame = _frame(95, 1)
    write_csv_parts((frame.iloc[a : a + 20] for a in range(0, 95, 20)), tmp_path / "parts.csv")
    write_csv(frame, tmp_path / "whole.csv")
    assert (tmp_path / "parts.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    write_csv(frame.iloc[:0], tmp_path / "empty.csv")
    assert pd.read_csv(tmp_path / "empty.csv").columns.tolist() == frame.columns.tolist()
