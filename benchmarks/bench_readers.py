"""How long each reader takes, in seconds per million cells (issue: read what the instruments write).

Synthetic files are written in each vendor layout (the same layouts the tests check), then read once with the
public reader; the file is in the page cache, so this measures parsing and assembly, not the disk. The headline
is the standardized table: 1,000,000 cells x 40 markers as CSV must read in <= 10 s.

Run: ``.venv/bin/python benchmarks/bench_readers.py [--cells 1000000] [--vendor-cells 200000] [--gem-rows 5000000]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import scipy.sparse as sp

import spatialmultiomics as smo


def _csv(path: Path, columns: dict[str, np.ndarray], sep: str = ",") -> Path:
    pacsv.write_csv(pa.table(columns), path, write_options=pacsv.WriteOptions(delimiter=sep, quoting_style="none"))
    return path


def _markers(rng: np.random.Generator, n: int, k: int, prefix: str = "M") -> dict[str, np.ndarray]:
    return {f"{prefix}{j:02d}": np.round(rng.gamma(2.0, 50.0, n), 2) for j in range(k)}


def _counts(rng: np.random.Generator, n: int, g: int) -> sp.csr_matrix:
    X = sp.random(n, g, density=0.05, format="csr", random_state=rng, data_rvs=lambda m: rng.integers(1, 20, m))
    return X.astype(np.int32)


def _tenx_h5(path: Path, X: sp.csr_matrix, barcodes: list[str], names: list[str], types: list[str]) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["software_version"] = "benchmark"
        g = f.create_group("matrix")
        g["barcodes"] = np.array(barcodes, dtype="S")
        g["data"], g["indices"], g["indptr"] = X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)
        g["shape"] = np.array([X.shape[1], X.shape[0]], dtype=np.int32)
        fg = g.create_group("features")
        fg["id"] = np.array([f"ID{i}" for i in range(len(names))], dtype="S")
        fg["name"] = np.array(names, dtype="S")
        fg["feature_type"] = np.array(types, dtype="S")


def layouts(root: Path, n: int, n_vendor: int, gem_rows: int, seed: int = 0) -> list[tuple[str, int, str, Callable]]:
    """(name, n_cells, unit, thunk) for every layout, files written under ``root``."""
    rng = np.random.default_rng(seed)
    out = []

    # 1. the standardized table, 1M x 40 (CSV)
    table = _csv(
        root / "table.csv",
        {
            "cell_id": np.char.add("c", np.arange(n).astype(str)),
            "x": rng.uniform(0, 1e4, n).round(2),
            "y": rng.uniform(0, 1e4, n).round(2),
            **_markers(rng, n, 40),
        },
    )
    out.append(
        ("standardized table CSV (40 markers)", n, "cells", lambda: smo.io.read(table, "CODEX", modality="protein"))
    )

    m = n_vendor
    ids = np.arange(1, m + 1)
    # 2. CODEX / CellSeg
    codex = _csv(
        root / "codex.csv",
        {
            "cell_id:cell_id": ids,
            "region:region": np.ones(m, int),
            "x:x": rng.uniform(0, 9000, m).round(1),
            "y:y": rng.uniform(0, 9000, m).round(1),
            "size:size": rng.integers(50, 400, m),
            **{f"{k}:Cyc_1_ch_{i}": v for i, (k, v) in enumerate(_markers(rng, m, 40).items())},
        },
    )
    out.append(("CODEX CellSeg CSV (40 markers)", m, "cells", lambda: smo.io.codex(codex)))
    # 3. CyCIF / MCMICRO
    mcm = _csv(
        root / "mcmicro.csv",
        {
            "CellID": ids,
            **_markers(rng, m, 40),
            "X_centroid": rng.uniform(0, 9000, m),
            "Y_centroid": rng.uniform(0, 9000, m),
            "Area": rng.integers(50, 400, m),
            "Eccentricity": rng.uniform(0, 1, m),
        },
    )
    out.append(("CyCIF MCMICRO CSV (40 markers)", m, "cells", lambda: smo.io.cycif(mcm)))
    # 4. MIBI ark cell table
    ark = _csv(
        root / "cell_table_size_normalized.csv",
        {
            "cell_size": rng.integers(50, 400, m),
            **_markers(rng, m, 40),
            "label": ids,
            "fov": (ids % 20).astype(str),
            "centroid-0": rng.uniform(0, 2048, m),
            "centroid-1": rng.uniform(0, 2048, m),
        },
    )
    out.append(("MIBI ark cell_table (40 markers)", m, "cells", lambda: smo.io.mibi(ark)))
    # 5. IMC steinbock folder, 2,000 cells per image
    sb = root / "steinbock"
    (sb / "intensities").mkdir(parents=True)
    (sb / "regionprops").mkdir()
    per = 2000
    for start in range(0, m, per):
        k = min(per, m - start)
        obj = np.arange(1, k + 1)
        _csv(sb / "intensities" / f"img_{start // per:04d}.csv", {"Object": obj, **_markers(rng, k, 40)})
        _csv(
            sb / "regionprops" / f"img_{start // per:04d}.csv",
            {
                "Object": obj,
                "area": rng.integers(5, 80, k),
                "centroid-0": rng.uniform(0, 1000, k),
                "centroid-1": rng.uniform(0, 1000, k),
            },
        )
    out.append(("IMC steinbock folder (40 channels, 2k cells/image)", m, "cells", lambda: smo.io.imc(sb)))
    # 6. MERSCOPE: 300 genes + 20 blanks
    X = _counts(rng, m, 320)
    mer = root / "merscope"
    mer.mkdir()
    dense = X.toarray()
    genes = [f"Gene{i}" for i in range(300)] + [f"Blank-{i}" for i in range(20)]
    cell_ids = (2317032900000100000 + ids).astype(str)
    _csv(mer / "cell_by_gene.csv", {"cell": cell_ids, **{g: dense[:, j] for j, g in enumerate(genes)}})
    _csv(
        mer / "cell_metadata.csv",
        {
            "EntityID": cell_ids,
            "fov": ids % 100,
            "volume": rng.uniform(100, 1000, m),
            "center_x": rng.uniform(0, 9000, m),
            "center_y": rng.uniform(0, 9000, m),
        },
    )
    del dense
    out.append(("MERSCOPE cell_by_gene + metadata (320 genes)", m, "cells", lambda: smo.io.merfish(mer)))
    # 7. Xenium: h5 + cells.parquet, 300 genes + 20 controls
    xen = root / "xenium"
    xen.mkdir()
    barcodes = [f"aaa{i:07d}-1" for i in range(m)]
    _tenx_h5(
        xen / "cell_feature_matrix.h5", X, barcodes, genes, ["Gene Expression"] * 300 + ["Negative Control Probe"] * 20
    )
    pq.write_table(
        pa.table(
            {
                "cell_id": barcodes,
                "x_centroid": rng.uniform(0, 9000, m),
                "y_centroid": rng.uniform(0, 9000, m),
                "cell_area": rng.uniform(20, 200, m),
            }
        ),
        xen / "cells.parquet",
    )
    out.append(("Xenium h5 + cells.parquet (320 features)", m, "cells", lambda: smo.io.xenium(xen)))
    # 8. Visium-like: h5 + tissue_positions.parquet + scale factors (as many barcodes as cells, 2,000 genes)
    vis = root / "visium"
    (vis / "spatial").mkdir(parents=True)
    Xv = _counts(rng, m, 2000)
    _tenx_h5(
        vis / "filtered_feature_bc_matrix.h5", Xv, barcodes, [f"G{i}" for i in range(2000)], ["Gene Expression"] * 2000
    )
    pq.write_table(
        pa.table(
            {
                "barcode": barcodes,
                "in_tissue": np.ones(m, np.int64),
                "array_row": ids % 78,
                "array_col": ids % 128,
                "pxl_row_in_fullres": rng.uniform(0, 2e4, m),
                "pxl_col_in_fullres": rng.uniform(0, 2e4, m),
            }
        ),
        vis / "spatial" / "tissue_positions.parquet",
    )
    (vis / "spatial" / "scalefactors_json.json").write_text(json.dumps({"spot_diameter_fullres": 89.4}))
    out.append(("Visium h5 + positions.parquet (2,000 genes)", m, "spots", lambda: smo.io.visium(vis)))
    # 9. Stereo-seq GEM: rows = (gene, DNB) pairs, binned to 50
    gem = root / "chip.gem.gz"
    frame = pd.DataFrame(
        {
            "geneID": rng.choice([f"Gene{i}" for i in range(2000)], gem_rows),
            "x": rng.integers(0, 20000, gem_rows),
            "y": rng.integers(0, 20000, gem_rows),
            "MIDCount": rng.integers(1, 4, gem_rows),
        }
    )
    with gzip.open(gem, "wt", compresslevel=1) as handle:
        handle.write("#FileFormat=GEMv0.1\n#BinSize=1\n")
        handle.write(frame.to_csv(sep="\t", index=False))
    del frame
    out.append(("Stereo-seq GEM.gz -> bin50 (2,000 genes)", gem_rows, "GEM rows", lambda: smo.io.stereoseq(gem)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells of the standardized table")
    ap.add_argument("--vendor-cells", type=int, default=200_000, help="cells of each vendor layout")
    ap.add_argument("--gem-rows", type=int, default=5_000_000, help="rows of the GEM file")
    ap.add_argument("--repeat", type=int, default=3, help="reads per layout; the median is reported (min in brackets)")
    args = ap.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"load before: {uptime}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cases = layouts(Path(tmp), args.cells, args.vendor_cells, args.gem_rows)
        print(f"files written in {time.perf_counter() - t0:.1f} s")
        # warm-up: first-call costs (imports, pyarrow / pandas initialisation) are not per-cell costs
        warm = _csv(
            Path(tmp) / "warm.csv",
            {"cell_id": np.array(["a", "b"]), "x": np.zeros(2), "y": np.zeros(2), "M": np.ones(2)},
        )
        smo.io.read(warm, "CODEX")
        print(f"{'reader / layout':<52} {'n':>10} {'median s':>9} {'s per 1M':>9}")
        for name, n, unit, thunk in cases:
            times = []
            for _ in range(max(1, args.repeat)):
                t = time.perf_counter()
                adata = thunk()
                times.append(time.perf_counter() - t)
                shape = adata.shape
                del adata
            dt = float(np.median(times))
            print(
                f"{name:<52} {n:>10,} {dt:>9.2f} {dt / n * 1e6:>9.2f}  (min {min(times):.2f} s; {unit} -> {shape[0]:,} x {shape[1]})",
                flush=True,
            )
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
