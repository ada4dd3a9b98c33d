"""Which instrument wrote this? Platform detection from a folder's files or a table's header."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from spatialmultiomics.io._common import find_file, open_text, suffixes
from spatialmultiomics.io._constants import (
    CosmxFiles,
    ImcFiles,
    MerfishFiles,
    StereoseqFiles,
    TenxH5,
    VisiumFiles,
    XeniumFiles,
)

__all__ = ["detect_platform", "table_header", "table_layout"]

_MAX_SNIFF = 50


def table_header(path: Path) -> list[str]:
    """Column names of a CSV / TSV (first non-``#`` line) or parquet file; [] when unreadable."""
    sfx = suffixes(path)
    try:
        if sfx and sfx[-1] in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with open_text(path) as handle:
            for line in handle:
                text = line.rstrip("\r\n")
                if text.startswith("#") or not text.strip():
                    continue
                sep = "\t" if "\t" in text else ","
                return [c.strip() for c in next(csv.reader([text], delimiter=sep))]
    except Exception:  # noqa: BLE001 - sniffing never fails; the reader reports the real problem
        return []
    return []


def table_layout(path: Path, header: list[str] | None = None) -> str | None:
    """The vendor whose export this table unmistakably is, or None (a standardized / unknown table).

    ark cell table -> ``'mibi'``; MCMICRO quantification -> ``'cycif'``; CellSeg ``x:x`` headers -> ``'codex'``;
    CosMx flat file -> ``'cosmx'``; inForm ``cell_seg_data`` -> ``'inform'``; QuPath / HALO exports -> ``'qupath'`` /
    ``'halo'``;
    steinbock / CellProfiler single-cell table -> ``'imc'``; GEM -> ``'stereoseq'``; ``cell_by_gene`` -> ``'merfish'``.
    """
    from spatialmultiomics.io.cycif import is_mcmicro_header
    from spatialmultiomics.io.halo import is_halo_header
    from spatialmultiomics.io.inform import is_inform_header
    from spatialmultiomics.io.mibi import is_ark_cell_table
    from spatialmultiomics.io.qupath import is_qupath_header

    sfx = suffixes(path)
    if sfx and sfx[-1] == ".gem":
        return "stereoseq"
    cols = table_header(path) if header is None else header
    lower = {c.strip().lower() for c in cols}
    if "cell_by_gene" in path.name.lower():
        return "merfish"
    if re.search(r"(exprMat|metadata|fov_positions)_file\.csv", path.name):
        return "cosmx"
    if is_inform_header(cols):
        return "inform"
    if is_qupath_header(cols):
        return "qupath"
    if is_halo_header(cols):
        return "halo"
    if is_ark_cell_table(cols):
        return "mibi"
    if is_mcmicro_header(cols):
        return "cycif"
    if lower & {"x:x", "y:y"}:
        return "codex"
    if ("object" in lower and {"centroid-0", "centroid-1"} <= lower) or "location_center_x" in lower:
        return "imc"
    if "geneid" in lower and {"x", "y"} <= lower and lower & {"midcount", "midcounts", "umicount", "umicounts"}:
        return "stereoseq"
    return None


def detect_platform(path: str | Path) -> list[str]:
    """Platforms whose output layout ``path`` matches (canonical names, sorted); [] when none.

    Folders: Space Ranger (``*_bc_matrix.h5`` / MEX, ``spatial/tissue_positions*``), Xenium
    (``cell_feature_matrix*``, ``cells.parquet``, ``experiment.xenium``), MERSCOPE (``cell_by_gene*.csv``,
    ``cell_metadata*.csv``), Stereo-seq (``*.gem``, ``*.gef``), steinbock (``intensities/`` + ``regionprops/``),
    MCMICRO (``quantification/`` or a quantification CSV), ark (``cell_table*.csv``), CODEX (CellSeg tables),
    Visium HD (``binned_outputs/square_*um``, ``segmented_outputs/``, a ``square_*um`` folder), CosMx flat files
    (``*_exprMat_file.csv`` + ``*_metadata_file.csv``), inForm / QuPath / HALO per-cell tables.
    Files: ``.h5`` -> Visium or Xenium by name, GEM -> Stereo-seq, tables by their header (:func:`table_layout`).
    """
    path = Path(path)
    if path.is_file():
        sfx = suffixes(path)
        last = sfx[-1] if sfx else ""
        if last == ".h5" and (
            re.match(r"^square_\d{3}um$", path.parent.name) or path.parent.name == "segmented_outputs"
        ):
            return ["visium_hd"]
        if last == ".h5":
            return ["xenium"] if path.name.startswith(XeniumFiles.MATRIX_H5[0].split(".")[0]) else ["visium"]
        if last in StereoseqFiles.GEF_SUFFIXES:
            return ["stereoseq"]
        hit = table_layout(path)
        return [hit] if hit else []
    if not path.is_dir():
        return []
    from spatialmultiomics.io.visium_hd import is_visium_hd

    found: set[str] = set()
    mex_here = any((path / n).is_file() for n in TenxH5.MEX_MATRIX)
    if is_visium_hd(path):
        found.add("visium_hd")
    elif (
        find_file(path, VisiumFiles.MATRIX_H5, kind="file")
        or find_file(path, VisiumFiles.MATRIX_MEX, kind="dir")
        or find_file(path / VisiumFiles.SPATIAL, VisiumFiles.POSITIONS, kind="file")
    ):
        found.add("visium")
    if find_file(path, CosmxFiles.EXPRESSION, kind="file") and find_file(path, CosmxFiles.METADATA, kind="file"):
        found.add("cosmx")
    if find_file(
        path, (*XeniumFiles.MATRIX_H5, *XeniumFiles.MATRIX_MEX, XeniumFiles.EXPERIMENT), kind="any"
    ) or find_file(path, XeniumFiles.TRANSCRIPTS, kind="file"):
        found.add("xenium")
    if mex_here and not found:
        found.add("xenium" if path.name.startswith("cell_feature_matrix") else "visium")
    if find_file(path, (*MerfishFiles.COUNTS, *MerfishFiles.METADATA), kind="file"):
        found.add("merfish")
    if find_file(path, (*StereoseqFiles.GEM_PATTERNS, *StereoseqFiles.GEF_PATTERNS), kind="file"):
        found.add("stereoseq")
    if (path / ImcFiles.INTENSITIES).is_dir() and (path / ImcFiles.REGIONPROPS).is_dir():
        found.add("imc")
    quant = path / "quantification"
    tables = sorted(
        p
        for folder in (path, quant)
        if folder.is_dir()
        for pat in ("*.csv", "*.csv.gz", "*.tsv", "*.txt", "*.parquet")
        for p in folder.glob(pat)
        if p.is_file()
    )[:_MAX_SNIFF]
    for table in tables:
        if ("merfish" in found and "cell_" in table.name) or "cosmx" in found:
            continue
        hit = table_layout(table)
        if hit in ("mibi", "cycif", "codex", "inform", "qupath", "halo"):
            found.add(hit)
    return sorted(found)
