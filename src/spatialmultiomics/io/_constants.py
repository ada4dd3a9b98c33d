"""File and column names of every vendor layout the readers understand, in one place.

Each platform has a ``*Files`` class (file and folder names, in order of preference) and a ``*Columns`` class
(column spellings, compared case-insensitively, in order of preference). Readers import these names instead of
writing strings inline, so a new vendor spelling is added here once.
"""

from __future__ import annotations

__all__ = [
    "CONTROL_FEATURES_KEY",
    "CONTROL_KEY",
    "MORPHOLOGY_COLUMNS",
    "CodexColumns",
    "CycifColumns",
    "CycifFiles",
    "ImcColumns",
    "ImcFiles",
    "MerfishColumns",
    "MerfishFiles",
    "MibiColumns",
    "StereoseqColumns",
    "StereoseqFiles",
    "StereoseqGef",
    "TenxH5",
    "VisiumColumns",
    "VisiumFiles",
    "XeniumColumns",
    "XeniumFiles",
]

#: ``obsm`` key of the control features (MERFISH ``Blank-*``, Xenium negative-control probes and codewords),
#: kept apart from the genes: CSR (n_cells, n_controls); their names and types are in ``uns[CONTROL_FEATURES_KEY]``
CONTROL_KEY = "control_counts"
#: ``uns`` key: ``{'name': [...], 'feature_type': [...]}``, one entry per column of ``obsm[CONTROL_KEY]``
CONTROL_FEATURES_KEY = "control_features"

#: per-cell shape / position measurements written by segmentation tools (MCMICRO, CellSeg, ark, steinbock,
#: CellProfiler); numeric but not markers, so they go to ``obs`` (compared lower-case, spaces and ``_`` removed)
MORPHOLOGY_COLUMNS = frozenset(
    {
        "area",
        "cellsize",
        "size",
        "volume",
        "perimeter",
        "perimeterarearatio",
        "majoraxislength",
        "minoraxislength",
        "axismajorlength",
        "axisminorlength",
        "eccentricity",
        "solidity",
        "extent",
        "orientation",
        "convexarea",
        "equivalentdiameter",
        "anisotropy",
        "z",
        "tilenum",
        "tilenr",
        "tile",
        "xtile",
        "ytile",
        "ztile",
        "tsnex",
        "tsney",
        "umapx",
        "umapy",
        "nucleusarea",
        "cellarea",
        "minx",
        "maxx",
        "miny",
        "maxy",
        "label",
        "object",
        "objectnumber",
        "imagenumber",
        "lintypenum",
        "patientid",
        "numberneighbors",
    }
)


class TenxH5:
    """10x Genomics feature-barcode matrix HDF5 (Cell Ranger / Space Ranger / Xenium Onboard Analysis).

    Version 3 layout: group ``matrix`` with ``data``, ``indices``, ``indptr``, ``shape``, ``barcodes`` and
    ``features/{id,name,feature_type}``; the matrix is compressed by barcode (CSC of features x barcodes, i.e.
    CSR of barcodes x features). Version 2 (Cell Ranger 2): one group per genome with ``genes`` / ``gene_names``.
    """

    GROUP = "matrix"
    DATASETS = ("data", "indices", "indptr", "shape", "barcodes")
    FEATURES = "features"
    FEATURE_ID = "id"
    FEATURE_NAME = "name"
    FEATURE_TYPE = "feature_type"
    V2_GENE_ID = "genes"
    V2_GENE_NAME = "gene_names"
    GENE_EXPRESSION = "Gene Expression"
    PROTEIN_TYPES = ("Protein Expression", "Antibody Capture")
    #: MEX folder (MatrixMarket): matrix, barcodes, features (Cell Ranger >= 3) or genes (Cell Ranger 2)
    MEX_MATRIX = ("matrix.mtx.gz", "matrix.mtx")
    MEX_BARCODES = ("barcodes.tsv.gz", "barcodes.tsv")
    MEX_FEATURES = ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")


