"""Ten million cells out of core: a zarr store written chunk by chunk, then the pipeline's steps on a Dask cluster.

Two steps (the first in a child process, so that its memory is gone before the second starts):

1. ``--stage generate``: streams ``--cells`` cells of planted types (:func:`planted_chunks`: 20 cell types in
   600 µm spatial domains, 30 % of the cells of a type drawn at random; ``--genes`` genes (default 2,000) of which
   ``--density`` (default 10 %) are non-zero in an average cell, i.e. the mean transcripts a cell that gives that
   density (:func:`transcripts_for_density`: 266.5 for 2,000 genes), and ``--proteins`` (default 40) protein
   intensities, each gene and protein marking one type) into one zarr store, ``--chunk`` cells at a time, never
   holding the whole matrix (a numba kernel draws the next chunk while the previous one is written):

   - ``rna/X``: CSR counts, anndata's ``csr_matrix`` encoding with a 64-bit ``indptr`` (``anndata.io.write_elem``
     for the first chunk, ``sparse_dataset(...).append`` for the others; readable lazily with
     ``anndata.experimental.read_elem_lazy``),
   - ``protein/X``: dense float32 (n, proteins), ``obsm/spatial``: float64 (n, 2) µm, ``obs/cell_type``: int8,
     the planted cell type (the truth the annotation is scored against).

2. ``--stage run``: on a ``dask.distributed.LocalCluster`` (``--workers`` worker processes, one thread each,
   ``--worker-memory`` each; managed memory spills to ``WORKDIR/dask-worker-space`` above 60 % of it):

   - ``open``: Dask arrays on the store (RNA chunks are ``csr_matrix``, read by the workers),
   - ``preprocess + HVG``: the pipeline's defaults, lazily per chunk (``smo.pp.normalize_chunk``: library size to
     1e4 + log1p; proteins arcsinh(x / 5) scaled between their 1st and 99th percentiles, from every 10th row:
     ``smo.pp.fit_intensity_scaling`` on the sample, ``smo.pp.apply_intensity_scaling`` per chunk),
     and one pass over the RNA for the highly variable genes (``smo.pp.highly_variable_genes_chunked``,
     ``n_top_genes=2000``: the in-memory selection from chunked column statistics; with 2,000 genes all are kept),
   - ``factorize``: ``JointNMF(20, backend="dask", seed=0).fit_transform([rna, proteins])`` with the defaults: the
     client holds only ``G`` (k x features); every worker holds its row chunks and their rows of ``W``,
   - ``dominant factor``: argmax of ``W`` on the workers, scored against the planted type (best one-to-one match),
   - ``annotate`` (``smo.annotate.annotate_chunked``): the in-memory annotation (``method='cluster'``) of a seeded
     sample of ``--annotate-sample`` cells (50,000, as in memory) pulled into the client, with a marker table of
     the planted types (10 marker genes and the 2 marker proteins of each); then every chunk assigned on the
     workers (embedding, majority cluster of the 15 nearest of 20,000 sampled cells, per-cell override), the type
     codes and confidences written to ``WORKDIR/labels.zarr``; scored against the planted types (accuracy,
     macro-F1, ``Unknown`` counted as wrong),
   - ``colocalization``: ``smo.spatial.colocalization_tiled`` (radius ``--radius`` µm, tiles with a halo as
     Dask tasks; the whole graph is never built) on the annotated types,
   - ``write``: ``W`` to ``WORKDIR/W.zarr`` from the workers,
   - ``check`` (``--check-cells``): the first cells of the same preprocessed input fitted in memory with the NumPy
     backend and on the cluster, 10 iterations each: the largest difference of the loadings (relative to the
     largest loading) and the share of cells with the same dominant factor (issue 15, item 4).

   Per stage: wall time and peak resident memory of the client, of the workers together and of all processes
   (sampled every 0.2 s with psutil over the process tree; the client's exact high-water mark through
   ``smo._memory.PeakRSS``), the bytes the workers have spilled to disk and read back so far, and the load average.

3. ``--stage one-call``: the same planted data as two AnnData zarr stores (``rna.zarr``, ``protein.zarr``, the
   layout of ``smo.io.stream_to_zarr``; written chunk by chunk in a child process, :func:`generate_stores`), then
   the one call ``smo.run_pipeline(rna.zarr, protein.zarr, backend="dask", scheduler=client)`` on the same
   LocalCluster: its stage times, the client's peak memory per stage, the peak over all processes, and the
   accuracy of ``shared_labels.csv`` against the planted types.

Not out of core here: the vendor readers (the data are generated into the store) and the in-memory
``run_pipeline`` outputs (``result.h5mu``). See ``docs/scale.md``, "Ten million cells".

Run: ``.venv/bin/python benchmarks/bench_pipeline_10m.py [--cells 10000000] [--workdir /tmp/smo_10m]``
(default: both steps; the store is reused when it exists for the same ``--cells``, ``--genes``, ``--proteins``,
``--density``). Numbers go to ``benchmarks/RESULTS.md``.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

N_PROGRAMS = 20
SQUARE_UM = 600.0
AREA_PER_CELL_UM2 = 150.0
MARKER_FOLD = 20.0  # expression of a type's marker genes relative to its other genes


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
def _marker_mass(n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per type: number of marker genes (``g % 20 == t``) and the share of its transcripts that fall on them."""
    n_markers = np.array([len(range(t, n_genes, N_PROGRAMS)) for t in range(N_PROGRAMS)], dtype=np.int64)
    weight = MARKER_FOLD * n_markers
    return n_markers, weight / (weight + (n_genes - n_markers))


