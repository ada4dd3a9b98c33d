"""Command-line interface."""

from spatialmultiomics.cli import (
    _cohort,  # noqa: F401  (registers the cohort command)
    _colocalize,  # noqa: F401  (registers the colocalize command)
    _export,  # noqa: F401  (registers the export command)
    _io,  # noqa: F401  (registers the read and info commands)
    _report,  # noqa: F401  (registers the report command)
)
from spatialmultiomics.cli._main import cli, main

__all__ = ["cli", "main"]
