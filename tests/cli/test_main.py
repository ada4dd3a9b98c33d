from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    mdata = smo.datasets.paper_benchmark(seed=0)
    return smo.datasets.write_tables(mdata, tmp_path_factory.mktemp("inputs"))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_seed_command_line_verbatim(tables, tmp_path: Path) -> None:
    for key, name in (("rna", "transcriptomics"), ("protein", "proteomics")):
        (tmp_path / f"{name}.csv").write_bytes(tables[key].read_bytes())
    proc = _run(
        [
            "-m",
            "SpatialMultiOmics",
            "--tx",
            "transcriptomics.csv",
            "--prot",
            "proteomics.csv",
            "--tx-platform",
            "Visium",
            "--prot-platform",
            "CODEX",
            "--n-factors",
            "15",
            "--radius",
            "50.0",
            "--output",
            "results",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results"
    for name, cols in {
        "shared_labels.csv": ["cell_id", "x", "y", "cell_type"],
        "co_localization.csv": ["cell_type_pair", "jones_scornecchi_score"],
        "niche_composition.csv": ["cell_id", "niche_type", "composition", "n_neighbors"],
    }.items():
        assert list(pd.read_csv(out / name).columns[: len(cols)]) == cols
    assert np.load(out / "W_transcript.npy").shape == (500, 15)
    assert np.load(out / "W_protein.npy").shape == (10, 15)
    assert np.load(out / "H_shared.npy").shape == (15, 200)
    # a second run does not clobber the first
    again = _run(
        ["-m", "SpatialMultiOmics", "--tx", "transcriptomics.csv", "--prot", "proteomics.csv", "--output", "results"],
        tmp_path,
    )
    assert again.returncode == 2
    assert "exists and is not empty" in again.stderr
    assert "Traceback" not in again.stderr


def _bad_table(tmp_path: Path, tables, mutate, name: str = "bad.csv") -> Path:
    frame = pd.read_csv(tables["rna"])
    path = tmp_path / name
    mutate(frame).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["x"]), "no 'x' coordinate column"),
        (
            lambda f: f.assign(GENE_000=f["GENE_000"].astype(object).where(f.index != 0, "abc")),
            "column 'GENE_000' has non-numeric values",
        ),
        (
            lambda f: f.assign(GENE_000=f["GENE_000"].where(f.index != 0, np.nan)),
            "column 'GENE_000' has 1 missing (NaN)",
        ),
        (lambda f: f.assign(GENE_000=f["GENE_000"].where(f.index != 0, -1)), "column 'GENE_000' has 1 negative values"),
        (lambda f: f.assign(cell_id=f["cell_id"].where(f.index != 1, f["cell_id"].iloc[0])), "duplicate ids"),
        (lambda f: f.assign(cell_id="other_" + f["cell_id"].astype(str)), "no cell id is shared by all modalities"),
    ],
)
def test_bad_tables_exit_2_with_one_line(tables, tmp_path: Path, mutate, message: str) -> None:
    bad = _bad_table(tmp_path, tables, mutate)
    proc = _run(
        [
            "-m",
            "spatialmultiomics",
            "run",
            "--tx",
            str(bad),
            "--prot",
            str(tables["protein"]),
            "--align",
            "ids",
            "--output",
            str(tmp_path / "out"),
        ],
        tmp_path,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_platform_and_debug_traceback(tables, tmp_path: Path) -> None:
    args = [
        "-m",
        "spatialmultiomics",
        "run",
        "--tx",
        str(tables["rna"]),
        "--prot",
        str(tables["protein"]),
        "--tx-platform",
        "Visum",
        "--output",
        str(tmp_path / "o"),
    ]
    proc = _run(args, tmp_path)
    assert proc.returncode == 2
    assert "platform_tx='Visum' is not a known platform" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _run([*args, "--debug"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_help_and_version(tmp_path: Path) -> None:
    proc = _run(["-m", "spatialmultiomics", "run", "--help"], tmp_path)
    assert proc.returncode == 0
    assert "--n-factors" in proc.stdout
    assert "--tx-platform" in proc.stdout
    for option in ("--backend", "--scheduler", "--device", "--n-jobs"):  # the engine options
        assert option in proc.stdout
    proc = _run(["-m", "spatialmultiomics", "--version"], tmp_path)
    assert proc.returncode == 0
    assert smo.__version__ in proc.stdout


def test_demo_command_paper(tmp_path: Path) -> None:
    proc = _run(["-m", "spatialmultiomics", "demo", "--dataset", "paper", "--output", "d", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "shared_labels.csv").exists()
    assert (tmp_path / "d" / "demo_scores.json").exists()
    assert "accuracy vs known truth" in (tmp_path / "d" / "report.html").read_text()
    assert not list(tmp_path.glob(".d.*"))  # no temporary folder left beside it