class VisiumFiles:
    """Space Ranger ``outs/`` names."""

    MATRIX_H5 = (
        "filtered_feature_bc_matrix.h5",
        "*filtered_feature_bc_matrix.h5",
        "filtered_probe_bc_matrix.h5",
        "raw_feature_bc_matrix.h5",
        "*raw_feature_bc_matrix.h5",
        "raw_probe_bc_matrix.h5",
    )
    MATRIX_MEX = ("filtered_feature_bc_matrix", "raw_feature_bc_matrix")
    SPATIAL = "spatial"
    #: Space Ranger >= 2.0 (header), Visium HD / Space Ranger >= 3 (parquet), Space Ranger < 2.0 (no header)
    POSITIONS = ("tissue_positions.csv", "tissue_positions.parquet", "tissue_positions_list.csv")
    POSITIONS_NO_HEADER = "tissue_positions_list.csv"
    SCALEFACTORS = "scalefactors_json.json"


class VisiumColumns:
    """Columns of the tissue positions file (the header of Space Ranger >= 2.0; the order of the older file)."""

    ORDER = ("barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres")
    BARCODE = "barcode"
    IN_TISSUE = "in_tissue"
    ARRAY_ROW = "array_row"
    ARRAY_COL = "array_col"
    PIXEL_ROW = "pxl_row_in_fullres"  # y
    PIXEL_COL = "pxl_col_in_fullres"  # x
    SPOT_DIAMETER = "spot_diameter_fullres"
    MICRONS_PER_PIXEL = "microns_per_pixel"  # Visium HD scale factors
    SPOT_DIAMETER_UM = 55.0
    SPOT_PITCH_UM = 100.0


class MerfishFiles:
    """MERSCOPE / vpt region output."""

    COUNTS = ("cell_by_gene.csv", "cell_by_gene*.csv")
    METADATA = ("cell_metadata.csv", "cell_metadata*.csv")
    TRANSCRIPTS = ("detected_transcripts.csv", "detected_transcripts*.csv")


class MerfishColumns:
    """MERSCOPE columns."""

    CELL_ID = ("cell", "EntityID", "cell_id", "", "Unnamed: 0")
    X = ("center_x",)
    Y = ("center_y",)
    TILE_FOV = "fov"  # MERSCOPE imaging tile of one stitched mosaic: kept as obs['tile_fov'], not a separate frame
    BLANK_PREFIXES = ("blank-", "blank_")


class XeniumFiles:
    """Xenium Onboard Analysis output bundle."""

    MATRIX_H5 = ("cell_feature_matrix.h5",)
    MATRIX_MEX = ("cell_feature_matrix",)
    CELLS = ("cells.parquet", "cells.csv.gz", "cells.csv")
    EXPERIMENT = "experiment.xenium"
    TRANSCRIPTS = ("transcripts.parquet", "transcripts.csv.gz")


class XeniumColumns:
    """``cells.csv.gz`` / ``cells.parquet`` columns."""

    CELL_ID = ("cell_id",)
    X = ("x_centroid",)
    Y = ("y_centroid",)
    TILE_FOV = "fov_name"


class StereoseqFiles:
    """Stereo-seq (SAW) outputs: GEM text files and GEF (HDF5) files (``.bgef`` / ``.cgef`` from geftools)."""

    GEM_SUFFIXES = (".gem", ".gem.gz", ".txt", ".txt.gz", ".tsv", ".tsv.gz")
    GEF_SUFFIXES = (".gef", ".bgef", ".cgef")
    GEM_PATTERNS = ("*.gem", "*.gem.gz")
    GEF_PATTERNS = ("*.gef", "*.bgef", "*.cgef")


class StereoseqGef:
    """GEF (HDF5) group, dataset, field and attribute names (STOmics geftools / SAW; see ``io/stereoseq.py``).

    Square-bin GEF: ``/geneExp/bin1/gene`` (gene-major index into ``expression``) and ``/geneExp/bin1/expression``.
    Cell-bin GEF: ``/cellBin/cell``, ``/cellBin/gene``, ``/cellBin/cellExp`` (cell-major), ``/cellBin/geneExp``.
    Field spellings are in order of preference; the first present is used.
    """

    SQUARE_GROUP = "geneExp"
    BIN1 = "bin1"
    GENE = "gene"
    EXPRESSION = "expression"
    #: gene dataset: the gene id (``gene`` before GEF 4, ``geneID`` from GEF 4 on) and the gene symbol (GEF >= 4)
    GENE_ID_FIELDS = ("geneID", "gene")
    GENE_NAME_FIELDS = ("geneName",)
    OFFSET = "offset"
    #: number of expression records of a gene (square-bin ``gene.count``)
    GENE_RECORDS = "count"
    X = "x"
    Y = "y"
    COUNT = "count"
    CELL_GROUP = "cellBin"
    CELL = "cell"
    CELL_EXP = "cellExp"
    GENE_EXP = "geneExp"
    CELL_BORDER = "cellBorder"
    CELL_ID = "id"
    #: number of (gene, count) records of a cell in ``cellExp``
    CELL_GENES = "geneCount"
    CELL_DNB = "dnbCount"
    CELL_AREA = "area"
    #: ``cellExp.geneID`` is an integer row index into ``/cellBin/gene``
    CELL_EXP_GENE = "geneID"
    #: attributes holding the DNB pitch in nm: on ``expression`` (square-bin) or on the file (cell-bin)
    RESOLUTION = "resolution"
    DNB_PITCH_NM_DEFAULT = 500


