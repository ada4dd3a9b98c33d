"""Time and memory of the in-memory cluster annotation (issue 15: the annotation's share of the time).

Parts (``--part``):

``time``
    ``smo.annotate.annotate(method='cluster')`` on ``smo.datasets.synthetic_tissue(n, seed=0)`` (800 genes, 28
    proteins; ``smo.pp.preprocess`` defaults) at every ``--cells`` size, with the exact neighbour search as chosen
    by ``annotate._neighbors.exact_neighbors`` (``grouped``: k-means groups with proven bounds where they spare
    most of the reference) and with the brute force forced (``brute``), alternating in one process, ``--repeats``
    times. The labels of the two must be equal (they are exact searches with the same tie rule); the time in the
    neighbour searches is reported apart.
``memory``
    ``smo.annotate.annotate_measured`` on ``--memory-cells`` cells of which 10 % have an imputed protein profile
    (``obs['protein_status'] == 'imputed'``), after a short ``joint_nmf`` (``--nmf-iter`` iterations; the
    memory of the annotation does not depend on the fit): the measured cells in a lean container
    (``_measured_part``, the default) against the full ``mdata[own].copy()`` of before, each in a fresh process
    reading the same ``.h5mu``; peak RSS above the RSS before the call, sampled every 20 ms. Labels compared.

Run: ``.venv/bin/python benchmarks/bench_annotate_scale.py [--part time|memory|all] [--cells 20000,50000,100000]
[--repeats 1] [--memory-cells 200000] [--workdir /tmp/smo_annot]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

import spatialmultiomics as smo
from spatialmultiomics._mudata import mudata_options


def _tissue(n: int, workdir: Path) -> Path:
    path = workdir / f"tissue_{n}.h5mu"
    if not path.exists():
        mdata = smo.datasets.synthetic_tissue(n, seed=0)
        smo.pp.preprocess(mdata)
        with mudata_options():
            mdata.write(path)
    return path


class _SearchClock:
    """Wall time spent in the annotation's neighbour searches (``_knn`` and ``_assign_rest``)."""

    def __init__(self) -> None:
        from spatialmultiomics.annotate import _by_cluster

        self.seconds = 0.0
        self._mod = _by_cluster
        self._orig = {name: getattr(_by_cluster, name) for name in ("_knn", "_assign_rest")}

    def __enter__(self) -> _SearchClock:
        for name, fn in self._orig.items():
            setattr(self._mod, name, self._timed(fn))
        return self

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        return wrapper

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._orig.items():
            setattr(self._mod, name, fn)


def part_time(cells: list[int], repeats: int, workdir: Path) -> dict:
    import mudata as md

    from spatialmultiomics.annotate import _neighbors

    out = {}
    for n in cells:
        mdata = md.read_h5mu(_tissue(n, workdir))
        markers = dict(mdata.uns["markers"])
        rows = []
        labels = {}
        for rep in range(repeats):
            for mode in ("grouped", "brute") if rep % 2 == 0 else ("brute", "grouped"):
                saved = _neighbors.MIN_GROUPED_REFERENCE
                if mode == "brute":
                    _neighbors.MIN_GROUPED_REFERENCE = np.iinfo(np.int64).max
                load = os.getloadavg()[0]
                try:
                    with _SearchClock() as clock:
                        t = time.perf_counter()
                        res = smo.annotate.annotate(mdata, markers=markers, method="cluster", inplace=False)
                        secs = time.perf_counter() - t
                finally:
                    _neighbors.MIN_GROUPED_REFERENCE = saved
                labels[mode] = res.cell_type.astype(str).to_numpy()
                rows.append(
                    {"mode": mode, "seconds": round(secs, 1), "search_s": round(clock.seconds, 1), "load": load}
                )
                print(n, rows[-1], flush=True)
        same = int((labels["grouped"] == labels["brute"]).sum())
        out[n] = {"runs": rows, "same_labels": same, "cells": n}
        print(f"{n} cells: same label for {same} of {n}", flush=True)
    return out


def _fake_imputed(n: int, workdir: Path, nmf_iter: int) -> Path:
    path = workdir / f"measured_{n}.h5mu"
    if path.exists():
        return path
    mdata = smo.datasets.synthetic_tissue(n, seed=0)
    status = np.full(n, "matched", dtype=object)
    status[np.random.default_rng(0).choice(n, n // 10, replace=False)] = "imputed"
    mdata.obs["protein_status"] = pd.Categorical(status)
    smo.pp.preprocess(mdata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smo.factorize.joint_nmf(mdata, n_components=12, seed=0, max_iter=nmf_iter)
    with mudata_options():
        mdata.write(path)
    return path


def _measured_child(path: str, route: str, queue: mp.Queue) -> None:
    import mudata as md

    from spatialmultiomics.annotate import _unpaired

    if route == "copy":  # the route before: a full copy of the measured cells

        def full_copy(mdata, rows):
            with mudata_options():
                return mdata[rows].copy()

        _unpaired._measured_part = full_copy
    mdata = md.read_h5mu(path)
    markers = dict(mdata.uns["markers"])
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.perf_counter()
    smo.annotate.annotate_measured(mdata, markers=markers, method="cluster", seed=0)
    secs = time.perf_counter() - t
    stop.set()
    thread.join()
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    queue.put(
        {
            "route": route,
            "rss_before_gib": base / 2**30,
            "peak_above_gib": (peak[0] - base) / 2**30,
            "seconds": secs,
            "labels": labels,
        }
    )


def part_memory(n: int, workdir: Path, nmf_iter: int) -> dict:
    path = _fake_imputed(n, workdir, nmf_iter)
    ctx = mp.get_context("spawn")
    out = {}
    for route in ("copy", "lean"):
        queue = ctx.Queue()
        load = os.getloadavg()[0]
        proc = ctx.Process(target=_measured_child, args=(str(path), route, queue))
        proc.start()
        res = queue.get()
        proc.join()
        res["load"] = load
        out[route] = res
        print(route, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items() if k != "labels"})
    same = int((out["copy"]["labels"] == out["lean"]["labels"]).sum())
    print(f"{n} cells: same label for {same} of {n}", flush=True)
    return {r: {k: v for k, v in d.items() if k != "labels"} for r, d in out.items()} | {"same_labels": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["time", "memory", "all"], default="all")
    ap.add_argument("--cells", default="20000,50000,100000")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--memory-cells", type=int, default=200_000)
    ap.add_argument("--nmf-iter", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/smo_annot"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"machine": platform.platform(), "cpus": os.cpu_count()}
    if args.part in ("time", "all"):
        result["time"] = part_time([int(c) for c in args.cells.split(",")], args.repeats, args.workdir)
    if args.part in ("memory", "all"):
        result["memory"] = part_memory(args.memory_cells, args.workdir, args.nmf_iter)
    print(json.dumps(result, default=str, indent=1))


if __name__ == "__main__":
    main()
