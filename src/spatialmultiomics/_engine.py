"""The engine of a pipeline run: NumPy on this machine, a Dask cluster, or PyTorch on a GPU.

:func:`check_engine` validates the choice before anything is read (a missing extra, an unknown backend, a CUDA
device that is not there, a malformed scheduler address: one-line :class:`~spatialmultiomics._errors.InputError`);
:func:`start_engine` starts or connects what the run needs and returns an :class:`Engine`, which describes itself
for ``mdata.uns['engine']`` and the report and is closed at the end of the run (a cluster it started is shut down;
a cluster it only connected to keeps running).

Schedulers of ``backend='dask'``:

- ``'local'``: a ``dask.distributed.LocalCluster`` sized to this machine (worker processes x threads from the
  number of cores, or from ``n_jobs``; memory split evenly between the workers), closed at the end.
- an address such as ``'tcp://10.0.0.5:8786'``: a ``Client`` connected to a running scheduler (one started by
  dask-jobqueue on SLURM / PBS, by dask-kubernetes or dask-gateway, or by ``dask scheduler``); it must answer
  within :data:`CONNECT_TIMEOUT_S` seconds.
- a ``distributed.Client`` object: used as it is (API only).
- None: the active ``Client`` when there is one (``distributed.get_client``), else Dask's local threaded
  scheduler (``n_jobs`` threads).

Which stages of :func:`~spatialmultiomics.run_pipeline` run on the engine is decided in the pipeline; the Dask
route of the spatial stage, :func:`spatial_stage_tiled`, lives here: join counts and neighbour-type counts of the
radius graph added up over tiles with a halo (:func:`smo.spatial.join_counts_tiled`), from which the
co-localization statistics and the niche composition follow exactly as from the whole graph.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._log import logger

if TYPE_CHECKING:
    from mudata import MuData

__all__ = [
    "BACKENDS",
    "CONNECT_TIMEOUT_S",
    "DEVICES",
    "ENGINE_UNS",
    "Engine",
    "EngineSpec",
    "check_engine",
    "scheduler_text",
    "spatial_stage_tiled",
    "start_engine",
]

BACKENDS = ("numpy", "dask", "torch")
DEVICES = ("cpu", "cuda")
ENGINE_UNS = "engine"  # uns: the engine a pipeline run used
CONNECT_TIMEOUT_S = 5.0  # seconds a scheduler address has to answer
_ADDRESS = re.compile(r"^(?:(tcp|tls|ws|wss|ucx|inproc)://)?\[?[\w.\-:]+\]?:\d{1,5}/?$")


@dataclass(frozen=True)
class EngineSpec:
    """A validated engine choice (nothing started yet).

    Attributes
    ----------
    backend
        ``'numpy'``, ``'dask'`` or ``'torch'``.
    scheduler
        ``backend='dask'`` only: ``'local'``, an address, a ``distributed.Client`` or None.
    device
        ``backend='torch'`` only: ``'cpu'`` or ``'cuda'`` (resolved: CUDA when PyTorch sees a GPU), else None.
    n_jobs
        Cores to use (None: the backend's default; -1 all).
    """

    backend: str = "numpy"
    scheduler: Any = None
    device: str | None = None
    n_jobs: int | None = None


def _opt(name: str, cli: str) -> str:
    return f"{name} (--{cli})"


def _import_extra(module: str, *, extra: str, backend: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        msg = (
            f"backend={backend!r} (--backend) needs the optional package {module.split('.')[0]!r}, which is not "
            f"installed: pip install 'spatialmultiomics[{extra}]'."
        )
        raise InputError(msg) from None


def _check_n_jobs(n_jobs: Any) -> int | None:
    if n_jobs is None:
        return None
    if isinstance(n_jobs, str) and n_jobs.strip().lstrip("-").isdigit():
        n_jobs = int(n_jobs.strip())
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or (n_jobs < 1 and n_jobs != -1):
        msg = f"{_opt('n_jobs', 'n-jobs')} must be a positive integer or -1 (all cores), got {n_jobs!r}."
        raise InputError(msg)
    return int(n_jobs)


def _check_scheduler(scheduler: Any) -> Any:
    if scheduler is None or (isinstance(scheduler, str) and scheduler.strip().lower() in ("", "none")):
        return None
    if isinstance(scheduler, str):
        text = scheduler.strip()
        if text.lower() == "local":
            return "local"
        if _ADDRESS.match(text):
            return text if "://" in text else f"tcp://{text}"
        msg = (
            f"{_opt('scheduler', 'scheduler')} must be 'local' (start a LocalCluster on this machine), the address "
            f"of a running Dask scheduler such as 'tcp://10.0.0.5:8786', or none (an active Client, else threads); "
            f"got {scheduler!r}."
        )
        raise InputError(msg)
    if type(scheduler).__name__ == "Client" and hasattr(scheduler, "scheduler_info"):
        return scheduler
    msg = f"scheduler must be 'local', an address string or a distributed.Client, got {type(scheduler).__name__}."
    raise InputError(msg)


def check_engine(
    backend: str = "numpy", *, scheduler: Any = None, device: str | None = None, n_jobs: Any = None
) -> EngineSpec:
    """Validate an engine choice before the run starts; every error is one line naming the option.

    Parameters
    ----------
    backend
        ``'numpy'`` (default), ``'dask'`` (extra ``[dask]``) or ``'torch'`` (extra ``[torch]``).
    scheduler
        Where the Dask tasks run (``backend='dask'`` only); see the module notes.
    device
        ``'cpu'`` or ``'cuda'`` for ``backend='torch'``; default CUDA when PyTorch sees a GPU. ``'cuda'`` without
        a GPU is an error, not a silent fall-back to the CPU.
    n_jobs
        Cores to use: NumPy kernel threads, the size of a ``'local'`` cluster, the local threaded scheduler's
        threads, PyTorch's CPU threads. None: each backend's default; -1: all cores.

    Returns
    -------
    :class:`EngineSpec`
    """
    if not isinstance(backend, str) or backend.strip().lower() not in BACKENDS:
        msg = f"{_opt('backend', 'backend')} must be one of {list(BACKENDS)}, got {backend!r}."
        raise InputError(msg)
    backend = backend.strip().lower()
    n_jobs = _check_n_jobs(n_jobs)
    scheduler = _check_scheduler(scheduler)
    if scheduler is not None and backend != "dask":
        msg = (
            f"{_opt('scheduler', 'scheduler')}={scheduler!r} is for backend='dask', but backend={backend!r}; "
            "add --backend dask or drop --scheduler."
        )
        raise InputError(msg)
    if device is not None:
        if not isinstance(device, str) or device.strip().lower() not in DEVICES:
            msg = f"{_opt('device', 'device')} must be one of {list(DEVICES)}, got {device!r}."
            raise InputError(msg)
        device = device.strip().lower()
        if device == "cuda" and backend != "torch":
            msg = (
                f"{_opt('device', 'device')}='cuda' runs the factorization with PyTorch, but backend={backend!r}; "
                "add --backend torch."
            )
            raise InputError(msg)
    if backend == "dask":
        _import_extra("dask.distributed", extra="dask", backend=backend)
    if backend == "torch":
        torch = _import_extra("torch", extra="torch", backend=backend)
        has_cuda = bool(torch.cuda.is_available())
        if device == "cuda" and not has_cuda:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            msg = (
                f"{_opt('device', 'device')}='cuda': PyTorch {torch.__version__} ({build}) sees no CUDA GPU on this "
                "machine; use --device cpu, or run on a machine with a GPU and the CUDA build of PyTorch."
            )
            raise InputError(msg)
        device = device or ("cuda" if has_cuda else "cpu")
    elif device == "cpu":
        device = None  # NumPy and Dask run on CPUs anyway
    return EngineSpec(backend=backend, scheduler=scheduler, device=device, n_jobs=n_jobs)


@dataclass
class Engine:
    """A started engine: what :func:`start_engine` set up, and how to describe and close it.

    Attributes
    ----------
    spec
        The validated choice.
    client
        The ``distributed.Client`` in use (None for the threaded scheduler and the other backends).
    cluster
        The ``LocalCluster`` this engine started, or None.
    owns_client
        Whether :meth:`close` closes the client (True when this engine created it).
    """

    spec: EngineSpec
    client: Any = None
    cluster: Any = None
    owns_client: bool = False
    _restore: list[Any] = field(default_factory=list, repr=False)

    @property
    def backend(self) -> str:
        """``'numpy'``, ``'dask'`` or ``'torch'``."""
        return self.spec.backend

    @property
    def nmf_threads(self) -> int:
        """``n_jobs`` of the NumPy kernels (1 unless ``n_jobs`` was given)."""
        return 1 if self.spec.n_jobs is None else self.spec.n_jobs

    def describe(self) -> dict[str, Any]:
        """The engine as plain values for ``mdata.uns['engine']`` (h5mu-storable; no None)."""
        import platform
        from importlib.metadata import PackageNotFoundError, version

        out: dict[str, Any] = {
            "backend": self.backend,
            "n_jobs": "default" if self.spec.n_jobs is None else self.spec.n_jobs,
        }
        if self.backend == "numpy":
            out.update(cores=os.cpu_count() or 1, kernel_threads=self.nmf_threads)
        elif self.backend == "torch":
            import torch

            out["device"] = self.spec.device
            out["torch"] = str(torch.__version__)
            if self.spec.device == "cuda":
                props = torch.cuda.get_device_properties(0)
                out.update(
                    device_name=str(props.name),
                    device_memory_gib=round(int(props.total_memory) / 2**30, 2),
                    cuda=str(torch.version.cuda),
                )
            else:
                out.update(device_name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
        else:
            try:
                out["dask"] = version("dask")
            except PackageNotFoundError:  # pragma: no cover - checked in check_engine
                out["dask"] = "unknown"
            if self.client is None:
                import dask

                out.update(
                    scheduler="threads (local threaded scheduler)",
                    workers=1,
                    threads=int(dask.config.get("num_workers", None) or os.cpu_count() or 1),
                )
            else:
                info = self.client.scheduler_info()
                workers = info.get("workers", {})
                limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
                kind = (
                    "local cluster (started for this run)"
                    if self.cluster is not None
                    else "address"
                    if self.owns_client
                    else "active client"
                )
                out.update(
                    scheduler=kind,
                    address=str(info.get("address", "")),
                    workers=len(workers),
                    threads=int(sum(int(w.get("nthreads", 0)) for w in workers.values())),
                    memory_limit_gib=round(sum(limits) / 2**30, 2),
                    memory_limit_per_worker_gib=round(max(limits, default=0) / 2**30, 2),
                )
        return out

    def summary(self) -> str:
        """One line for the log, e.g. ``dask: local cluster, 2 workers x 1 threads, 23.5 GiB``."""
        d = self.describe()
        if self.backend == "numpy":
            return f"numpy on this machine ({d['kernel_threads']} kernel thread(s) of {d['cores']} cores)"
        if self.backend == "torch":
            return f"torch {d['torch']} on {d['device']} ({d['device_name']})"
        text = f"dask {d['dask']}: {d['scheduler']}"
        if "address" in d:
            text += f" at {d['address']}"
        text += f", {d['workers']} worker(s), {d['threads']} thread(s)"
        if d.get("memory_limit_gib"):
            text += f", memory limit {d['memory_limit_gib']:.1f} GiB in all"
        return text

    def log_routes(self, *, choose_k: bool) -> None:
        """Log, one line per stage, where each stage of the pipeline runs on this engine.

        Parameters
        ----------
        choose_k
            Whether the number of factors is chosen from the data (``n_factors='auto'``), which runs on NumPy.
        """
        if self.backend == "numpy":
            return
        if self.backend == "torch":
            logger.info("factorize: joint NMF with PyTorch on %s; the other stages run with NumPy", self.spec.device)
        else:
            logger.info("factorize: joint NMF on Dask row chunks (one task per chunk and iteration)")
            logger.info("spatial: graph statistics on Dask tiles with a halo (join counts, neighbour types)")
            for stage, why in _IN_MEMORY.items():
                log_in_memory(stage, why)
        if choose_k:
            log_in_memory("factorize (choosing k)", "n_factors='auto' fits NumPy NMFs on subsamples of <= 1500 cells")

    def close(self) -> None:
        """Close what this engine started (its client and local cluster); an active client stays open."""
        while self._restore:
            self._restore.pop()()
        if self.owns_client and self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None
        self.owns_client = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _local_cluster(n_jobs: int | None) -> tuple[Any, Any]:
    """A LocalCluster sized to this machine (or to ``n_jobs`` cores) and its Client."""
    import logging

    from distributed import Client, LocalCluster
    from distributed.deploy.utils import nprocesses_nthreads

    cores = os.cpu_count() or 1
    total = cores if n_jobs in (None, -1) else int(n_jobs)
    n_workers, threads = nprocesses_nthreads(total)
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit="auto",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = Client(cluster, set_as_default=True)
    except Exception:
        cluster.close()
        raise
    return cluster, client


def start_engine(spec: EngineSpec) -> Engine:
    """Start or connect what ``spec`` asks for; use as a context manager or call :meth:`Engine.close`.

    Parameters
    ----------
    spec
        From :func:`check_engine`.

    Returns
    -------
    :class:`Engine`
    """
    engine = Engine(spec)
    if spec.backend == "torch" and spec.device == "cpu" and spec.n_jobs is not None:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads((os.cpu_count() or 1) if spec.n_jobs == -1 else spec.n_jobs)
        engine._restore.append(lambda: torch.set_num_threads(before))
    if spec.backend != "dask":
        logger.info("engine: %s", engine.summary())
        return engine
    import dask
    import distributed

    if spec.scheduler == "local":
        try:
            engine.cluster, engine.client = _local_cluster(spec.n_jobs)
        except Exception as err:  # any failure to start becomes one line naming the option
            msg = (
                f"{_opt('scheduler', 'scheduler')}='local': the LocalCluster did not start ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:160]}); a Python script that starts one needs the "
                "`if __name__ == '__main__':` guard (its worker processes import the script)."
            )
            raise InputError(msg) from err
        engine.owns_client = True
    elif isinstance(spec.scheduler, str):
        try:
            engine.client = distributed.Client(spec.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=True)
        except Exception as err:  # refused, timed out, not a Dask scheduler: one line for all
            msg = (
                f"{_opt('scheduler', 'scheduler')}={spec.scheduler!r}: no Dask scheduler answered within "
                f"{CONNECT_TIMEOUT_S:g} s ({type(err).__name__}); check the address and that the scheduler runs, "
                "or use --scheduler local."
            )
            raise InputError(msg) from err
        engine.owns_client = True
    elif spec.scheduler is not None:
        engine.client = spec.scheduler
    else:
        try:
            engine.client = distributed.get_client()
        except ValueError:  # no active client: Dask's local threaded scheduler
            config = dask.config.set(
                scheduler="threads", num_workers=spec.n_jobs if spec.n_jobs not in (None, -1) else None
            )
            engine._restore.append(lambda: config.__exit__(None, None, None))
    logger.info("engine: %s", engine.summary())
    return engine


def scheduler_text(scheduler: Any) -> str:
    """The scheduler of an :class:`EngineSpec` as text for the run parameters (``'none'``, ``'local'``, an address)."""
    if scheduler is None:
        return "none"
    if isinstance(scheduler, str):
        return scheduler
    return f"client at {getattr(scheduler, 'scheduler', None) and scheduler.scheduler.address}"


_IN_MEMORY = {
    "read": "the readers return whole tables",
    "align": "cell matching and registration need every cell of each modality",
    "preprocess": "normalisation and feature selection use whole-column statistics",
    "annotate": "the Leiden clustering needs the whole kNN graph",
    "write": "the result files are written from this machine",
}


def log_in_memory(stage: str, why: str) -> None:
    """One log line for a stage that runs in memory on the client although the Dask backend was chosen."""
    logger.info("%s: runs in memory on this machine, not on Dask (%s)", stage, why)


# ----------------------------------------------------------------------------------------------------------------
# the spatial stage on Dask tiles
# ----------------------------------------------------------------------------------------------------------------
def spatial_stage_tiled(
    mdata: MuData,
    *,
    radius: float,
    expected: str,
    seed: int,
    exclude: tuple[str, ...],
    label_key: str,
    tile_size: float | None = None,
) -> bool:
    """Niche composition and co-localization of ``mdata`` from Dask tiles, stored as the in-memory route stores them.

    The radius graph is never built whole: :func:`smo.spatial.join_counts_tiled` counts the edges leaving each
    tile's cells (halo included) and returns the join counts, the degree sums per FOV and the neighbour types per
    cell, which add up exactly to those of ``spatial_neighbors(method='radius')``. From them follow the exact
    null moments (``colocalization``'s formulas, per FOV) and the neighbour fractions (``niche_composition``).

    Parameters
    ----------
    mdata
        The container after annotation, with ``obsm['spatial']`` (µm) and ``obs[label_key]``.
    radius, expected, seed, exclude, label_key
        As in :func:`smo.spatial.spatial_neighbors` and :func:`smo.spatial.colocalization`.
    tile_size
        Side of the tiles in µm; default that of :func:`smo.spatial.join_counts_tiled`.

    Returns
    -------
    False (nothing done) when some cell has no label: the in-memory route then drops those cells with their edges.
    """
    import pandas as pd

    from spatialmultiomics._keys import Keys
    from spatialmultiomics.spatial._dask import join_counts_tiled
    from spatialmultiomics.spatial._graph import _get_labels, _package_version
    from spatialmultiomics.spatial._niches import _isolated_name

    codes, categories = _get_labels(mdata, label_key)
    if (codes < 0).any():
        return False
    fov = mdata.obs[Keys.FOV].to_numpy() if Keys.FOV in mdata.obs else None
    coords = np.asarray(mdata.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]
    n_types = len(categories)
    tiled = join_counts_tiled(
        coords,
        codes.astype(np.int64),
        n_types=n_types,
        radius=radius,
        tile_size=tile_size,
        fov=fov,
        neighbour_counts=True,
    )
    logger.info("spatial: radius graph counted on %d Dask tiles (the whole graph is not built)", tiled.n_tiles)
    version = _package_version()
    graph_params = {"method": "radius", "radius": float(radius), "engine": "dask tiles", "n_tiles": tiled.n_tiles}
    mdata.uns[Keys.GRAPH_UNS] = {"params": graph_params}

    # niche composition: neighbour fractions, as smo.spatial.niche_composition (include_self=False)
    counts = tiled.neighbour_counts.astype(np.float64)
    total = counts.sum(axis=1)
    frac = np.zeros(counts.shape, dtype=np.float32)
    has = total > 0
    frac[has] = counts[has] / total[has, None]
    niche = np.where(has, np.argmax(counts, axis=1), -1)
    isolated = _isolated_name(categories)
    niche_cats = list(categories) + ([isolated] if (niche < 0).any() else [])
    niche_type = pd.Categorical.from_codes(np.where(niche < 0, n_types, niche), categories=niche_cats)
    mdata.obsm[Keys.NICHE_COMPOSITION] = frac
    mdata.obs[Keys.N_NEIGHBORS] = total.astype(np.int64)
    mdata.obs[Keys.NICHE_TYPE] = niche_type
    niche_params = {"label_key": label_key, "graph_key": "dask tiles", "include_self": False, "version": version}
    mdata.uns[Keys.NICHE_COMPOSITION] = {"categories": list(categories), "params": niche_params}

    # co-localization: exact moments under relabelling within FOVs (undirected graph: the degree sums suffice)
    result = tiled.colocalization(
        categories, expected=expected, keep=np.flatnonzero([c not in exclude for c in categories])
    )
    params = {
        "label_key": label_key,
        "graph_key": "dask tiles",
        "expected": expected,
        "n_perms": 0,
        "seed": seed,
        "fov_key": Keys.FOV if fov is not None else None,
        "sample_key": None,
        "exclude": list(exclude),
        "version": version,
    }
    result = replace(result, params=params)
    if result.degenerate.any():
        names = [c for c, d in zip(result.categories, result.degenerate, strict=True) if d]
        logger.warning("colocalization: types with fewer than 2 cells get NaN statistics: %s", names)
    mdata.uns[Keys.nhood(label_key)] = result.to_uns()
    return True
