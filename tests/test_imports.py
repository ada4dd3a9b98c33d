from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

NAMESPACES = ["io", "align", "pp", "factorize", "annotate", "spatial", "cohort", "datasets", "pl", "report"]


def test_import_is_light() -> None:
    code = (
        "import sys, spatialmultiomics; "
        "heavy = [m for m in ('sklearn', 'anndata', 'mudata', 'pandas', 'scipy', 'torch', 'dask', 'numba', 'squidpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


@pytest.mark.parametrize("name", NAMESPACES)
def test_every_public_name_resolves_and_is_documented(name: str) -> None:
    import spatialmultiomics as smo

    module = getattr(smo, name)
    assert module is importlib.import_module(f"spatialmultiomics.{name}")
    assert module.__all__
    for public in module.__all__:
        obj = getattr(module, public)
        if callable(obj):
            assert obj.__doc__, f"smo.{name}.{public} has no docstring"


def test_alias_package() -> None:
    import SpatialMultiOmics
    import spatialmultiomics

    assert SpatialMultiOmics.run_pipeline is spatialmultiomics.run_pipeline
    assert SpatialMultiOmics.spatial is spatialmultiomics.spatial
