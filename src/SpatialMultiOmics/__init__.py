"""Alias package so the seed's usage works verbatim: ``from SpatialMultiOmics import run_pipeline``.

Everything lives in :mod:`spatialmultiomics`; this module only re-exports it.
"""

from spatialmultiomics import InputError, Keys, __version__
from spatialmultiomics._pipeline import PipelineResult, run_pipeline

__all__ = ["InputError", "Keys", "PipelineResult", "__version__", "run_pipeline"]


def __getattr__(name: str):
    import spatialmultiomics

    return getattr(spatialmultiomics, name)
