import json
from pathlib import Path

import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics.cli import main


@pytest.fixture(scope="module")
def sheet(tmp_path_factory) -> Path:
    """Four synthetic slides x 300 cells as table files, a marker file and a YAML sample sheet (two conditions)."""
    folder = tmp_path_factory.mktemp("cli_cohort")
    lines = ["samples:"]
    for i in range(4):
        files = smo.datasets.write_tables(smo.datasets.synthetic_tissue(300, seed=40 + i), folder / f"s{i}")
        lines += [
            f"  - sample: s{i}",
            f"    condition: {'ctrl' if i < 2 else 'case'}",
            f"    patient: p{i}",
            f"    transcripts: s{i}/{files['rna'].name}",
            f"    proteins: s{i}/{files['protein'].name}",
            "    proteins_platform: CODEX",
            f"    batch: b{i % 2}",
        ]
    (folder / "markers.json").write_text((folder / "s0" / "markers.json").read_text())
    (folder / "samples.yaml").write_text("\n".join(lines) + "\n")
    return folder / "samples.yaml"


def _main(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cohort_command_on_a_sample_sheet_writes_every_result(sheet, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "cohort",
        str(sheet),
        "--output",
        str(out),
        "--n-factors",
        "12",
        "--markers",
        str(sheet.parent / "markers.json"),
    ]
    assert _main([*args, "--no-figures", "--reference-condition", "ctrl"]) == 0
    printed = capsys.readouterr().out
    assert "1200 cells, 4 samples, conditions ctrl, case; batch correction quantile" in printed
    for name in (
        "cells.csv",
        "samples.csv",
        "cohort_model.json",
        "result.h5mu",
        "sample_composition.csv",
        "differential_abundance.csv",
        "differential_colocalization.csv",
        "cohort_report.html",
    ):
        assert (out / name).is_file(), name
    cells = pd.read_csv(out / "cells.csv")
    assert cells.groupby("sample")["condition"].first().to_dict() == {
        "s0": "ctrl",
        "s1": "ctrl",
        "s2": "case",
        "s3": "case",
    }
    assert set(pd.read_csv(out / "differential_abundance.csv")["reference"]) == {"ctrl"}
    model = json.loads((out / "cohort_model.json").read_text())
    assert model["batch_correction"]["used"] == "quantile" and model["n_samples"] == 4
    assert pd.read_csv(out / "samples.csv")["batch"].tolist() == ["b0", "b1", "b0", "b1"]
    # an existing result folder is refused (exit 2), before any work
    assert _main([*args]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_cohort_command_bad_sheet_exits_2_with_one_line(sheet, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"sample,condition,proteins\na,x,{sheet.parent}/s0/proteomics.csv\nb,y,nowhere.csv\n")
    assert _main(["cohort", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.csv, row 2, column 'proteins': file 'nowhere.csv' not found" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    # a labelled cell table still needs its keys
    cells = tmp_path / "cells.csv"
    cells.write_text("x,y,cell_type,sample,condition\n0,0,T,a,x\n")
    assert _main(["cohort", str(cells), "--output", str(tmp_path / "o2")]) == 2
    assert "needs --label-key, --sample-key and --condition-key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
