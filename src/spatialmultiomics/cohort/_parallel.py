"""Run one function per sample in worker processes, results in input order.

Workers are started with ``spawn`` (a fresh interpreter: no inherited BLAS / numba thread pools or locks) and pin
every BLAS / OpenMP pool to one thread (threadpoolctl), so ``n_jobs`` processes use ``n_jobs`` cores. Each task
is one sample: a worker holds one sample at a time, and the results come back in the order of the inputs, so the
outcome never depends on ``n_jobs``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from spatialmultiomics._errors import InputError

__all__ = ["map_samples", "resolve_n_jobs"]

T = TypeVar("T")
R = TypeVar("R")

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def resolve_n_jobs(n_jobs: int, n_tasks: int) -> int:
    """Worker processes for ``n_tasks`` tasks: ``n_jobs`` (-1: every usable core), at most ``n_tasks``."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        msg = f"n_jobs must be a positive integer or -1 (every core), got {n_jobs!r}."
        raise InputError(msg)
    if n_jobs == -1:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_jobs, n_tasks))


def _init_worker() -> None:
    """Pin the worker's thread pools to one thread (before and after the libraries load)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def map_samples(func: Callable[[T], R], items: Sequence[T], *, n_jobs: int = 1) -> list[R]:
    """``[func(item) for item in items]``, in ``n_jobs`` processes when ``n_jobs > 1``.

    Parameters
    ----------
    func
        A module-level function (it is pickled to the workers).
    items
        One task per item (a sample).
    n_jobs
        Worker processes; 1 runs in this process, -1 uses every usable core.

    Returns
    -------
    The results, in the order of ``items``. The first exception raised by a task is raised here (the other
    tasks are cancelled).
    """
    n = resolve_n_jobs(n_jobs, max(len(items), 1))
    if n == 1:
        return [func(item) for item in items]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_init_worker) as pool:
        futures = [pool.submit(func, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as err:
            msg = (
                f"n_jobs={n_jobs}: a worker process died (out of memory, or a script that starts the work at import: "
                "new workers import the main module, so put the call under `if __name__ == '__main__':`); "
                "n_jobs=1 runs in this process."
            )
            raise RuntimeError(msg) from err
        finally:
            for f in futures:
                f.cancel()
