"""Fixtures shared by every test folder."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


def _pristine_logger() -> None:
    logger = logging.getLogger("spatialmultiomics")
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(autouse=True)
def _restore_logger():
    """Every test starts and ends with the package logger as the library leaves it (no handlers, propagating).

    The CLI configures handlers, the level and ``propagate`` on it; a module- or session-scoped fixture that runs
    the CLI in-process would otherwise leave it configured for every later test (``caplog`` then sees nothing).
    """
    _pristine_logger()
    yield
    _pristine_logger()


#: the in-process test cluster: every HTTP server on one loopback socket with a port chosen by the OS
CLUSTER_KWARGS = {
    "n_workers": 2,
    "threads_per_worker": 1,
    "processes": False,
    "dashboard_address": None,
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
    "worker_dashboard_address": "127.0.0.1:0",
}


@pytest.fixture(scope="module")
def client():
    """A dask.distributed client on an in-process LocalCluster (2 workers, 1 thread each); skipped without dask.

    Every HTTP server of the cluster listens on one loopback socket with a port chosen by the OS. With the
    defaults the scheduler asks for the fixed port 8787 on every interface: when another process holds it (tests
    or a dashboard running at the same time), distributed warns "Port 8787 is already in use" and tornado leaks the
    socket whose bind failed; under pytest's warnings-as-errors either one aborts the cluster's start (the Dask
    tests errored in ~1 of 8 processes on a shared machine).
    """
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(**CLUSTER_KWARGS) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture
def cluster_kwargs() -> dict:
    """The keyword arguments of the ``client`` fixture's LocalCluster."""
    return dict(CLUSTER_KWARGS)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="session")
def chromium() -> Callable[..., tuple[str, list[str]]]:
    """``load(page, tmp_path, fragment="")``: the DOM of ``page`` after its scripts ran in headless Chromium, and
    the console messages; the test is skipped without Chromium (``make test`` installs Debian's)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium)")

    def load(page: Path, tmp_path: Path, fragment: str = "") -> tuple[str, list[str]]:
        proc = subprocess.run(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                page.resolve().as_uri() + fragment,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
        return proc.stdout, console

    return load
