"""``--config run.yaml`` / ``run.toml`` is equivalent to the flags; flags given on the command line win."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics.cli import main
from spatialmultiomics.cli._main import read_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return smo.datasets.write_tables(smo.datasets.paper_benchmark(seed=0), tmp_path_factory.mktemp("in"))


def _run(argv: list[str]) -> None:
    """Run the CLI in-process; it must succeed (return, or exit with code 0)."""
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code or 0
    assert code == 0


def test_yaml_and_toml_configs_equal_the_flags(inputs, tmp_path: Path) -> None:
    flags = [
        "--tx",
        str(inputs["rna"]),
        "--prot",
        str(inputs["protein"]),
        "--tx-platform",
        "Visium",
        "--prot-platform",
        "CODEX",
        "--n-factors",
        "4",
        "--radius",
        "40",
        "--markers",
        str(inputs["markers"]),
        "--seed",
        "3",
        "--expected",
        "paper",
        "--no-figures",
        "-q",
    ]
    _run(["run", *flags, "-o", str(tmp_path / "flags")])
    (tmp_path / "run.yaml").write_text(
        f"tx: {inputs['rna']}\nprot: {inputs['protein']}\ntx-platform: Visium\nprot_platform: CODEX\n"
        f"n-factors: 4\nradius: 40\nmarkers: {inputs['markers']}\nseed: 3\nexpected: paper\nno-figures: true\n"
        "quiet: true\n"
    )
    _run(["run", "--config", str(tmp_path / "run.yaml"), "-o", str(tmp_path / "yaml")])
    (tmp_path / "run.toml").write_text(
        f'[run]\ntx = "{inputs["rna"]}"\nprot = "{inputs["protein"]}"\ntx_platform = "Visium"\n'
        f'prot-platform = "CODEX"\nn_factors = 4\nradius = 40.0\nmarkers = "{inputs["markers"]}"\nseed = 3\n'
        'expected = "paper"\nno_figures = true\nquiet = true\n'
    )
    _run(["run", "--config", str(tmp_path / "run.toml"), "-o", str(tmp_path / "toml")])
    ref = pd.read_csv(tmp_path / "flags" / "co_localization.csv")
    for name in ("yaml", "toml"):
        out = tmp_path / name
        assert not (out / "figures").exists() and (out / "report.html").is_file()
        pd.testing.assert_frame_equal(pd.read_csv(out / "co_localization.csv"), ref)
        assert np.array_equal(np.load(out / "H_shared.npy"), np.load(tmp_path / "flags" / "H_shared.npy"))


def test_flags_win_over_the_config(inputs, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"tx: {inputs['rna']}\nprot: {inputs['protein']}\nn-factors: 3\nradius: 0\nquiet: true\n")
    _run(["run", "--config", str(cfg), "--n-factors", "5", "--radius", "30", "--no-figures", "-o", str(tmp_path / "o")])
    assert np.load(tmp_path / "o" / "H_shared.npy").shape == (5, 200)
    labels = pd.read_csv(tmp_path / "o" / "shared_labels.csv")
    assert len(labels) == 200


def test_read_config_empty_file_is_no_option(tmp_path: Path) -> None:
    (tmp_path / "e.yaml").write_text("")
    assert read_config(tmp_path / "e.yaml") == {}
    (tmp_path / "j.json").write_text('{"n-factors": 7}')
    assert read_config(tmp_path / "j.json") == {"n-factors": 7}


def test_version_and_help(capsys) -> None:
    _run(["--version"])
    assert capsys.readouterr().out.strip() == f"spatialmultiomics, version {smo.__version__}"
    _run(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "demo", "read", "info", "colocalize", "report"):
        assert f"  {command} " in out
    _run(["run", "--help"])
    out = capsys.readouterr().out
    assert "--config FILE" in out
    assert "--no-figures" in out