def transcripts_for_density(n_genes: int, density: float) -> float:
    """Mean transcripts a cell for which ``density`` of the genes of an average cell are non-zero.

    A cell of type ``t`` with ``Poisson(L)`` transcripts has ``Poisson(L p_g)`` counts of gene ``g`` (independent),
    so its expected non-zero genes are ``sum_g 1 - exp(-L p_g)``; ``L`` is found by bisection.
    """
    n_markers, mass = _marker_mass(n_genes)

    def nnz(L: float) -> float:
        on = n_markers * (1 - np.exp(-L * mass / np.maximum(n_markers, 1)))
        off = (n_genes - n_markers) * (1 - np.exp(-L * (1 - mass) / np.maximum(n_genes - n_markers, 1)))
        return float(np.mean(on + off))

    target = density * n_genes
    if not 0 < density < 1:
        msg = f"--density must lie in (0, 1), got {density}."
        raise SystemExit(msg)
    lo, hi = 0.0, 1.0
    while nnz(hi) < target:
        hi *= 2
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if nnz(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _draw_counts(
    cell_type: np.ndarray, n_tx: np.ndarray, mass: np.ndarray, n_markers: np.ndarray, n_genes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays (int64 indptr, int32 sorted indices, float32 counts) of the transcripts of a chunk of cells."""
    import numba

    global _DRAW_KERNEL
    if _DRAW_KERNEL is None:
        _DRAW_KERNEL = numba.njit(cache=True, nogil=True)(_draw_counts_py)
    return _DRAW_KERNEL(cell_type, n_tx, mass, n_markers, n_genes, seed)


_DRAW_KERNEL = None


def _draw_counts_py(
    cell_type: np.ndarray, n_tx: np.ndarray, mass: np.ndarray, n_markers: np.ndarray, n_genes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # each transcript: a marker of the cell's type with the type's marker share (uniform among its markers, the
    # genes g % 20 == t), else uniform among the other genes; counts summed per gene, genes sorted per cell.
    # Random numbers: splitmix64 of (seed, transcript number), two 32-bit uniforms from each 64-bit draw
    m = cell_type.size
    indptr = np.zeros(m + 1, dtype=np.int64)
    indices = np.empty(n_tx.sum(), dtype=np.int32)
    data = np.empty(n_tx.sum(), dtype=np.float32)
    buf = np.zeros(n_genes, dtype=np.int32)
    touched = np.empty(n_genes, dtype=np.int32)
    state = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    inv32 = 1.0 / 4294967296.0
    nnz = 0
    for i in range(m):
        t = cell_type[i]
        nt = 0
        n_mark = n_markers[t]
        n_other = n_genes - n_mark
        share = mass[t]
        for _ in range(n_tx[i]):
            state += np.uint64(0x9E3779B97F4A7C15)
            z = state
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            u1 = float(z >> np.uint64(32)) * inv32
            u2 = float(z & np.uint64(0xFFFFFFFF)) * inv32
            if u1 < share:
                g = t + 20 * int(u2 * n_mark)
            else:
                j = int(u2 * n_other)
                r = j % 19
                g = (j // 19) * 20 + r + (1 if r >= t else 0)
            if buf[g] == 0:
                touched[nt] = g
                nt += 1
            buf[g] += 1
        row = np.sort(touched[:nt])
        for q in range(nt):
            g = row[q]
            indices[nnz] = g
            data[nnz] = buf[g]
            buf[g] = 0
            nnz += 1
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy()


def planted_chunks(
    n_cells: int, *, n_genes: int, n_proteins: int, chunk: int, library: float = 50.0, seed: int = 0
) -> Any:
    """Yield ``(counts, proteins, xy, cell_type)`` for consecutive chunks of cells (memory O(chunk x genes)).

    The section is a square of ``AREA_PER_CELL_UM2`` µm² per cell cut into 600 µm squares; square ``(i, j)`` is a
    domain of type ``(i + 7 j) % 20``. Cells are placed uniformly; a cell takes its domain's type with probability
    0.7, else a uniformly drawn type. Gene ``g`` marks type ``g % 20``: a cell draws ``Poisson(library)``
    transcripts from its type's profile (marker genes ``MARKER_FOLD`` = 20 times the background rate: with 2,000
    genes about half of its counts fall on its type's 100 markers), each transcript a marker with the type's marker
    share, then a gene uniformly among the markers or among the other genes; counts are CSR float32 (int64
    ``indptr``, so that stores above 2**31 values can be appended to). Protein ``q`` marks type ``q % 20``:
    intensity ``100 (0.05 + [marker])`` times log-normal noise (sigma 0.5), dense float32.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    side = float(np.sqrt(AREA_PER_CELL_UM2 * n_cells))
    n_markers, mass = _marker_mass(n_genes)
    prot_mean = 100.0 * (0.05 + ((np.arange(n_proteins)[None, :] % N_PROGRAMS) == np.arange(N_PROGRAMS)[:, None]))
    for start in range(0, n_cells, chunk):
        m = min(chunk, n_cells - start)
        xy = rng.random((m, 2)) * side
        domain = (np.floor(xy[:, 0] / SQUARE_UM) + 7 * np.floor(xy[:, 1] / SQUARE_UM)).astype(np.int64) % N_PROGRAMS
        cell_type = np.where(rng.random(m) < 0.7, domain, rng.integers(0, N_PROGRAMS, m))
        n_tx = rng.poisson(library, m)
        indptr, indices, data = _draw_counts(
            cell_type.astype(np.int64), n_tx.astype(np.int64), mass, n_markers, n_genes, int(rng.integers(2**31))
        )
        counts = sp.csr_matrix((data, indices, indptr), shape=(m, n_genes))
        counts.indptr = indptr  # scipy may narrow the index dtype; the store keeps 64-bit offsets
        proteins = (prot_mean[cell_type] * rng.lognormal(0.0, 0.5, (m, n_proteins))).astype(np.float32)
        yield counts, proteins, xy, cell_type


def generate(
    workdir: Path, n_cells: int, *, n_genes: int, n_proteins: int, chunk: int, density: float, seed: int = 0
) -> None:
    """Write ``WORKDIR/store.zarr`` for ``n_cells`` cells, ``chunk`` cells at a time (memory O(chunk x genes))."""
    import zarr
    from anndata.io import sparse_dataset, write_elem

    from spatialmultiomics._memory import PeakRSS

    t0 = time.perf_counter()
    library = transcripts_for_density(n_genes, density)
    print(f"  {library:.1f} transcripts a cell for {density:.0%} non-zero genes", flush=True)
    path = workdir / "store.zarr"
    if path.exists():
        shutil.rmtree(path)
    root = zarr.open_group(path, mode="w")
    prot_arr = root.create_array("protein/X", shape=(n_cells, n_proteins), chunks=(chunk, n_proteins), dtype="f4")
    xy_arr = root.create_array("obsm/spatial", shape=(n_cells, 2), chunks=(chunk, 2), dtype="f8")
    prog_arr = root.create_array("obs/cell_type", shape=(n_cells,), chunks=(4 * chunk,), dtype="i1")
    nnz = 0
    prog_buf, buf_start = [], 0
    chunks = planted_chunks(n_cells, n_genes=n_genes, n_proteins=n_proteins, chunk=chunk, library=library, seed=seed)
    with PeakRSS() as mem, ThreadPoolExecutor(1) as pool:
        # the next chunk is drawn (numba, without the GIL) while this one is compressed and written
        start = 0
        ahead = pool.submit(next, chunks, None)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(next, chunks, None)
            counts, prot, xy, program = item
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
    root.attrs["bench"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_proteins": n_proteins,
        "density": density,
        "transcripts_per_cell": library,
        "nnz": int(nnz),
    }
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "stage": "generate",
                "n_cells": n_cells,
                "nnz": int(nnz),
                "nonzero_genes_per_cell": round(nnz / n_cells, 1),
                "wall_s": round(time.perf_counter() - t0, 1),
                "peak_rss_gib": round(peak / 1024, 2),
                "store_gib": round(size / 2**30, 2),
                "load_avg": os.getloadavg(),
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------------------------------- run
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


def gene_names(n_genes: int) -> list[str]:
    return [f"G{g:04d}" for g in range(n_genes)]


def protein_names(n_proteins: int) -> list[str]:
    return [f"P{q:02d}" for q in range(n_proteins)]


def planted_markers(n_genes: int, n_proteins: int, genes_per_type: int = 10) -> dict[str, dict[str, list[str]]]:
    """Marker table of the planted types: ``type_t`` has genes ``t, t + 20, ...`` (the first ``genes_per_type``).

    And every protein ``q`` with ``q % 20 == t``.
    """
    genes, prots = gene_names(n_genes), protein_names(n_proteins)
    return {
        f"type_{t:02d}": {
            "genes": [genes[g] for g in range(t, n_genes, N_PROGRAMS)][:genes_per_type],
            "proteins": [prots[q] for q in range(t, n_proteins, N_PROGRAMS)],
        }
        for t in range(N_PROGRAMS)
    }


def run(args: argparse.Namespace) -> None:
    """Run the out-of-core stages on a LocalCluster and print the measurements (JSON, last line)."""
    import logging
    import warnings

    import dask
    import dask.array as da
    import zarr
    from anndata.experimental import read_elem_lazy
    from distributed import Client, LocalCluster
    from sklearn.metrics import accuracy_score, f1_score

    import spatialmultiomics as smo
    from spatialmultiomics._memory import PeakRSS
    from spatialmultiomics.factorize import JointNMF
    from spatialmultiomics.spatial import colocalization_tiled

    warnings.filterwarnings("ignore", category=FutureWarning, module="anndata")
    workdir: Path = args.workdir
    root = zarr.open_group(workdir / "store.zarr", mode="r")
    bench = dict(root.attrs["bench"])
    spill_dir = workdir / "dask-worker-space"
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_avg_start": os.getloadavg(),
        "workers": args.workers,
        "worker_memory_gib": args.worker_memory,
        "data": bench,
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
            spill = np.sum(list(client.run(_spill_io).values()), axis=0) / 2**30
            stages[name] = {
                "wall_s": round(now - t, 1),
                "peak_rss_gib": tree.lap(),
                "client_hwm_gib": round(client_mem.lap() / 1024, 2),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
                "spilled_so_far_gib": [round(float(spill[0]), 2), round(float(spill[1]), 2)],
                **extra,
            }
            print(f"{name}: {json.dumps(stages[name])}", flush=True)
            t = time.perf_counter()

        lap("cluster start")
        # ------------------------------------------------------------------ open
        rows = args.chunk_rows
        rna = read_elem_lazy(root["rna/X"], chunks=(rows, -1))
        prot = da.from_zarr(root["protein/X"]).rechunk((rows, -1))
        n_cells, n_genes = (int(v) for v in rna.shape)
        genes, prots = gene_names(n_genes), protein_names(int(prot.shape[1]))
        lap("open", n_cells=n_cells, n_chunks=len(rna.chunks[0]), rna_chunk=type(rna._meta).__name__)
        # ------------------------------------------------------------------ preprocess + HVG (one pass over the RNA)
        # the pipeline's defaults: library size to 1e4 + log1p (lazy, per chunk, inside every later read), HVG
        # (n_top_genes=2000) from chunked column statistics, proteins arcsinh(x / 5) scaled between their 1st and
        # 99th percentiles (from every 10th row)
        sample = client.compute(prot[:: args.percentile_every], sync=True)
        scaling = smo.pp.fit_intensity_scaling(sample, transform="arcsinh", cofactor=5.0)
        del sample
        rna_norm = rna.map_blocks(smo.pp.normalize_chunk, target_sum=1e4, dtype=np.float32, meta=rna._meta)
        prot_pp = prot.map_blocks(smo.pp.apply_intensity_scaling, **scaling.apply_kwargs(), dtype=np.float32)
        hvg = smo.pp.highly_variable_genes_chunked(rna_norm, n_top_genes=args.n_top_genes)
        keep = np.flatnonzero(hvg.highly_variable)
        rna_pp = rna_norm
        if keep.size < n_genes:  # lazy: each CSR chunk keeps its HVG columns where it is read
            rna_pp = smo.pp.select_columns_chunked(rna_norm, keep=hvg.highly_variable)
        lap(
            "preprocess + HVG statistics (one pass)",
            target_sum=1e4,
            hvg_kept=int(keep.size),
            hvg_of=n_genes,
            mean_of_gene_means=round(float(hvg.mean.mean()), 4),
        )
        # ------------------------------------------------------------------ factorize
        model = JointNMF(args.n_factors, backend="dask", seed=0)
        W = model.fit_transform([rna_pp, prot_pp])
        lap(
            "factorize (read + transform + NMF)",
            n_iter=int(model.n_iter_),
            rel_err=round(float(model.loss_curve_[-1]), 5) if len(model.loss_curve_) else None,
        )
        # ------------------------------------------------------------------ label (dominant factor)
        dom = W.argmax(axis=1).astype(np.int8).compute()
        truth = np.asarray(root["obs/cell_type"][:])
        acc_dom = _best_match_accuracy(dom, truth, args.n_factors)
        del dom
        lap("dominant factor", accuracy_vs_planted_best_match=round(acc_dom, 4))
        # ------------------------------------------------------------------ annotate (sample in memory, rest chunked)
        markers = planted_markers(n_genes, int(prot.shape[1]))
        res = smo.annotate.annotate_chunked(
            {"rna": rna_pp, "protein": prot_pp},
            var_names={"rna": [genes[j] for j in keep], "protein": prots},
            markers=markers,
            max_cells=args.annotate_sample,
            seed=0,
        )
        sample_params = res.params["annotation"]["params"]["clustering"]
        lap(
            "annotate: sample clustered + named in memory",
            sampled=int(res.sample.size),
            n_clusters=int(sample_params["n_clusters"]),
            resolution=sample_params["resolution"],
        )
        out = zarr.open_group(workdir / "labels.zarr", mode="w")
        codes_arr = out.create_array("cell_type_code", shape=(n_cells,), chunks=(rows,), dtype="i2")
        conf_arr = out.create_array("confidence", shape=(n_cells,), chunks=(rows,), dtype="f4")
        out.attrs["types"] = res.types
        # one graph for both columns: every chunk is read and assigned once
        da.store([res.codes.astype(np.int16), res.confidence], [codes_arr, conf_arr], lock=False)
        codes = np.asarray(codes_arr[:])
        type_of = np.array([int(name.split("_")[1]) for name in res.types] + [-1], dtype=np.int64)
        pred = type_of[np.where(codes >= 0, codes, len(res.types))]
        acc = float(accuracy_score(truth, pred))
        f1 = float(f1_score(truth, pred, labels=np.arange(N_PROGRAMS), average="macro"))
        rest = np.ones(n_cells, dtype=bool)
        rest[res.sample] = False
        acc_rest = float(np.mean(pred[rest] == truth[rest])) if rest.any() else float("nan")
        lap(
            "annotate: every chunk assigned on the workers + labels written",
            accuracy=round(acc, 4),
            macro_f1=round(f1, 4),
            accuracy_assigned_cells=round(acc_rest, 4),
            unknown_share=round(float(np.mean(pred < 0)), 5),
            types_called=int(np.unique(pred[pred >= 0]).size),
        )
        report["annotation"] = {"accuracy": acc, "macro_f1": f1, "accuracy_assigned": acc_rest}
        del truth, rest
        # ------------------------------------------------------------------ co-localization
        # coordinates and type codes stay in zarr: each tile task reads its own cells (codes are the categories)
        coloc = colocalization_tiled(root["obsm/spatial"], codes_arr, radius=args.radius)
        z = np.asarray(coloc.zscore, dtype=np.float64)
        diag = float(np.nanmean(np.diag(z)))
        off = float(np.nanmean(z[~np.eye(z.shape[0], dtype=bool)]))
        lap(
            "colocalization (tiled, annotated types)",
            n_tiles=int(coloc.params["n_tiles"]),
            mean_z_same_type=round(diag, 1),
            mean_z_other_types=round(off, 1),
        )
        del pred, codes
        # ------------------------------------------------------------------ write
        w_out = workdir / "W.zarr"
        if w_out.exists():
            shutil.rmtree(w_out)
        W.to_zarr(str(w_out))
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
                local = dask.compute(*blocks)
                ref = JointNMF(args.n_factors, seed=0, **kwargs)
                W_r = ref.fit_transform(list(local))
            diff = float(np.max(np.abs(W_c - W_r)) / W_r.max())
            same = float(np.mean(W_c.argmax(axis=1) == W_r.argmax(axis=1)))
            lap("check (cluster vs in memory)", cells=n, max_rel_diff_W=diff, same_dominant_factor=same)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    report["peak_rss_gib_all_stages"] = max(s["peak_rss_gib"]["all"] for s in stages.values())
    report["load_avg_end"] = os.getloadavg()
    shutil.rmtree(spill_dir, ignore_errors=True)
    print(json.dumps(report))


# ---------------------------------------------------------------------------------------------- one call
def generate_stores(
    workdir: Path, n_cells: int, *, n_genes: int, n_proteins: int, chunk: int, density: float, seed: int = 0
) -> None:
    """Write the planted data as two AnnData zarr stores, ``rna.zarr`` and ``protein.zarr``, a chunk at a time.

    The layout of :func:`smo.io.stream_to_zarr` (``X``, ``obs`` ids, ``obsm['spatial']``, ``var``), the same
    cells in the same order in both; the planted types go to ``WORKDIR/truth.npy``.
    """
    import pandas as pd
    import zarr
    from anndata.io import sparse_dataset, write_elem

    from spatialmultiomics._memory import PeakRSS
    from spatialmultiomics.io._stream import _append

    t0 = time.perf_counter()
    library = transcripts_for_density(n_genes, density)
    plain = {"shards": None}
    roots = {}
    for name in ("rna", "protein"):
        if (workdir / f"{name}.zarr").exists():
            shutil.rmtree(workdir / f"{name}.zarr")
        roots[name] = zarr.open_group(workdir / f"{name}.zarr", mode="w")
    truth = np.lib.format.open_memmap(workdir / "truth.npy", mode="w+", dtype=np.int8, shape=(n_cells,))
    chunks = planted_chunks(n_cells, n_genes=n_genes, n_proteins=n_proteins, chunk=chunk, library=library, seed=seed)
    start = 0
    with PeakRSS() as mem:
        for counts, prot, xy, cell_type in chunks:
            m = counts.shape[0]
            ids = np.array([f"c{i}" for i in range(start, start + m)])
            if start == 0:
                write_elem(roots["rna"], "X", counts, dataset_kwargs={"chunks": (1 << 21,), **plain})
                write_elem(roots["protein"], "X", prot, dataset_kwargs={"chunks": (chunk, n_proteins), **plain})
                for root in roots.values():
                    obs = pd.DataFrame(index=pd.Index(ids))
                    write_elem(root, "obs", obs, dataset_kwargs={"chunks": (chunk,), **plain})
                    write_elem(root, "obsm", {"spatial": xy}, dataset_kwargs={"chunks": (chunk, 2), **plain})
            else:
                sparse_dataset(roots["rna"]["X"]).append(counts)
                _append(roots["protein"]["X"], prot, start)
                for root in roots.values():
                    _append(root["obs/_index"], ids, start)
                    _append(root["obsm/spatial"], xy, start)
            truth[start : start + m] = cell_type
            start += m
        truth.flush()
        for name, root in roots.items():
            var = gene_names(n_genes) if name == "rna" else protein_names(n_proteins)
            write_elem(root, "var", pd.DataFrame(index=pd.Index(var)), dataset_kwargs=plain)
            for key in ("varm", "obsp", "varp", "layers"):
                write_elem(root, key, {}, dataset_kwargs=plain)
            write_elem(root, "uns", {}, dataset_kwargs=plain)
            root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        peak = mem.lap()
    print(
        json.dumps(
            {
                "stage": "generate AnnData stores",
                "n_cells": n_cells,
                "wall_s": round(time.perf_counter() - t0, 1),
                "peak_rss_gib": round(peak / 1024, 2),
                "load_avg": os.getloadavg(),
            }
        ),
        flush=True,
    )


def one_call(args: argparse.Namespace) -> None:
    """``smo.run_pipeline(rna.zarr, protein.zarr, backend='dask')`` on a LocalCluster: times, memory, accuracy."""
    import logging

    import pandas as pd
    from distributed import Client, LocalCluster

    import spatialmultiomics as smo

    workdir: Path = args.workdir
    log = logging.getLogger("spatialmultiomics")
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)
    log.propagate = False
    n_proteins = args.proteins
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    with (
        TreeRSS() as tree,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=f"{args.worker_memory}GiB",
            local_directory=str(workdir / "dask-worker-space"),
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        res = smo.run_pipeline(
            workdir / "rna.zarr",
            workdir / "protein.zarr",
            n_factors=args.n_factors,
            radius=args.radius,
            markers=planted_markers(args.genes, n_proteins),
            output_dir=workdir / "results",
            overwrite=True,
            backend="dask",
            scheduler=client,
        )
        peak = tree.lap()
    wall = time.perf_counter() - t0
    truth = np.load(workdir / "truth.npy")
    called = pd.read_csv(workdir / "results" / "shared_labels.csv", usecols=["cell_type"])["cell_type"].astype(str)
    pred = np.array([int(t.split("_")[1]) if t.startswith("type_") else -1 for t in called], dtype=np.int64)
    report = {
        "stage": "one call",
        "n_cells": res.n_cells,
        "wall_s_with_cluster_start": round(wall, 1),
        "timings_s": {k: round(v, 1) for k, v in res.timings.items()},
        "client_peak_rss_mib": {k: round(v) for k, v in res.peak_rss_mib.items()},
        "peak_rss_gib_all_processes": peak,
        "n_iter": res.params["preprocess"]["factorize"]["n_iter"],
        "accuracy_vs_planted": round(float(np.mean(pred == truth)), 5),
        "types_called": len(res.cell_types),
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
    }
    if args.compare_in_memory:  # the in-memory pipeline on the same stores read whole (small runs only)
        import anndata as ad

        from spatialmultiomics._memory import PeakRSS

        t0 = time.perf_counter()
        with PeakRSS() as mem:
            ref = smo.run_pipeline(
                ad.read_zarr(workdir / "rna.zarr"),
                ad.read_zarr(workdir / "protein.zarr"),
                n_factors=args.n_factors,
                radius=args.radius,
                markers=planted_markers(args.genes, n_proteins),
                output_dir=workdir / "results_in_memory",
                overwrite=True,
                figures=False,
            )
            report["in_memory_peak_rss_gib"] = round(mem.lap() / 1024, 2)
        report["in_memory_wall_s"] = round(time.perf_counter() - t0, 1)
        report["in_memory_timings_s"] = {k: round(v, 1) for k, v in ref.timings.items()}
        same = ref.shared_labels["cell_type"].astype(str).to_numpy() == called.to_numpy()
        report["same_type_as_in_memory"] = round(float(np.mean(same)), 5)
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--proteins", type=int, default=40)
    parser.add_argument("--density", type=float, default=0.1, help="share of non-zero genes of an average cell")
    parser.add_argument("--chunk", type=int, default=65_536, help="cells per generated chunk")
    parser.add_argument("--chunk-rows", type=int, default=131_072, help="rows per Dask chunk")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/smo_10m"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", type=float, default=6.0, help="GiB per worker")
    parser.add_argument("--n-factors", type=int, default=N_PROGRAMS)
    parser.add_argument("--n-top-genes", type=int, default=2000)
    parser.add_argument("--annotate-sample", type=int, default=50_000, help="cells clustered in memory")
    parser.add_argument("--radius", type=float, default=50.0)
    parser.add_argument("--percentile-every", type=int, default=10)
    parser.add_argument("--check-cells", type=int, default=200_000)
    parser.add_argument(
        "--compare-in-memory", action="store_true", help="one-call: also run the in-memory pipeline (small runs)"
    )
    parser.add_argument("--stage", choices=["all", "generate", "run", "stores", "one-call"], default="all")
    args = parser.parse_args()
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.stage == "generate":
        generate(
            workdir, args.cells, n_genes=args.genes, n_proteins=args.proteins, chunk=args.chunk, density=args.density
        )
        return
    if args.stage == "run":
        run(args)
        return
    if args.stage == "stores":
        generate_stores(
            workdir, args.cells, n_genes=args.genes, n_proteins=args.proteins, chunk=args.chunk, density=args.density
        )
        return
    if args.stage == "one-call":  # the AnnData stores (in a child process when missing), then run_pipeline
        _made_once(args, "stores", "stores")
        one_call(args)
        return
    _made_once(args, "generate", "generated")
    run(args)


def _made_once(args: argparse.Namespace, stage: str, prefix: str) -> None:
    """Run ``--stage stage`` in a child process unless a stamp ``prefix_<size>`` says this data is already there
    (a stamp for other sizes is removed first)."""
    workdir: Path = args.workdir
    stamp = workdir / f"{prefix}_{args.cells}_{args.genes}_{args.proteins}_{args.density:g}"
    if stamp.exists():
        return
    for p in workdir.glob(f"{prefix}_*"):
        p.unlink()
    cmd = [sys.executable, __file__, "--stage", stage, "--workdir", str(workdir), "--cells", str(args.cells)]
    cmd += ["--genes", str(args.genes), "--proteins", str(args.proteins), "--chunk", str(args.chunk)]
    cmd += ["--density", str(args.density)]
    subprocess.run(cmd, check=True)
    stamp.touch()


if __name__ == "__main__":
    main()
