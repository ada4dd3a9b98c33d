"""``run_pipeline`` on zarr stores with ``backend='dask'``: the whole run out of core (ten million cells).

When :func:`~spatialmultiomics.run_pipeline` gets zarr-backed AnnData stores (what ``spatialmultiomics convert`` /
:func:`smo.io.stream_to_zarr` write: a ``*.zarr`` folder with ``X``, the cell ids in ``obs`` and
``obsm['spatial']``) and ``backend='dask'``, it runs :func:`run_chunked_pipeline` instead of reading the inputs
into memory. The stages are the recipe of ``docs/scale.md`` ("Ten million cells out of core"), with the in-memory
pipeline's parameters:

1. **open**: ``X`` of every store as a Dask array of row chunks (:func:`anndata.experimental.read_elem_lazy`; CSR
   chunks stay CSR), read by the workers. The RNA and protein stores must hold the same cells in the same order
   (checked id by id, a block of ids at a time); this route pairs rows, it does not align.
2. **preprocess**: RNA library size to 1e4 + log1p inside every chunk's task (:func:`smo.pp.normalize_chunk`), the
   highly variable genes from one pass of chunked column statistics
   (:func:`smo.pp.highly_variable_genes_chunked`, ``n_top_genes``) and kept lazily
   (:func:`smo.pp.select_columns_chunked`); proteins: the transform (``'auto'`` rule) and the 1st / 99th
   percentiles of every channel from a row sample (every ``ceil(n / 1,000,000)``-th row: all rows up to a million
   cells, so the in-memory values exactly; :func:`smo.pp.fit_intensity_scaling`), applied in every chunk's task
   (:func:`smo.pp.apply_intensity_scaling`); the non-marker channels (DNA, background) left out of the factors.
3. **annotate**: :func:`smo.annotate.annotate_chunked` (the in-memory ``method='cluster'``: a seeded sample of
   50,000 cells clustered and named in memory, every other cell assigned in its chunk's task); type codes and
   confidences written to ``cells.zarr``. (Before the factorization, which it does not use: ``n_factors='auto'``
   chooses k on this sample.)
4. **factorize**: ``JointNMF(n_factors, backend='dask', seed=seed)``, k given or chosen by
   :func:`smo.factorize.select_n_factors` on the annotation's sample (subsamples of <= 1,500 of its cells, as in
   memory); the cell loadings and the dominant factor are written to ``cells.zarr`` by the workers.
5. **spatial**: co-localization on the radius graph from tiles with a halo
   (:func:`smo.spatial.join_counts_tiled`), coordinates and type codes read from zarr inside the tasks;
   ``'Unknown'`` cells stay in the graph and the null, their pairs are not reported (as in memory).
6. **write**: the result folder, atomically (see :func:`run_chunked_pipeline` for the files).

The client holds O(features x factors) numbers, the protein row sample, the annotation sample and one block of
rows at a time while writing; each worker holds its row chunks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger, progress_bar
from spatialmultiomics._memory import PeakRSS

if TYPE_CHECKING:
    from spatialmultiomics._engine import EngineSpec

__all__ = ["ChunkedPipelineResult", "is_zarr_store", "run_chunked_pipeline"]

#: Rows of a Dask chunk (the benchmark's 131,072: ~100 MB of CSR at 2,000 genes and 10 % non-zero).
CHUNK_ROWS = 131_072
#: Fewest rows a chunk gets when a small store is split for the workers.
MIN_CHUNK_ROWS = 8192
#: Rows the protein transform and percentiles are decided on (every ceil(n / this)-th row).
SCALE_SAMPLE_ROWS = 1_000_000
#: Cells of the systematic sample the report's maps are drawn from.
MAP_CELLS = 200_000
#: Rows read at a time by the client while writing the per-cell files.
WRITE_ROWS = 1 << 20
#: Files this route writes (and the in-memory ones it does not, with why): see docs/scale.md.
FILES = (
    "shared_labels.csv",
    "co_localization.csv",
    "W_transcript.npy",
    "W_protein.npy",
    "H_shared.npy",
    "factor_annotation.csv",
    "cells.zarr",
    "run_summary.json",
    "report.html",
    "figures",
)
_LOADING_FILES = {Keys.RNA: "W_transcript", Keys.PROTEIN: "W_protein"}


def is_zarr_store(path: Any) -> bool:
    """True when ``path`` is a folder holding a zarr group (``zarr.json`` for zarr v3, ``.zgroup`` for v2)."""
    if not isinstance(path, str | Path):
        return False
    p = Path(path)
    return p.is_dir() and ((p / "zarr.json").is_file() or (p / ".zgroup").is_file())


def uses_chunked_route(
    transcript_path: Any,
    protein_path: Any,
    *,
    backend: str,
    output_dir: Any,
    extra_modalities: Any,
    pixel_size_um: Any,
    align: str,
    annotation_method: str,
    spillover: bool,
) -> bool:
    """Whether ``run_pipeline`` takes the out-of-core route: a zarr store among its inputs (and ``backend='dask'``).

    Raises
    ------
    InputError
        For a zarr store with another backend, a zarr store beside an input of another kind, and the options this
        route does not offer (each message names the option and what to do instead).
    """
    given = {"transcript_path": transcript_path, "protein_path": protein_path}
    zarr_args = [name for name, p in given.items() if is_zarr_store(p)]
    if not zarr_args:
        return False
    others = [
        f"{name}={str(p)!r}" if isinstance(p, str | Path) else f"{name} (an {type(p).__name__})"
        for name, p in given.items()
        if p is not None and name not in zarr_args
    ]
    first = f"{zarr_args[0]}={str(given[zarr_args[0]])!r}"
    problems = []
    if backend != "dask":
        problems.append(
            f"backend={backend!r}: zarr stores are read out of core with backend='dask' (--backend dask); for an "
            "in-memory run read the store with anndata.read_zarr and pass the AnnData"
        )
    if others:
        problems.append(
            f"{others[0]} is not a zarr store: with a zarr store every input must be one (write it with "
            "smo.io.stream_to_zarr or `spatialmultiomics convert`)"
        )
    if extra_modalities:
        problems.append("extra_modalities (--extra) is not available out of core; give RNA and protein stores only")
    if output_dir is None:
        problems.append("output_dir is required: the per-cell results are written there, not held in memory")
    if pixel_size_um is not None and not (isinstance(pixel_size_um, int | float) and float(pixel_size_um) == 1.0):
        problems.append(
            f"pixel_size_um={pixel_size_um!r}: the store's obsm['spatial'] must already be in µm (stream_to_zarr's "
            "pixel_size_um converts while writing)"
        )
    if align not in ("auto", "ids"):
        problems.append(
            f"align={align!r}: the stores must hold the same cells in the same order (align 'auto' or 'ids')"
        )
    if annotation_method != "cluster":
        problems.append(f"annotation_method={annotation_method!r}: out of core the annotation is 'cluster'")
    if spillover:
        problems.append("spillover=True (--spillover) needs every cell's neighbours in memory; leave it off")
    if problems:
        msg = f"{first}: " + "; ".join(problems) + "."
        raise InputError(msg)
    return True


@dataclass
class ChunkedPipelineResult:
    """What an out-of-core pipeline run produced: small results in memory, per-cell results in ``output_dir``.

    Attributes
    ----------
    cell_types
        The cell types called, in category order (``'Unknown'`` last when some cells have no type).
    type_counts
        Cells per type (a Series indexed by type name, largest first).
    co_localization
        As :attr:`PipelineResult.co_localization <spatialmultiomics.PipelineResult>` (same columns).
    W_transcript, W_protein
        Feature loadings (n_genes, k) and (n_proteins, k); None for a modality not given.
    feature_loadings
        Modality name -> (n_features, k) loadings.
    factor_annotation
        One row per factor, as :attr:`PipelineResult.factor_annotation <spatialmultiomics.PipelineResult>`
        (``factor_annotation.csv``): the type each factor's loadings name, its score, the seed's rule's name,
        the cells it dominates and its top genes / proteins.
    n_cells, n_factors
        Cells and factors.
    output_dir
        The result folder: ``shared_labels.csv``, ``H_shared.npy`` (k, n_cells; ``numpy.load(..., mmap_mode='r')``)
        and ``cells.zarr`` hold the per-cell results.
    timings, peak_rss_mib
        Seconds and the client's peak resident memory (MiB) per stage.
    params
        Everything written to ``run_summary.json``.
    """

    cell_types: list[str]
    type_counts: pd.Series
    co_localization: pd.DataFrame
    W_transcript: np.ndarray | None
    W_protein: np.ndarray | None
    feature_loadings: dict[str, np.ndarray]
    factor_annotation: pd.DataFrame
    n_cells: int
    n_factors: int
    output_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def shared_labels(self) -> pd.DataFrame:
        """``shared_labels.csv`` read back (one row per cell: at ten million cells, ~1 GiB in memory)."""
        return pd.read_csv(self.output_dir / "shared_labels.csv")


@dataclass
class _Store:
    """One modality's zarr store, opened lazily."""

    name: str
    path: Path
    X: Any  # Dask array, rows chunked
    var_names: pd.Index
    ids: Any  # zarr array of cell ids
    coords: Any  # zarr array (n, 2) or None
    platform: str | None
    fov: np.ndarray | None = None  # obs['fov'] when the store has it (graphs never cross it), in memory


