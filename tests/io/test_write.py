from __future__ import annotations

from pathlib import Path

import pytest

from spatialmultiomics import InputError
from spatialmultiomics.io import atomic_output_dir, check_output_dir


def test_atomic_dir_moves_into_place_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "res"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("partial")
        raise RuntimeError
    assert (out / "a.txt").read_text() == "new"  # earlier result untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # no temp folder left behind


def test_existing_results_are_not_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "res"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(InputError, match="exists and is not empty; choose another folder or pass overwrite=True"):
        check_output_dir(out)
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file; give a folder path"):
        check_output_dir(tmp_path / "f")
