"""How long each reader takes, in seconds per million cells (issue: read what the instruments write).

Synthetic files are written in each vendor layout (the same layouts the tests check), then read once with the
public reader; the file is in the page cache, so this measures parsing and assembly, not the disk. The headline
is the standardized table: 1,000,000 cells x 40 markers as CSV must read in <= 10 s.

Run: ``.venv/bin/python benchmarks/bench_readers.py [--cells 1000000] [--vendor-cells 200000] [--gem-rows 5000000]``

Issue 16 targets (``--new-only`` runs just these; each read runs in a fresh process so its peak memory is its own):
Visium HD 8 µm bins of a full slide (700,000 bins x 18,000 genes, ``binned_outputs/square_008um`` written in the
Space Ranger layout, gzip-compressed h5 as Space Ranger writes it) read in <= 60 s within 8 GiB; CosMx flat files
1,000,000 cells x 1,000 targets in <= 60 s; an inForm ``cell_seg_data.txt`` (tab-separated, 4 compartments x 5
statistics per marker) for scale.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import multiprocessing
import os
import platform
import resource
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


def _visium_hd(root: Path, n_bins: int, n_genes: int, nnz_per_bin: int, rng: np.random.Generator) -> Path:
    """``outs/binned_outputs/square_008um`` of a full slide: gzip-compressed 10x h5 (as Space Ranger writes it),
    ``spatial/tissue_positions.parquet`` and ``scalefactors_json.json``; ``nnz_per_bin`` genes per bin."""
    folder = root / "outs" / "binned_outputs" / "square_008um"
    (folder / "spatial").mkdir(parents=True)
    side = int(np.ceil(np.sqrt(n_bins)))
    rows, cols = np.divmod(np.arange(n_bins), side)
    barcodes = np.char.add(
        np.char.add(np.char.add("s_008um_", np.char.zfill(rows.astype(str), 5)), "_"),
        np.char.add(np.char.zfill(cols.astype(str), 5), "-1"),
    )
    stride = n_genes // nnz_per_bin  # one gene per stride: sorted, distinct column indices per bin
    indices = (np.arange(nnz_per_bin) * stride)[None, :] + rng.integers(0, stride, (n_bins, nnz_per_bin))
    data = rng.integers(1, 6, n_bins * nnz_per_bin).astype(np.int32)
    with h5py.File(folder / "filtered_feature_bc_matrix.h5", "w") as f:
        f.attrs["software_version"] = "spaceranger-3.1.1"
        g = f.create_group("matrix")
        kw = {"compression": "gzip", "compression_opts": 1, "chunks": (min(1 << 20, data.size),)}
        g.create_dataset("barcodes", data=barcodes.astype("S"), compression="gzip", compression_opts=1)
        g.create_dataset("data", data=data, **kw)
        g.create_dataset("indices", data=indices.ravel().astype(np.int64), **kw)
        g["indptr"] = np.arange(0, n_bins * nnz_per_bin + 1, nnz_per_bin, dtype=np.int64)
        g["shape"] = np.array([n_genes, n_bins], dtype=np.int32)
        fg = g.create_group("features")
        fg["id"] = np.array([f"ENSG{i:011d}" for i in range(n_genes)], dtype="S")
        fg["name"] = np.array([f"Gene{i}" for i in range(n_genes)], dtype="S")
        fg["feature_type"] = np.array(["Gene Expression"] * n_genes, dtype="S")
        fg["genome"] = np.array(["GRCh38"] * n_genes, dtype="S")
    mpp = 0.2737
    pq.write_table(
        pa.table(
            {
                "barcode": barcodes,
                "in_tissue": np.ones(n_bins, np.int32),
                "array_row": rows,
                "array_col": cols,
                "pxl_row_in_fullres": 500.0 + rows * 8 / mpp,
                "pxl_col_in_fullres": 500.0 + cols * 8 / mpp,
            }
        ),
        folder / "spatial" / "tissue_positions.parquet",
    )
    (folder / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({"spot_diameter_fullres": 8 / mpp, "bin_size_um": 8.0, "microns_per_pixel": mpp})
    )
    return root / "outs"


def _cosmx(root: Path, n_cells: int, n_targets: int, rng: np.random.Generator) -> Path:
    """CosMx flat files: exprMat (fov, cell_ID, targets incl. 10 NegPrb and 10 SystemControl; ~5% non-zero counts,
    written in 100k-row blocks) and metadata with global pixel centroids."""
    folder = root / "cosmx"
    folder.mkdir()
    per_fov = 2000
    fov = np.arange(n_cells) // per_fov + 1
    cell = np.arange(n_cells) % per_fov + 1
    names = [f"Gene{i}" for i in range(n_targets - 20)] + [f"NegPrb{i}" for i in range(10)]
    names += [f"SystemControl{i}" for i in range(10)]
    opts = pacsv.WriteOptions(quoting_style="none")
    with pacsv.CSVWriter(
        str(folder / "Run1_exprMat_file.csv"),
        pa.schema([("fov", pa.int64()), ("cell_ID", pa.int64())] + [(n, pa.int32()) for n in names]),
        write_options=opts,
    ) as writer:
        for start in range(0, n_cells, 100_000):
            stop = min(start + 100_000, n_cells)
            block = rng.random((stop - start, n_targets), dtype=np.float32) < 0.05
            counts = block.astype(np.int32) * rng.integers(1, 4, block.shape, dtype=np.int32)
            cols = {"fov": fov[start:stop], "cell_ID": cell[start:stop]}
            cols.update({n: counts[:, j] for j, n in enumerate(names)})
            writer.write_table(pa.table(cols))
    _csv(
        folder / "Run1_metadata_file.csv",
        {
            "fov": fov,
            "cell_ID": cell,
            "Area": rng.integers(500, 5000, n_cells),
            "AspectRatio": rng.uniform(0.5, 2, n_cells).round(3),
            "CenterX_local_px": rng.uniform(0, 4256, n_cells).round(1),
            "CenterY_local_px": rng.uniform(0, 4256, n_cells).round(1),
            "CenterX_global_px": rng.uniform(0, 2e5, n_cells).round(1),
            "CenterY_global_px": rng.uniform(0, 2e5, n_cells).round(1),
            "Mean.MembraneStain": rng.integers(100, 5000, n_cells),
            "Max.DAPI": rng.integers(100, 50000, n_cells),
        },
    )
    return folder


def _inform(root: Path, n_cells: int, n_markers: int, rng: np.random.Generator) -> Path:
    """An inForm ``cell_seg_data.txt``: tab-separated, 4 compartments x 5 statistics per marker, pixel positions."""
    cols: dict[str, np.ndarray] = {
        "Sample Name": np.array(["Slide1_[1000,2000].im3"] * n_cells),
        "Tissue Category": rng.choice(np.array(["Tumor", "Stroma"]), n_cells),
        "Phenotype": rng.choice(np.array(["CD8+", "CK+", "other"]), n_cells),
        "Cell ID": np.arange(1, n_cells + 1),
        "Cell X Position": rng.integers(0, 20000, n_cells),
        "Cell Y Position": rng.integers(0, 20000, n_cells),
    }
    for comp in ("Nucleus", "Cytoplasm", "Membrane", "Entire Cell"):
        cols[f"{comp} Area (pixels)"] = rng.integers(20, 400, n_cells)
        for m in range(n_markers):
            for stat in ("Min", "Mean", "Max", "Std Dev", "Total"):
                cols[f"{comp} M{m} (Opal {520 + 10 * m}) {stat} (Normalized Counts, Total Weighting)"] = np.round(
                    rng.gamma(2.0, 3.0, n_cells), 3
                ).astype(np.float32)
    return _csv(root / "Slide1_cell_seg_data.txt", cols, sep="\t")


def _read_case(reader: str, path: str, kwargs: dict) -> tuple[float, tuple[int, int], float]:
    """Run in a fresh process: (seconds, shape, peak resident memory in GiB of this process)."""
    import anndata  # noqa: F401 - imports are not reading time
    import h5py as _h5py  # noqa: F401
    import pyarrow.csv  # noqa: F401
    import scipy.sparse  # noqa: F401

    import spatialmultiomics as smo_child

    t = time.perf_counter()
    adata = getattr(smo_child.io, reader)(path, **kwargs)
    dt = time.perf_counter() - t
    with Path("/proc/self/status").open() as handle:  # peak resident set of this (fresh) process
        hwm = next((int(line.split()[1]) for line in handle if line.startswith("VmHWM:")), None)
    peak_kib = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dt, adata.shape, peak_kib / 2**20


def new_platforms(args: argparse.Namespace, root: Path) -> None:
    """Issue 16: Visium HD full slide, CosMx 1M cells, inForm table; each read in a fresh process (peak RSS)."""
    rng = np.random.default_rng(1)
    cases = []
    t0 = time.perf_counter()
    hd = root / "outs" if (root / "outs").is_dir() else _visium_hd(root, args.hd_bins, args.hd_genes, args.hd_nnz, rng)
    cases.append(
        ("Visium HD square_008um h5 + parquet", args.hd_bins, "visium_hd", hd, {"bin_size": 8}, "<= 60 s, <= 8 GiB")
    )
    print(f"Visium HD files written in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    cx = root / "cosmx" if (root / "cosmx").is_dir() else _cosmx(root, args.cosmx_cells, args.cosmx_targets, rng)
    cases.append(("CosMx flat files (exprMat + metadata)", args.cosmx_cells, "cosmx", cx, {}, "<= 60 s"))
    print(f"CosMx files written in {time.perf_counter() - t0:.1f} s", flush=True)
    inf = root / "Slide1_cell_seg_data.txt"
    inf = inf if inf.is_file() else _inform(root, args.inform_cells, 7, rng)
    cases.append(("inForm cell_seg_data.txt (7 markers x 20)", args.inform_cells, "inform", inf, {}, ""))
    sizes = {
        name: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())
        if Path(p).is_dir()
        else Path(p).stat().st_size
        for name, _, _, p, _, _ in cases
    }
    ctx = multiprocessing.get_context("spawn")
    print(f"{'reader / layout':<44} {'n':>10} {'GB on disk':>10} {'s':>7} {'peak GiB':>9}  target")
    for name, n, reader, path, kwargs, target in cases:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            dt, shape, peak = pool.submit(_read_case, reader, str(path), kwargs).result()
        print(
            f"{name:<44} {n:>10,} {sizes[name] / 1e9:>10.2f} {dt:>7.1f} {peak:>9.2f}  {target} -> {shape[0]:,} x {shape[1]:,}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells of the standardized table")
    ap.add_argument("--vendor-cells", type=int, default=200_000, help="cells of each vendor layout")
    ap.add_argument("--gem-rows", type=int, default=5_000_000, help="rows of the GEM file")
    ap.add_argument("--repeat", type=int, default=3, help="reads per layout; the median is reported (min in brackets)")
    ap.add_argument("--new-only", action="store_true", help="only the issue-16 platforms (Visium HD, CosMx, inForm)")
    ap.add_argument("--hd-bins", type=int, default=700_000, help="Visium HD 8 µm bins")
    ap.add_argument("--hd-genes", type=int, default=18_000, help="Visium HD genes")
    ap.add_argument("--hd-nnz", type=int, default=100, help="non-zero genes per Visium HD bin")
    ap.add_argument("--cosmx-cells", type=int, default=1_000_000, help="CosMx cells")
    ap.add_argument("--cosmx-targets", type=int, default=1_000, help="CosMx targets (incl. 20 controls)")
    ap.add_argument("--inform-cells", type=int, default=200_000, help="cells of the inForm table")
    ap.add_argument("--workdir", default=None, help="keep the issue-16 files here (reused when present)")
    args = ap.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(f"load before: {uptime}")
    if args.new_only:
        if args.workdir is not None:  # files kept (and reused when present) for repeated runs
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            new_platforms(args, Path(args.workdir))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                new_platforms(args, Path(tmp))
        print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        return
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