class StereoseqColumns:
    """GEM columns (tab-separated, after ``#`` header lines)."""

    GENE = ("geneID", "gene", "gene_id")
    GENE_NAME = ("geneName", "gene_name")
    X = ("x",)
    Y = ("y",)
    COUNT = ("MIDCount", "MIDCounts", "UMICount", "UMICounts", "MIDcount", "count", "counts")
    CELL = ("CellID", "cell_id", "cellID", "label")
    EXON = ("ExonCount",)
    DNB_PITCH_UM = 0.5


class CodexColumns:
    """CODEX / PhenoCycler per-cell tables (CellSeg, CODEX processor, MCMICRO, QuPath-like exports)."""

    CELL_ID = ("cell_id", "cellid", "cell_id:cell_id", "id", "object", "label", "")
    X = ("x", "x:x", "x_centroid", "centroid_x", "centroidx", "x_um", "x_position")
    Y = ("y", "y:y", "y_centroid", "centroid_y", "centroidy", "y_um", "y_position")
    FOV = ("region", "region:region", "fov", "reg", "sample", "image", "tma_core")
    PIXEL_SIZE_UM = 0.377


class MibiColumns:
    """ark-analysis ``cell_table`` and the seed's tab-separated matrix."""

    X = ("centroid-1", "centroidx", "centroid_x", "x")
    Y = ("centroid-0", "centroidy", "centroid_y", "y")
    FIRST_MARKER_AFTER = "cell_size"
    LAST_MARKER_BEFORE = "label"
    LABEL = ("label", "cellLabelInImage", "cell_id", "cellid", "id")
    FOV = ("fov", "point", "sampleid", "sample_id", "image")
    #: Keren et al. 2018: 800 µm field of view imaged at 2048 x 2048 pixels
    PIXEL_SIZE_UM = 800.0 / 2048.0


class ImcFiles:
    """steinbock output folder."""

    INTENSITIES = "intensities"
    REGIONPROPS = "regionprops"
    PANEL = "panel.csv"
    IMAGES = "images.csv"


class ImcColumns:
    """steinbock and CellProfiler-style per-cell tables."""

    OBJECT = ("Object", "ObjectNumber", "cell_id", "CellID", "id", "label")
    X = ("centroid-1", "Location_Center_X", "AreaShape_Center_X", "x", "centroid_x", "X_centroid", "Pos_X")
    Y = ("centroid-0", "Location_Center_Y", "AreaShape_Center_Y", "y", "centroid_y", "Y_centroid", "Pos_Y")
    IMAGE = ("image", "ImageNumber", "Image", "sample_id", "roi", "fov")
    PANEL_CHANNEL = "channel"
    PANEL_NAME = "name"
    PANEL_KEEP = "keep"
    PIXEL_SIZE_UM = 1.0


class CycifFiles:
    """MCMICRO project folder."""

    QUANTIFICATION = "quantification"
    MARKERS = "markers.csv"


class CycifColumns:
    """MCMICRO quantification (mcquant) columns."""

    CELL_ID = ("CellID",)
    X = ("X_centroid",)
    Y = ("Y_centroid",)
    MORPHOLOGY = (
        "Area",
        "MajorAxisLength",
        "MinorAxisLength",
        "Eccentricity",
        "Solidity",
        "Extent",
        "Orientation",
    )
    MARKER_NAME = "marker_name"
    PIXEL_SIZE_UM = 0.65
