"""Fixtures shared by every test folder."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _restore_logger():
    """Put the package logger back as it was: the CLI configures handlers and levels on it."""
    logger = logging.getLogger("spatialmultiomics")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = state[0], state[1], state[2]
