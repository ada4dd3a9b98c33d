"""The package logger. The library never configures handlers; the CLI does."""

from __future__ import annotations

import logging

logger = logging.getLogger("spatialmultiomics")

__all__ = ["logger"]
