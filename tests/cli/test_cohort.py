from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spatialmultiomics.cli import main
from spatialmultiomics.cohort._result import ABUNDANCE_COLUMNS, COLOCALIZATION_COLUMNS
from spatialmultiomics.datasets import synthetic_cohort

ARGS = ["--label-key", "cell_type", "--sample-key", "sample", "--condition-key", "condition"]


@pytest.fixture(scope="module")
def cells_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small cohort in pixels of 0.5 µm (4 patients per group, one image each)."""
    cells = synthetic_cohort(n_patients=4, n_images=1, n_cells=400, seed=0).cells.copy()
    cells["x"] *= 2.0
    cells["y"] *= 2.0
    path = tmp_path_factory.mktemp("cohort") / "cells.csv"
    cells.to_csv(path, index=False)
    return path


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cohort_command_writes_the_four_tables_with_exact_columns(cells_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = _run(
        [
            "cohort",
            str(cells_csv),
            *ARGS,
            "--patient-key",
            "patient",
            "--reference-condition",
            "control",
            "--pixel-size-um",
            "0.5",
            "--covariate",
            "age",
            "--n-niches",
            "3",
            "--no-figures",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "3200 cells, 8 samples" in text and "reference control" in text
    ab = pd.read_csv(out / "differential_abundance.csv")
    co = pd.read_csv(out / "differential_colocalization.csv")
    assert tuple(ab.columns[:9]) == ABUNDANCE_COLUMNS
    assert tuple(co.columns[:10]) == COLOCALIZATION_COLUMNS
    assert (ab["reference"] == "control").all() and set(ab["condition"]) == {"case"}
    comp = pd.read_csv(out / "sample_composition.csv")
    coloc = pd.read_csv(out / "sample_colocalization.csv")
    assert comp["sample"].nunique() == 8 and len(coloc) == 8 * 21
    assert "Unknown" not in set(comp["cell_type"])
    assert (out / "cohort_report.html").is_file()
    params = (out / "params.json").read_text()
    assert '"radius": 50.0' in params
    # coordinates were converted to µm: the same run on µm coordinates gives the same tables
    um = pd.read_csv(cells_csv)
    um["x"] *= 0.5
    um["y"] *= 0.5
    um.to_csv(tmp_path / "um.csv", index=False)
    code = _run(
        [
            "cohort",
            str(tmp_path / "um.csv"),
            *ARGS,
            "--patient-key",
            "patient",
            "--reference-condition",
            "control",
            "--covariate",
            "age",
            "--n-niches",
            "3",
            "--no-figures",
            "-q",
            "-o",
            str(tmp_path / "b"),
        ]
    )
    assert code == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "b" / "sample_colocalization.csv")["observed"], coloc["observed"])


@pytest.mark.parametrize(
    ("extra", "edit", "match"),
    [
        (["--patient-key", "donor"], None, "patient_key='donor'"),
        ([], lambda c: c.assign(condition="case"), "one condition only"),
        (["--reference-condition", "placebo"], None, "reference_condition='placebo' is not a condition"),
        (
            [],
            lambda c: c[c["patient"] != "case_P00"].loc[lambda d: ~d["patient"].isin(["case_P01", "case_P02"])],
            "fewer than 2 samples",
        ),
        (["--x", "col_x"], None, "--x 'col_x'"),
        (["--radius", "-1"], None, "radius must be a finite number > 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(cells_csv: Path, tmp_path: Path, capsys, extra, edit, match) -> None:
    path = cells_csv
    if edit is not None:
        path = tmp_path / "edited.csv"
        edit(pd.read_csv(cells_csv)).to_csv(path, index=False)
    code = _run(["cohort", str(path), *ARGS, *extra, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error:") and match in err[-1], err
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "out").exists()


def test_help_names_the_outputs_and_the_model(capsys) -> None:
    assert _run(["cohort", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("differential_colocalization.csv", "--patient-key", "mixed model", "--reference-condition"):
        assert word in text
