"""Command-line interface."""

from spatialmultiomics.cli._main import cli, main

__all__ = ["cli", "main"]
