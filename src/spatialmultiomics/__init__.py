"""spatialmultiomics: joint NMF of spatial transcriptomics and proteomics, shared cell types, niches and exact
co-localization statistics.

``import spatialmultiomics as smo``; the namespaces ``smo.io``, ``smo.align``, ``smo.pp``, ``smo.factorize``,
``smo.annotate``, ``smo.spatial``, ``smo.cohort``, ``smo.pl``, ``smo.report`` and ``smo.datasets`` load on first access, and ``smo.run_pipeline`` runs them
all.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys

try:
    __version__ = version("spatialmultiomics")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_SUBMODULES = ("align", "annotate", "cohort", "datasets", "factorize", "io", "pl", "pp", "report", "spatial")

__all__ = [
    "ChunkedPipelineResult",
    "InputError",
    "Keys",
    "PipelineResult",
    "__version__",
    "run_pipeline",
    "write_results",
    *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"spatialmultiomics.{name}")
    if name in ("run_pipeline", "PipelineResult"):
        from spatialmultiomics import _pipeline

        return getattr(_pipeline, name)
    if name == "ChunkedPipelineResult":
        from spatialmultiomics._chunked_pipeline import ChunkedPipelineResult

        return ChunkedPipelineResult
    if name == "write_results":
        from spatialmultiomics._results import write_results

        return write_results
    msg = f"module 'spatialmultiomics' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)
