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


@pytest.fixture(scope="module")
def client():
    """A dask.distributed client on an in-process LocalCluster (2 workers, 1 thread each); skipped without dask."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c
