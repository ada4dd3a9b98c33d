"""Ten million cells out of core: a zarr store written chunk by chunk, then the joint NMF on a Dask LocalCluster.

Two steps (the first in a child process, so that its memory is gone before the second starts):

1. ``--stage generate``: streams ``--cells`` cells of planted types (:func:`planted_chunks`: 20 cell types in
   600 µm spatial domains, 30 % of the cells of a type drawn at random; about 50 transcripts a cell over ``--genes``
   genes, sparse, and ``--proteins`` protein intensities, each gene and protein marking one type) into one zarr
   store, ``--chunk`` cells at a time, never holding the whole matrix:

   - ``rna/X``: CSR counts, anndata's ``csr_matrix`` encoding (``anndata.io.write_elem`` for the first chunk,
     ``sparse_dataset(...).append`` for the others; readable lazily with ``anndata.experimental.read_elem_lazy``),
   - ``protein/X``: dense float32 (n, proteins), ``obsm/spatial``: float64 (n, 2) µm, ``obs/cell_type``: int8,
     the planted cell type (the truth the dominant factor is scored against).

2. ``--stage run``: on a ``dask.distributed.LocalCluster`` (``--workers`` worker processes, one thread each,
   ``--worker-memory`` each; managed memory spills to ``WORKDIR/dask-worker-space`` above 60 % of it):

   - ``open``: Dask arrays on the store (RNA chunks are ``csr_matrix``, read by the workers),
   - ``preprocess``: one pass over the RNA for the library sizes (their median is the target sum) and the
     protein percentiles (1st, 99th of ``arcsinh(x / 5)``) from every 10th row; the per-chunk transforms
     themselves (``smo.pp``'s library-size normalisation + log1p, the arcsinh + percentile scaling) are lazy and
     run inside the factorization's read of each chunk. All genes are kept (no HVG selection with 300 genes: the
     pipeline's ``n_top_genes=2000`` keeps them all too),
   - ``factorize``: ``JointNMF(20, backend="dask", seed=0).fit_transform([rna, proteins])`` with the defaults
     (HALS, stopping rule ``tol=1e-3``): the client holds only ``G`` (k x features); every worker holds its row
     chunks and their rows of ``W``,
   - ``label``: the dominant factor of every cell (argmax of ``W``, on the workers), scored against the planted
     cell type (best one-to-one matching of factors to types),
   - ``colocalization``: ``smo.spatial.colocalization_tiled`` (radius ``--radius`` µm, tiles with a halo as
     Dask tasks; the whole graph is never built) on the dominant-factor labels,
   - ``write``: ``W`` to ``WORKDIR/W.zarr`` from the workers,
   - ``check`` (``--check-cells``): the first cells of the same preprocessed input fitted in memory with the NumPy
     backend and on the cluster, 10 iterations each: the largest difference of the loadings (relative to the
     largest loading) and the share of cells with the same dominant factor (issue 15, item 4).

   Per stage: wall time and peak resident memory of the client, of the workers together and of all processes
   (sampled every 0.2 s with psutil over the process tree; the client's exact high-water mark through
   ``smo._memory.PeakRSS``), the bytes the workers spilled to disk, and the load average.

What still needs whole tables in memory (not run here): HVG selection over many genes (column statistics: a
chunked reduction would do), the marker / Leiden annotation (the kNN graph of all cells) and the in-memory
``run_pipeline`` outputs (``result.h5mu``). See ``docs/scale.md``, "Ten million cells".

Run: ``.venv/bin/python benchmarks/bench_pipeline_10m.py [--cells 10000000] [--workdir /tmp/smo_10m]``
(default: both steps; the store is reused when it exists for the same ``--cells``). Numbers go to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

N_PROGRAMS = 20
SQUARE_UM = 600.0
AREA_PER_CELL_UM2 = 150.0


# ---------------------------------------------------------------------------------------------- memory
class TreeRSS:
    """Sample the resident memory (MiB) of this process and of all its descendants (the Dask workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._peak = {"client": 0.0, "workers": 0.0, "all": 0.0}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        """Current resident memory of the client, of its descendants together, and of both, in MiB."""
        import psutil

        client = self._proc.memory_info().rss / 2**20
        workers = 0.0
        for child in self._proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                workers += child.memory_info().rss / 2**20
        return {"client": client, "workers": workers, "all": client + workers}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.sample()
            with self._lock:
                for key, value in now.items():
                    self._peak[key] = max(self._peak[key], value)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def lap(self) -> dict[str, float]:
        """Peaks since the previous lap (GiB), then start a new lap."""
        now = self.sample()
        with self._lock:
            out = {k: round(max(v, now[k]) / 1024, 2) for k, v in self._peak.items()}
            self._peak = dict(now)
        return out


# ---------------------------------------------------------------------------------------------- generate
def planted_chunks(
    n_cells: int, *, n_genes: int, n_proteins: int, chunk: int, library: float = 50.0, seed: int = 0
) -> Any:
    """Yield ``(counts, proteins, xy, cell_type)`` for consecutive chunks of cells (memory O(chunk x genes)).

    The section is a square of ``AREA_PER_CELL_UM2`` µm² per cell cut into 600 µm squares; square ``(i, j)`` is a
    domain of type ``(i + 7 j) % 20``. Cells are placed uniformly; a cell takes its domain's type with probability
    0.7, else a uniformly drawn type. Gene ``g`` marks type ``g % 20``: a cell draws ``Poisson(library)``
    transcripts from its type's profile (marker genes 20 times the background rate), so about half of its counts
    fall on its type's markers (CSR float32). Protein ``q`` marks type ``q % 20``: intensity ``100 (0.05 + [marker])``
    times log-normal noise (sigma 0.5), dense float32.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = float(np.sqrt(AREA_PER_CELL_UM2 * n_cells))
    marker = (np.arange(n_genes)[None, :] % N_PROGRAMS) == np.arange(N_PROGRAMS)[:, None]
    profile = 1.0 + 19.0 * marker
    cum = np.cumsum(profile / profile.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    flat = (cum + np.arange(N_PROGRAMS)[:, None]).ravel()  # type t's cumulative profile shifted into [t, t + 1]
    prot_mean = 100.0 * (0.05 + ((np.arange(n_proteins)[None, :] % N_PROGRAMS) == np.arange(N_PROGRAMS)[:, None]))
    for start in range(0, n_cells, chunk):
        m = min(chunk, n_cells - start)
        xy = rng.random((m, 2)) * side
        domain = (np.floor(xy[:, 0] / SQUARE_UM) + 7 * np.floor(xy[:, 1] / SQUARE_UM)).astype(np.int64) % N_PROGRAMS
        cell_type = np.where(rng.random(m) < 0.7, domain, rng.integers(0, N_PROGRAMS, m))
        n_tx = rng.poisson(library, m)
        rows = np.repeat(np.arange(m, dtype=np.int32), n_tx)
        genes = np.searchsorted(flat, rng.random(rows.size) + cell_type[rows], side="right")
        genes = np.minimum(genes - cell_type[rows] * n_genes, n_genes - 1).astype(np.int32)
        counts = sp.coo_matrix((np.ones(rows.size, np.float32), (rows, genes)), shape=(m, n_genes)).tocsr()
        counts.sum_duplicates()
        proteins = (prot_mean[cell_type] * rng.lognormal(0.0, 0.5, (m, n_proteins))).astype(np.float32)
        yield counts, proteins, xy, cell_type


def generate(workdir: Path, n_cells: int, *, n_genes: int, n_proteins: int, chunk: int, seed: int = 0) -> None:
    """Write ``WORKDIR/store.zarr`` for ``n_cells`` cells, ``chunk`` cells at a time (memory O(chunk x genes))."""
    import zarr
    from anndata.io import sparse_dataset, write_elem

    from spatialmultiomics._memory import PeakRSS

    t0 = time.perf_counter()
    path = workdir / "store.zarr"
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(path, mode="w")
    prot_arr = root.create_array("protein/X", shape=(n_cells, n_proteins), chunks=(chunk, n_proteins), dtype="f4")
    xy_arr = root.create_array("obsm/spatial", shape=(n_cells, 2), chunks=(chunk, 2), dtype="f8")
    prog_arr = root.create_array("obs/cell_type", shape=(n_cells,), chunks=(4 * chunk,), dtype="i1")
    nnz = 0
    prog_buf, buf_start = [], 0
    with PeakRSS() as mem:
        start = 0
        for counts, prot, xy, program in planted_chunks(
            n_cells, n_genes=n_genes, n_proteins=n_proteins, chunk=chunk, seed=seed
        ):
            m = counts.shape[0]
            if start == 0:
                write_elem(root, "rna/X", counts, dataset_kwargs={"chunks": (1 << 21,)})
            else:
                sparse_dataset(root["rna/X"]).append(counts)
            prot_arr[start : start + m] = prot
            xy_arr[start : start + m] = xy
            prog_buf.append(program.astype(np.int8))
            if sum(p.size for p in prog_buf) >= 4 * chunk or start + m == n_cells:
                block = np.concatenate(prog_buf)
                prog_arr[buf_start : buf_start + block.size] = block
                buf_start += block.size
                prog_buf = []
            nnz += counts.nnz
            start += m
            if start % (chunk * 16) == 0 or start == n_cells:
                print(f"  generated {start:,} cells, {time.perf_counter() - t0:.0f} s", flush=True)
        peak = mem.lap()
    root.attrs["bench"] = {"n_cells": n_cells, "n_genes": n_genes, "n_proteins": n_proteins, "nnz": int(nnz)}
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "stage": "generate",
                "n_cells": n_cells,
                "nnz": int(nnz),
                "wall_s": round(time.perf_counter() - t0, 1),
                "peak_rss_gib": round(peak / 1024, 2),
                "store_gib": round(size / 2**30, 2),
                "load_avg": os.getloadavg(),
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------------------------------- run
def _library_sizes(X: Any) -> np.ndarray:
    return np.asarray(X.sum(axis=1), dtype=np.float64).reshape(-1, 1)


def _normalize_chunk(X: Any, target_sum: float) -> Any:
    from spatialmultiomics.pp._normalize import _normalize_counts

    return _normalize_counts(X, target_sum=target_sum, log=True)


def _scale_chunk(X: np.ndarray, lo: np.ndarray, span: np.ndarray, cofactor: float) -> np.ndarray:
    from spatialmultiomics.pp._transforms import transform_channels

    Y = transform_channels(X, "arcsinh", cofactor)
    Y -= lo
    Y /= span
    np.maximum(Y, 0, out=Y)
    return Y


def _spill_io(dask_worker: Any) -> tuple[float, float]:
    """Bytes this worker has written to and read from its spill directory so far (pickled sizes)."""
    metrics = getattr(dask_worker.data, "cumulative_metrics", {})
    return float(metrics.get(("disk-write", "bytes"), 0.0)), float(metrics.get(("disk-read", "bytes"), 0.0))


def _best_match_accuracy(labels: np.ndarray, truth: np.ndarray, k: int) -> float:
    from scipy.optimize import linear_sum_assignment

    table = np.zeros((k, N_PROGRAMS), dtype=np.int64)
    np.add.at(table, (labels.astype(np.int64), truth.astype(np.int64)), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / truth.size)


def run(args: argparse.Namespace) -> None:
    """Run the out-of-core stages on a LocalCluster and print the measurements (JSON, last line)."""
    import logging
    import warnings

    import dask.array as da
    import zarr
    from anndata.experimental import read_elem_lazy
    from distributed import Client, LocalCluster

    from spatialmultiomics._memory import PeakRSS
    from spatialmultiomics.factorize import JointNMF
    from spatialmultiomics.spatial import colocalization_tiled

    warnings.filterwarnings("ignore", category=FutureWarning, module="anndata")
    workdir: Path = args.workdir
    root = zarr.open_group(workdir / "store.zarr", mode="r")
    spill_dir = workdir / "dask-worker-space"
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_avg_start": os.getloadavg(),
        "workers": args.workers,
        "worker_memory_gib": args.worker_memory,
        "stages": {},
    }
    stages = report["stages"]
    t_all = time.perf_counter()
    with (
        TreeRSS() as tree,
        PeakRSS() as client_mem,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=f"{args.worker_memory}GiB",
            local_directory=str(spill_dir),
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        t = t_all  # the first lap includes starting the cluster

        def lap(name: str, **extra: Any) -> None:
            nonlocal t
            now = time.perf_counter()
            stages[name] = {
                "wall_s": round(now - t, 1),
                "peak_rss_gib": tree.lap(),
                "client_hwm_gib": round(client_mem.lap() / 1024, 2),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
                **extra,
            }
            print(f"{name}: {json.dumps(stages[name])}", flush=True)
            t = time.perf_counter()

        lap("cluster start")
        # ------------------------------------------------------------------ open
        rows = args.chunk_rows
        rna = read_elem_lazy(root["rna/X"], chunks=(rows, -1))
        prot = da.from_zarr(root["protein/X"]).rechunk((rows, -1))
        n_cells = int(rna.shape[0])
        lap("open", n_cells=n_cells, n_chunks=len(rna.chunks[0]), rna_chunk=type(rna._meta).__name__)
        # ------------------------------------------------------------------ preprocess (statistics pass)
        lib = rna.map_blocks(_library_sizes, dtype=np.float64, chunks=(rna.chunks[0], (1,)), meta=np.zeros((0, 0)))
        sample = prot[:: args.percentile_every].map_blocks(
            _scale_chunk, lo=np.float32(0), span=np.float32(1), cofactor=5.0, dtype=np.float32
        )
        lib, sample = client.compute([lib, sample], sync=True)
        lib = lib.ravel()
        target = float(np.median(lib[lib > 0]))
        lo = np.percentile(sample, 1.0, axis=0).astype(np.float32)
        span = (np.percentile(sample, 99.0, axis=0) - lo).astype(np.float32)
        span[span <= 0] = 1.0
        del sample, lib
        rna_pp = rna.map_blocks(_normalize_chunk, target_sum=target, dtype=np.float32, meta=rna._meta)
        prot_pp = prot.map_blocks(_scale_chunk, lo=lo, span=span, cofactor=5.0, dtype=np.float32)
        lap("preprocess (statistics pass)", target_sum=round(target, 2))
        # ------------------------------------------------------------------ factorize
        model = JointNMF(args.n_factors, backend="dask", seed=0)
        W = model.fit_transform([rna_pp, prot_pp])
        spill = np.sum(list(client.run(_spill_io).values()), axis=0) / 2**30
        lap(
            "factorize (read + transform + NMF)",
            n_iter=int(model.n_iter_),
            rel_err=round(float(model.loss_curve_[-1]), 5) if len(model.loss_curve_) else None,
            spilled_written_gib=round(float(spill[0]), 2),
            spilled_read_gib=round(float(spill[1]), 2),
        )
        # ------------------------------------------------------------------ label
        codes = W.argmax(axis=1).astype(np.int8).compute()
        truth = np.asarray(root["obs/cell_type"][:])
        acc = _best_match_accuracy(codes, truth, args.n_factors)
        del truth
        lap("label (dominant factor)", accuracy_vs_planted=round(acc, 4))
        # ------------------------------------------------------------------ co-localization
        coords = np.asarray(root["obsm/spatial"][:])
        res = colocalization_tiled(coords, codes, radius=args.radius)
        z = np.asarray(res.zscore, dtype=np.float64)
        diag = float(np.nanmean(np.diag(z)))
        off = float(np.nanmean(z[~np.eye(z.shape[0], dtype=bool)]))
        lap(
            "colocalization (tiled)",
            n_tiles=int(res.params["n_tiles"]),
            mean_z_same_type=round(diag, 1),
            mean_z_other_types=round(off, 1),
        )
        del coords
        # ------------------------------------------------------------------ write
        out = workdir / "W.zarr"
        if out.exists():
            shutil.rmtree(out)
        W.to_zarr(str(out))
        lap("write (W to zarr)", w_gib=round(W.nbytes / 2**30, 2))
        del W
        # ------------------------------------------------------------------ check: same as in memory
        if args.check_cells:
            n = min(args.check_cells, n_cells)
            blocks = [rna_pp[:n], prot_pp[:n]]
            kwargs = {"max_iter": 10, "tol": 0.0}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                W_c = JointNMF(args.n_factors, backend="dask", seed=0, **kwargs).fit_transform(blocks).compute()
                local = [b.compute() for b in blocks]
                ref = JointNMF(args.n_factors, seed=0, **kwargs)
                W_r = ref.fit_transform(local)
            diff = float(np.max(np.abs(W_c - W_r)) / W_r.max())
            same = float(np.mean(W_c.argmax(axis=1) == W_r.argmax(axis=1)))
            lap("check (cluster vs in memory)", cells=n, max_rel_diff_W=diff, same_dominant_factor=same)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    report["peak_rss_gib_all_stages"] = max(s["peak_rss_gib"]["all"] for s in stages.values())
    report["load_avg_end"] = os.getloadavg()
    shutil.rmtree(spill_dir, ignore_errors=True)
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000_000)
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--proteins", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=65_536, help="cells per generated chunk")
    parser.add_argument("--chunk-rows", type=int, default=131_072, help="rows per Dask chunk")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/smo_10m"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", type=float, default=4.0, help="GiB per worker")
    parser.add_argument("--n-factors", type=int, default=N_PROGRAMS)
    parser.add_argument("--radius", type=float, default=50.0)
    parser.add_argument("--percentile-every", type=int, default=10)
    parser.add_argument("--check-cells", type=int, default=200_000)
    parser.add_argument("--stage", choices=["all", "generate", "run"], default="all")
    args = parser.parse_args()
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.stage == "generate":
        generate(workdir, args.cells, n_genes=args.genes, n_proteins=args.proteins, chunk=args.chunk)
        return
    if args.stage == "run":
        run(args)
        return
    stamp = workdir / f"generated_{args.cells}_{args.genes}_{args.proteins}"
    if not stamp.exists():
        for p in workdir.glob("generated_*"):
            p.unlink()
        cmd = [sys.executable, __file__, "--stage", "generate", "--workdir", str(workdir), "--cells", str(args.cells)]
        cmd += ["--genes", str(args.genes), "--proteins", str(args.proteins), "--chunk", str(args.chunk)]
        subprocess.run(cmd, check=True)
        stamp.touch()
    run(args)


if __name__ == "__main__":
    main()