def _open_store(path: Path, name: str, argname: str, rows: int) -> _Store:
    """Open ``path`` (an AnnData zarr store) lazily; InputError naming the path for anything missing."""
    import warnings

    import zarr
    from anndata.experimental import read_elem_lazy
    from anndata.io import read_elem

    try:
        root = zarr.open_group(path, mode="r")
    except Exception as err:  # noqa: BLE001 - any unreadable store is one line
        msg = f"{argname}={str(path)!r}: not a readable zarr store ({type(err).__name__})."
        raise InputError(msg) from None
    missing = [key for key in ("X", "obs", "var") if key not in root]
    if missing:
        msg = (
            f"{argname}={str(path)!r}: not an AnnData zarr store (missing {missing}); write one with "
            "smo.io.stream_to_zarr or `spatialmultiomics convert`."
        )
        raise InputError(msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # anndata's experimental API
        X = read_elem_lazy(root["X"], chunks=(rows, -1))
        var_names = pd.Index(read_elem(root["var"]).index.astype(str))
    if X.ndim != 2 or X.shape[1] != len(var_names):
        msg = f"{argname}={str(path)!r}: X has shape {X.shape} but var names {len(var_names)} features."
        raise InputError(msg)
    if X.shape[0] == 0:
        msg = f"{argname}={str(path)!r}: the store holds no cell."
        raise InputError(msg)
    obs = root["obs"]
    ids = obs[str(obs.attrs.get("_index", "_index"))]
    coords = None
    if "obsm" in root and "spatial" in root["obsm"]:
        coords = root["obsm"]["spatial"]
        if coords.ndim != 2 or coords.shape[0] != X.shape[0] or coords.shape[1] < 2:
            msg = f"{argname}={str(path)!r}: obsm['spatial'] has shape {coords.shape}; expected ({X.shape[0]}, 2) µm."
            raise InputError(msg)
    platform = None
    if "uns" in root and "provenance" in root["uns"]:
        prov = read_elem(root["uns"]["provenance"])
        platform = str(prov.get("platform")) if isinstance(prov, Mapping) and prov.get("platform") else None
    fov = None
    if Keys.FOV in obs:  # a few bytes a cell: read whole, as the tiles need it in the client
        fov = np.asarray(pd.Series(read_elem(obs[Keys.FOV])).astype(str).to_numpy(), dtype=object)
        if fov.shape != (X.shape[0],):
            msg = f"{argname}={str(path)!r}: obs['{Keys.FOV}'] has {fov.shape[0]} values for {X.shape[0]} cells."
            raise InputError(msg)
    return _Store(name, Path(path), X, var_names, ids, coords, platform, fov)


@contextmanager
def _naming(path: Path, argname: str) -> Iterator[None]:
    """Prefix an input error raised while a store's values are read (by the workers too) with the store."""
    try:
        yield
    except InputError as err:
        msg = f"{argname}={str(path)!r}: {err}"
        raise InputError(msg) from None


def _read_ids(ids: Any, start: int, stop: int) -> np.ndarray:
    """Cell ids ``start:stop`` as an object array of str (zarr v3 gives numpy's StringDType)."""
    return np.array([str(v) for v in np.asarray(ids[start:stop]).tolist()], dtype=object)


def _check_same_cells(a: _Store, b: _Store, names: tuple[str, str]) -> None:
    """The two stores hold the same cell ids in the same order (compared a block of ids at a time)."""
    n_a, n_b = int(a.X.shape[0]), int(b.X.shape[0])
    why = None
    if n_a != n_b:
        why = f"{n_a:,} vs {n_b:,} cells"
    else:
        for start in range(0, n_a, WRITE_ROWS):
            ia = _read_ids(a.ids, start, start + WRITE_ROWS)
            ib = _read_ids(b.ids, start, start + WRITE_ROWS)
            bad = np.flatnonzero(ia != ib)
            if bad.size:
                i = int(bad[0])
                why = f"row {start + i}: cell {ia[i]!r} vs {ib[i]!r}"
                break
    if why is not None:
        msg = (
            f"{names[0]}={str(a.path)!r} and {names[1]}={str(b.path)!r} must hold the same cells in the same order "
            f"(the out-of-core route pairs rows, it does not align); {why}. Write both stores from one cell table, "
            "or align in memory with backend='numpy'."
        )
        raise InputError(msg)


def _unknown_last(codes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Type codes (-1 = Unknown) to category codes: ``lut[code + 1]``."""
    return lut[np.asarray(codes, dtype=np.int64) + 1]


def _dominant(W: np.ndarray) -> np.ndarray:
    """Dominant factor of each row (-1 for a row of zeros), as the in-memory annotation's ``nmf_factor``."""
    W = np.asarray(W)
    out = np.argmax(W, axis=1).astype(np.int16)
    out[~(W > 0).any(axis=1)] = -1
    return out


def _chunk_rows(n: int, engine: Any, rows: int) -> int:
    """Rows a chunk: ``rows``, or fewer for a store too small to give two chunks to every worker thread."""
    try:
        threads = max(1, int(engine.describe().get("threads", 1)))
    except Exception:  # noqa: BLE001 - the default chunking is always valid
        threads = 1
    return int(min(rows, max(MIN_CHUNK_ROWS, math.ceil(n / (2 * threads)))))


def _worker_memory_mib(client: Any) -> float | None:
    """The workers' resident memory now (MiB, summed), from the scheduler's heartbeat metrics; None without one."""
    if client is None:
        return None
    try:
        workers = client.scheduler_info().get("workers", {})
        return float(sum(w.get("metrics", {}).get("memory", 0) for w in workers.values()) / 2**20)
    except Exception:  # noqa: BLE001 - a log line never fails the run
        return None


def _sampling(blocks: Iterator[pd.DataFrame], every: int, kept: list[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Pass ``blocks`` (consecutive rows of one table) through, keeping rows 0, every, 2 * every, ... in ``kept``."""
    start = 0
    for block in blocks:
        kept.append(block.iloc[(-start) % every :: every])
        start += len(block)
        yield block


def _report_sample(
    rows: pd.DataFrame,
    index: np.ndarray,
    w_arr: Any,
    categories: list[str],
    var_names: Mapping[str, pd.Index],
    loadings: Mapping[str, np.ndarray],
    factors: pd.DataFrame,
    coloc: Any,
    graph: dict[str, Any],
    expected: str,
) -> Any:
    """The MuData of the report's sampled cells (``rows`` of ``shared_labels.csv`` at row numbers ``index``): the
    slots the standard figures read, the factor table and the co-localization of all cells."""
    import anndata as ad

    from spatialmultiomics._mudata import make_mudata

    obs = pd.DataFrame(index=pd.Index(rows["cell_id"].astype(str).to_numpy(), name=None))
    mods = {
        m: ad.AnnData(obs=obs.copy(), var=pd.DataFrame(index=pd.Index(names, dtype=str)))
        for m, names in var_names.items()
    }
    for m, L in loadings.items():
        mods[m].varm[Keys.NMF_LOADINGS] = np.asarray(L, dtype=np.float32)
    mdata = make_mudata(mods)
    mdata.obs[Keys.CELL_TYPE] = pd.Categorical(rows["cell_type"].astype(str).to_numpy(), categories=categories)
    mdata.obs[Keys.CELL_TYPE_CONFIDENCE] = rows["confidence"].to_numpy(dtype=np.float32)
    mdata.obs[Keys.FACTOR] = rows["nmf_factor"].to_numpy(dtype=np.int64)
    mdata.obsm[Keys.SPATIAL] = rows[["x", "y"]].to_numpy(dtype=np.float64)
    mdata.obsm[Keys.NMF] = np.asarray(w_arr.get_orthogonal_selection((index, slice(None))), dtype=np.float32)
    record: dict[str, Any] = {c: factors[c].tolist() for c in factors.columns}
    record["params"] = {"method": "cluster", "route": "out of core: factor_table from the loadings"}
    mdata.uns[Keys.NMF_UNS] = {"annotation": record, "modalities": list(loadings)}
    nhood = dict(coloc.to_uns())
    nhood["params"] = {**dict(nhood.get("params") or {}), "expected": expected}
    mdata.uns[Keys.nhood(Keys.CELL_TYPE)] = nhood
    mdata.uns[Keys.GRAPH_UNS] = {"params": graph}
    return mdata


def _label_blocks(ref: _Store, coords: Any, cells: Any, names: np.ndarray, n: int) -> Iterator[pd.DataFrame]:
    """``shared_labels.csv``, a block of rows at a time: cell_id, x, y, cell_type, confidence, nmf_factor."""
    for start in range(0, n, WRITE_ROWS):
        stop = min(n, start + WRITE_ROWS)
        xy = np.asarray(coords[start:stop], dtype=np.float64)
        codes = np.asarray(cells["cell_type_code"][start:stop], dtype=np.int64)
        yield pd.DataFrame(
            {
                "cell_id": _read_ids(ref.ids, start, stop),
                "x": xy[:, 0],
                "y": xy[:, 1],
                "cell_type": names[np.where(codes >= 0, codes, len(names) - 1)],
                "confidence": np.asarray(cells["confidence"][start:stop], dtype=np.float64),
                "nmf_factor": np.asarray(cells["nmf_factor"][start:stop], dtype=np.int64),
            }
        )


def run_chunked_pipeline(
    transcript_path: Path | None,
    protein_path: Path | None,
    *,
    output_dir: Path,
    engine_spec: EngineSpec,
    n_factors: int | str,
    radius: float,
    markers: Any,
    markers_given: str,
    seed: int,
    platform_tx: str | None,
    platform_prot: str | None,
    expected: str,
    solver: str,
    modality_weights: Any,
    max_iter: int,
    n_top_genes: int,
    rna_normalization: str,
    protein_transform: str,
    exclude_channels: Sequence[str] | None,
    overwrite: bool,
    progress: bool,
    chunk_rows: int | None = None,
    figures: bool = True,
) -> ChunkedPipelineResult:
    """The pipeline on zarr stores, out of core (see the module notes); called by ``run_pipeline``.

    The arguments are ``run_pipeline``'s, validated there (``platform_*`` canonical, ``exclude_channels`` resolved
    from ``'default'``). Writes to ``output_dir`` (atomically: a temporary folder beside it, moved into place at
    the end; the workers write ``cells.zarr`` there, so on a cluster it must be on storage they share):

    - ``shared_labels.csv``: cell_id, x, y, cell_type, confidence, nmf_factor (as in memory; written a block of
      rows at a time),
    - ``co_localization.csv``: the in-memory columns and rows,
    - ``W_transcript.npy`` (genes x k, zero rows for the genes not factorized), ``W_protein.npy``,
    - ``H_shared.npy``: (k, n_cells) float32, written a block of cells at a time (open it with
      ``numpy.load(path, mmap_mode='r')``),
    - ``factor_annotation.csv``: one row per factor, as in memory (:func:`smo.annotate.factor_table`: the factors
      named from their loadings, their mass and the cells they dominate, which are all it needs of the cells),
    - ``cells.zarr``: per cell ``W`` (n_cells, k), ``nmf_factor``, ``cell_type_code`` (index into the ``types``
      attribute, -1 = Unknown) and ``confidence``, chunked like the input,
    - ``run_summary.json``: parameters, versions, engine, the preprocessing decisions, the factorization's
      iterations and error, cells per type, time and peak memory per stage,
    - ``report.html`` and ``figures/`` (with ``figures=True``): the in-memory report's look and standard figures
      (cell types in space, factor loadings, co-localization, factor maps), the maps drawn for a systematic sample
      of at most 200,000 cells (every s-th row), every table for all cells.

    Not written (they need every cell in memory, or are redundant at this size): ``result.h5mu`` (the inputs are
    the zarr stores, the per-cell results ``cells.zarr``), ``nmf_factors.csv`` (the loadings of ten million cells
    as text, ~2 GB: ``H_shared.npy`` / ``cells.zarr`` hold them), ``niche_composition.csv``.
    """
    import dask.array as da
    import zarr

    from spatialmultiomics import pp
    from spatialmultiomics._engine import start_engine
    from spatialmultiomics._inputs import _versions
    from spatialmultiomics.annotate import annotate_chunked, factor_table
    from spatialmultiomics.annotate._score import UNKNOWN
    from spatialmultiomics.factorize import JointNMF, select_n_factors
    from spatialmultiomics.factorize._api import _weights
    from spatialmultiomics.io._csv import write_csv_parts
    from spatialmultiomics.io._write import atomic_output_dir
    from spatialmultiomics.pp._channels import check_exclude_channels
    from spatialmultiomics.report._chunked import write_chunked_report
    from spatialmultiomics.spatial._dask import join_counts_tiled
    from spatialmultiomics.spatial._nhood import _long_table

    rows = int(chunk_rows or CHUNK_ROWS)
    requested_k = n_factors
    stages = ["open", "preprocess", "annotate", "factorize", "spatial", "write", "report"]
    timings: dict[str, float] = {}
    peak_rss: dict[str, float] = {}
    engine = None
    started = time.time()
    with PeakRSS() as monitor, progress_bar(len(stages), desc="spatialmultiomics", enabled=progress) as bar:

        def done(stage: str, t0: float, **extra: Any) -> float:
            timings[stage] = time.perf_counter() - t0
            peak_rss[stage] = monitor.lap()
            workers = _worker_memory_mib(engine.client if engine is not None else None)
            logger.info(
                "%-10s %.3f s, peak RSS %.0f MiB (client)%s%s",
                stage,
                timings[stage],
                peak_rss[stage],
                f", workers {workers:.0f} MiB now" if workers is not None else "",
                "".join(f", {k} {v}" for k, v in extra.items()),
            )
            if bar is not None:
                bar.update(1)
            return time.perf_counter()

        with atomic_output_dir(output_dir, overwrite=overwrite, started=started) as tmp:
            engine = start_engine(engine_spec)
            try:
                logger.info(
                    "out of core: every stage reads row chunks of %s on Dask; the client holds samples and "
                    "k x features sums",
                    " and ".join(str(p) for p in (transcript_path, protein_path) if p is not None),
                )
                t = time.perf_counter()
                # ------------------------------------------------------------------ open
                stores: dict[str, _Store] = {}
                if transcript_path is not None:
                    stores[Keys.RNA] = _open_store(Path(transcript_path), Keys.RNA, "transcript_path", rows)
                if protein_path is not None:
                    stores[Keys.PROTEIN] = _open_store(Path(protein_path), Keys.PROTEIN, "protein_path", rows)
                n = int(next(iter(stores.values())).X.shape[0])
                fit_rows = _chunk_rows(n, engine, rows)
                if fit_rows != rows:  # a small store: enough chunks for every worker thread
                    rows = fit_rows
                    for name, store in stores.items():
                        stores[name] = _open_store(store.path, name, f"{name} store", rows)
                if len(stores) == 2:
                    _check_same_cells(stores[Keys.RNA], stores[Keys.PROTEIN], ("transcript_path", "protein_path"))
                ref = next(iter(stores.values()))
                with_xy = [s for s in stores.values() if s.coords is not None]
                if not with_xy:
                    paths = " / ".join(str(s.path) for s in stores.values())
                    msg = (
                        f"{paths}: no obsm['spatial'] positions; write the store with positions "
                        "(smo.io.stream_to_zarr(..., coordinates='cells.csv.gz'))."
                    )
                    raise InputError(msg)
                coords = with_xy[0].coords
                fov = next((s.fov for s in stores.values() if s.fov is not None), None)
                n = int(ref.X.shape[0])
                t = done("open", t, cells=f"{n:,}", chunks=len(ref.X.chunks[0]))
                # ------------------------------------------------------------------ preprocess
                ann_blocks: dict[str, Any] = {}
                nmf_blocks: dict[str, Any] = {}
                used: dict[str, np.ndarray] = {}
                record: dict[str, Any] = {}
                if Keys.RNA in stores:
                    X = stores[Keys.RNA].X
                    norm = X.map_blocks(
                        pp.normalize_chunk, method=rna_normalization, target_sum=1e4, dtype=np.float32, meta=X._meta
                    )
                    with _naming(stores[Keys.RNA].path, "transcript_path"):  # the first pass reads every chunk
                        hvg = pp.highly_variable_genes_chunked(norm, n_top_genes=n_top_genes)
                    mask = np.asarray(hvg.highly_variable, dtype=bool)
                    ann_blocks[Keys.RNA], used[Keys.RNA] = norm, mask
                    nmf_blocks[Keys.RNA] = norm if mask.all() else pp.select_columns_chunked(norm, keep=mask)
                    record[Keys.RNA] = {"n_genes": int(mask.size), "highly_variable": int(mask.sum())}
                    logger.info("rna: normalised per chunk, %d of %d genes highly variable", mask.sum(), mask.size)
                if Keys.PROTEIN in stores:
                    store = stores[Keys.PROTEIN]
                    X = store.X
                    drop = pp.non_marker_channels(store.var_names, patterns=check_exclude_channels(exclude_channels))
                    if drop.all():
                        msg = (
                            f"modality 'protein': every channel ({list(store.var_names[:10])}) matches "
                            "exclude_channels (DNA / nuclear or background channels); pass exclude_channels=None to "
                            "factorize them anyway."
                        )
                        raise InputError(msg)
                    step = max(1, math.ceil(n / SCALE_SAMPLE_ROWS))
                    sample = X[::step].compute()
                    with _naming(store.path, "protein_path"):
                        fit = pp.fit_intensity_scaling(
                            sample,
                            platform=store.platform
                            if platform_prot in (None, "generic") and store.platform
                            else platform_prot or "generic",
                            transform=protein_transform,
                        )
                    del sample
                    scaled = X.map_blocks(
                        pp.apply_intensity_scaling,
                        **fit.apply_kwargs(),
                        dtype=np.float32,
                        meta=np.empty((0, 0), dtype=np.float32),
                    )
                    ann_blocks[Keys.PROTEIN], used[Keys.PROTEIN] = scaled, ~drop
                    nmf_blocks[Keys.PROTEIN] = (
                        scaled if not drop.any() else pp.select_columns_chunked(scaled, keep=~drop)
                    )
                    record[Keys.PROTEIN] = {
                        "transform": fit.transform,
                        "reason": fit.reason,
                        "rows_sampled": fit.n_rows,
                        "every_nth_row": step,
                        "excluded_channels": [str(v) for v in store.var_names[drop]],
                    }
                    logger.info(
                        "protein: %s; transform and percentiles from %s rows (%s), %d of %d channels factorized",
                        fit.reason,
                        f"{fit.n_rows:,}",
                        "all" if step == 1 else f"every {step}th",
                        int((~drop).sum()),
                        drop.size,
                    )
                names = list(stores)
                n_features = int(sum(int(m.sum()) for m in used.values()))
                if n_factors != "auto" and n_factors > min(n, n_features):
                    msg = (
                        f"n_factors={n_factors} (--n-factors) is more factors than the data allow: {n} cells and "
                        f"{n_features} features are factorized; use n_factors <= {min(n, n_features)}."
                    )
                    raise InputError(msg)
                t = done("preprocess", t)
                # ------------------------------------------------------------------ annotate
                cells = zarr.open_group(tmp / "cells.zarr", mode="w")
                res = annotate_chunked(
                    ann_blocks,
                    var_names={m: list(stores[m].var_names) for m in names},
                    markers=markers,
                    highly_variable=used,
                    seed=seed,
                )
                codes_arr = cells.create_array("cell_type_code", shape=(n,), chunks=(rows,), dtype="i2")
                conf_arr = cells.create_array("confidence", shape=(n,), chunks=(rows,), dtype="f4")
                da.store([res.codes.astype(np.int16), res.confidence], [codes_arr, conf_arr], lock=False)
                counts = np.zeros(len(res.types) + 1, dtype=np.int64)  # the types, then Unknown
                for start in range(0, n, WRITE_ROWS):
                    c = np.asarray(codes_arr[start : start + WRITE_ROWS], dtype=np.int64)
                    counts += np.bincount(np.where(c >= 0, c, len(res.types)), minlength=counts.size)
                if counts[:-1].sum() == 0:
                    msg = (
                        f"annotation named no cell type: all {n:,} cells are {UNKNOWN!r}; the marker reference does "
                        f"not fit the panel ({', '.join(f'{m}: {len(s.var_names)} features' for m, s in stores.items())}"
                        "). Give markers that the panel measures (--markers FILE, see docs/markers.md)."
                    )
                    raise InputError(msg)
                # categories as in memory: the called types in the reference's order, then Unknown
                present = [i for i in range(len(res.types)) if counts[i] > 0]
                categories = [res.types[i] for i in present] + ([UNKNOWN] if counts[-1] > 0 else [])
                lut = np.full(len(res.types) + 1, -1, dtype=np.int64)
                lut[0] = len(present)  # code -1 (Unknown) -> last category
                lut[np.asarray(present, dtype=np.int64) + 1] = np.arange(len(present))
                type_counts = pd.Series(
                    [int(counts[i]) for i in present] + ([int(counts[-1])] if counts[-1] > 0 else []),
                    index=categories,
                    name="n_cells",
                ).sort_values(ascending=False, kind="stable")
                cells.attrs["types"] = list(res.types)
                t = done("annotate", t, types=len(present), sampled=f"{res.sample.size:,}")
                # ------------------------------------------------------------------ factorize
                selection = None
                if n_factors == "auto":  # k from the stability of factors over subsamples of the annotation sample
                    selection = select_n_factors(
                        res.sample_mdata, solver=solver, modality_weights=modality_weights, seed=seed, inplace=False
                    )
                    n_factors = int(selection.k)
                    logger.info("n_factors='auto': %d factors (%s)", n_factors, selection.reason)
                w_arr = cells.create_array("W", shape=(n, n_factors), chunks=(rows, n_factors), dtype="f4")
                dom_arr = cells.create_array("nmf_factor", shape=(n,), chunks=(rows,), dtype="i2")
                model = JointNMF(
                    n_factors,
                    solver=solver,
                    modality_weights=_weights(modality_weights, names),
                    max_iter=max_iter,
                    seed=seed,
                    backend="dask",
                )
                W = model.fit_transform([nmf_blocks[m] for m in names])
                W32 = W.astype(np.float32)
                dom = W32.map_blocks(_dominant, drop_axis=1, dtype=np.int16)
                # one pass: the loadings and dominant factors stored, and what the factor names need of the cells
                # (each factor's mass and the cells it dominates)
                _, mass, by_factor = da.compute(
                    da.store([W32, dom], [w_arr, dom_arr], lock=False, compute=False),
                    W32.sum(axis=0, dtype=np.float64),
                    da.bincount(dom.astype(np.int64) + 1, minlength=n_factors + 1),
                )
                del W, W32, dom
                loadings: dict[str, np.ndarray] = {}
                for m, H in zip(names, model.components_, strict=True):
                    full = np.zeros((used[m].size, n_factors), dtype=np.float32)
                    full[used[m]] = np.asarray(H, dtype=np.float32).T
                    loadings[m] = full
                # the factors named as in memory: from their loadings, their mass and the cells they dominate
                factors = factor_table(
                    loadings,
                    {m: list(stores[m].var_names) for m in names},
                    mass,
                    by_factor[1:],
                    markers,
                    method="cluster",
                )
                rel_err = float(model.loss_curve_[-1]) if len(model.loss_curve_) else float("nan")
                record["factorize"] = {"n_iter": int(model.n_iter_), "relative_error": rel_err}
                if selection is not None:
                    record["factorize"]["k_selection"] = {
                        "k": int(selection.k),
                        "reason": str(selection.reason),
                        "k_grid": [int(v) for v in selection.k_grid],
                        "stability": [round(float(v), 4) for v in selection.stability],
                        "error": [round(float(v), 5) for v in selection.error],
                        "cells": f"subsamples of the {res.sample.size:,} annotated cells",
                    }
                t = done("factorize", t, iterations=int(model.n_iter_))
                # ------------------------------------------------------------------ spatial
                lazy_codes = da.from_zarr(codes_arr).map_blocks(_unknown_last, lut, dtype=np.int64)
                tiled = join_counts_tiled(coords, lazy_codes, n_types=len(categories), radius=radius, fov=fov)
                keep = np.flatnonzero([c != UNKNOWN for c in categories])
                kept = [categories[i] for i in keep]
                coloc = tiled.colocalization(categories, expected=expected, keep=keep)
                if coloc.degenerate.any():
                    few = [c for c, d in zip(coloc.categories, coloc.degenerate, strict=True) if d]
                    logger.warning("colocalization: types with fewer than 2 cells get NaN statistics: %s", few)
                co_table = _long_table(coloc.to_uns(), kept)
                t = done("spatial", t, tiles=tiled.n_tiles)
                # ------------------------------------------------------------------ write
                label_names = np.array([*res.types, UNKNOWN], dtype=object)
                map_every = max(1, math.ceil(n / MAP_CELLS))
                sampled: list[pd.DataFrame] = []  # every map_every-th row, for the report's maps
                write_csv_parts(
                    _sampling(_label_blocks(ref, coords, cells, label_names, n), map_every, sampled),
                    tmp / "shared_labels.csv",
                )
                co_table.to_csv(tmp / "co_localization.csv", index=False)
                factors.to_csv(tmp / "factor_annotation.csv", index=False)
                for m, loading in loadings.items():
                    np.save(tmp / f"{_LOADING_FILES[m]}.npy", loading)
                H = np.lib.format.open_memmap(tmp / "H_shared.npy", mode="w+", dtype=np.float32, shape=(n_factors, n))
                for start in range(0, n, WRITE_ROWS):
                    H[:, start : start + WRITE_ROWS] = np.asarray(w_arr[start : start + WRITE_ROWS]).T
                H.flush()
                del H
                params = {
                    "route": "out of core (backend='dask' on zarr stores)",
                    "inputs": {m: str(s.path) for m, s in stores.items()},
                    "n_cells": n,
                    "n_factors": n_factors,
                    "n_factors_requested": requested_k,
                    "radius_um": radius,
                    "seed": seed,
                    "platform_tx": str(platform_tx),
                    "platform_prot": str(platform_prot),
                    "annotation_method": "cluster",
                    "expected": expected,
                    "solver": solver,
                    "max_iter": max_iter,
                    "n_top_genes": n_top_genes,
                    "rna_normalization": rna_normalization,
                    "target_sum": 1e4,
                    "protein_transform": protein_transform,
                    "exclude_channels": "none" if exclude_channels is None else [str(c) for c in exclude_channels],
                    "markers": markers_given,
                    "chunk_rows": rows,
                    "preprocess": record,
                    "annotation": {
                        "sampled_cells": int(res.sample.size),
                        "types_used": list(res.types),
                        "n_clusters": int(
                            res.params["annotation"]["params"].get("clustering", {}).get("n_clusters", 0)
                        ),
                    },
                    "cell_types": {str(k): int(v) for k, v in type_counts.items()},
                    "colocalization": {"n_tiles": int(tiled.n_tiles), "unknown_excluded": True},
                    "report": {"map_every": map_every, "map_cells": int(sum(len(b) for b in sampled))},
                    "engine": engine.describe(),
                    "versions": _versions(),
                    "files": [f for f in FILES if (tmp / f).exists()],
                }
                t = done("write", t)
                params["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
                params["peak_rss_mib"] = {k: round(v, 1) for k, v in peak_rss.items()}
                # ------------------------------------------------------------------ report (the page shows the
                # stages before it; run_summary.json, written after it, all of them)
                report_sample = _report_sample(
                    pd.concat(sampled, ignore_index=True),
                    np.arange(0, n, map_every),
                    w_arr,
                    categories,
                    {m: stores[m].var_names for m in names},
                    loadings,
                    factors,
                    coloc,
                    {"method": "radius", "radius": float(radius), "engine": "dask tiles", "n_tiles": tiled.n_tiles},
                    expected,
                )
                write_chunked_report(
                    params,
                    report_sample,
                    tmp / "report.html",
                    figures_dir=tmp / "figures" if figures else None,
                    figures=figures,
                )
                done("report", t, cells_mapped=f"{report_sample.n_obs:,}")
                params["files"] = [f for f in FILES if (tmp / f).exists()]
                params["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
                params["peak_rss_mib"] = {k: round(v, 1) for k, v in peak_rss.items()}
                (tmp / "run_summary.json").write_text(json.dumps(params, indent=2, default=str), encoding="utf-8")
            finally:
                engine.close()
    logger.info("results written to %s (%s cells, %d factors, out of core)", output_dir, f"{n:,}", n_factors)
    return ChunkedPipelineResult(
        cell_types=categories,
        type_counts=type_counts,
        co_localization=co_table,
        W_transcript=loadings.get(Keys.RNA),
        W_protein=loadings.get(Keys.PROTEIN),
        feature_loadings=loadings,
        factor_annotation=factors,
        n_cells=n,
        n_factors=n_factors,
        output_dir=Path(output_dir),
        timings=timings,
        peak_rss_mib=peak_rss,
        params=params,
    )
