from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import spatialmultiomics._pipeline as pipeline
from spatialmultiomics import InputError
from spatialmultiomics.cli._main import cli
from spatialmultiomics.pp import PROTEIN_TRANSFORMS


def _captured_run(monkeypatch: pytest.MonkeyPatch, args: list[str], tmp_path: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake_run_pipeline(**kwargs: Any) -> None:
        seen.update(kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    table = tmp_path / "protein.csv"
    table.write_text("id,x,y,CD3\n1,0,0,1\n")
    result = CliRunner().invoke(cli, ["run", "--prot", str(table), "-o", str(tmp_path / "out"), "-q", *args])
    assert result.exit_code == 0, result.output
    return seen


def test_protein_transform_option_defaults_to_auto(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _captured_run(monkeypatch, [], tmp_path)["protein_transform"] == "auto"
    assert _captured_run(monkeypatch, ["--protein-transform", "CLR"], tmp_path)["protein_transform"] == "clr"
    background = _captured_run(monkeypatch, ["--protein-transform", "arcsinh_background"], tmp_path)
    assert background["protein_transform"] == "arcsinh_background"
    result = CliRunner().invoke(cli, ["run", "--protein-transform", "sqrt"])
    assert result.exit_code == 2 and "'sqrt' is not one of" in result.output
    assert "arcsinh_background" in result.output  # the allowed values are listed


def test_cli_choices_are_the_protein_transforms() -> None:
    run = cli.commands["run"]
    option = next(p for p in run.params if p.name == "protein_transform")
    assert tuple(option.type.choices) == PROTEIN_TRANSFORMS


def test_run_pipeline_refuses_an_unknown_transform_before_reading(tmp_path: Path) -> None:
    allowed = (
        r"protein_transform must be one of \['auto', 'arcsinh', 'arcsinh_background', 'clr', 'log1p', 'none'\], "
        r"got 'sqrt'"
    )
    with pytest.raises(InputError, match=allowed):
        pipeline.run_pipeline(protein_path=tmp_path / "missing.csv", protein_transform="sqrt")
