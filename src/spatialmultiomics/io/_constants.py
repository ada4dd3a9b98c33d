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
    "PLATFORM_PIXEL_SIZE_UM",
    "CodexColumns",
    "CosmxColumns",
    "CosmxFiles",
    "CycifColumns",
    "CycifFiles",
    "HaloColumns",
    "ImcColumns",
    "ImcFiles",
    "InformColumns",
    "MerfishColumns",
    "MerfishFiles",
    "MibiColumns",
    "QupathColumns",
    "StereoseqColumns",
    "StereoseqFiles",
    "StereoseqGef",
    "TenxH5",
    "VisiumColumns",
    "VisiumFiles",
    "VisiumHdFiles",
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


class VisiumHdFiles:
    """Space Ranger >= 3 (Visium HD) ``outs/``: ``binned_outputs/square_002um|008um|016um/`` (each a Visium-like
    folder: ``filtered_feature_bc_matrix.h5``, ``spatial/tissue_positions.parquet``, ``spatial/scalefactors_json.json``
    with ``bin_size_um`` and ``microns_per_pixel``) and, from Space Ranger 4, ``segmented_outputs/`` (cells:
    ``filtered_feature_cell_matrix.h5`` with barcodes ``cellid_000000001-1``, ``cell_segmentations.geojson`` polygons
    in full-resolution pixels with property ``cell_id``, ``spatial/scalefactors_json.json``)."""

    BINNED = "binned_outputs"
    SEGMENTED = "segmented_outputs"
    BIN_FOLDER = "square_{:03d}um"
    BIN_PATTERN = "square_*um"
    BIN_SIZES_UM = (2, 8, 16)
    DEFAULT_BIN_UM = 8
    CELL_MATRIX_H5 = ("filtered_feature_cell_matrix.h5", "raw_feature_cell_matrix.h5")
    CELL_MATRIX_MEX = ("filtered_feature_cell_matrix", "raw_feature_cell_matrix")
    CELL_POLYGONS = (
        "cell_segmentations.geojson",
        "graphclust_annotated_cell_segmentations.geojson",
        "*cell_segmentations.geojson",
    )
    CELL_ID_PROPERTY = "cell_id"
    BIN_SIZE_KEY = "bin_size_um"


class CosmxFiles:
    """CosMx SMI flat files (AtoMx export and the public releases): ``<run>_exprMat_file.csv``,
    ``<run>_metadata_file.csv``, ``<run>_fov_positions_file.csv`` (optionally gzip-compressed)."""

    EXPRESSION = ("*exprMat_file.csv", "*exprMat_file.csv.gz")
    METADATA = ("*metadata_file.csv", "*metadata_file.csv.gz")
    FOV_POSITIONS = ("*fov_positions_file.csv", "*fov_positions_file.csv.gz")


class CosmxColumns:
    """CosMx flat-file columns (``fov`` and ``cell_ID`` identify a cell; ``cell_ID`` 0 holds the transcripts outside
    every cell)."""

    FOV = ("fov", "FOV")
    CELL_ID = ("cell_ID", "cell_id", "cellID")
    CELL = ("cell",)  # AtoMx: "c_<slide>_<fov>_<cell_ID>"
    X_PX = ("CenterX_global_px",)
    Y_PX = ("CenterY_global_px",)
    X_UM = ("CenterX_global_um", "CenterX_global_µm", "x_slide_um")
    Y_UM = ("CenterY_global_um", "CenterY_global_µm", "y_slide_um")
    X_MM = ("CenterX_global_mm", "x_slide_mm")
    Y_MM = ("CenterY_global_mm", "y_slide_mm")
    X_LOCAL_PX = ("CenterX_local_px",)
    Y_LOCAL_PX = ("CenterY_local_px",)
    #: control features, by name prefix (case-insensitive) -> feature type
    CONTROL_PREFIXES = (
        ("negprb", "Negative Control Probe"),
        ("negative", "Negative Control Probe"),
        ("systemcontrol", "System Control"),
        ("falsecode", "False Code"),
    )
    #: protein panels: isotype controls (``Ms IgG1``, ``Rb IgG`` ...) are kept apart like the negative probes
    ISOTYPE = "igg"
    #: µm per pixel of the CosMx SMI instrument camera (spatialdata-io, NanoString ReadMe: "0.12 µm per pixel")
    PIXEL_SIZE_UM = 0.120280945


class InformColumns:
    """Akoya inForm ``*cell_seg_data.txt`` (tab-separated; also the PhenoCycler-Fusion / phenoptr exports)."""

    X = ("Cell X Position",)
    Y = ("Cell Y Position",)
    CELL_ID = ("Cell ID",)
    SAMPLE = ("Sample Name",)
    PHENOTYPE_PREFIX = "Phenotype"
    COMPARTMENTS = ("Entire Cell", "Nucleus", "Cytoplasm", "Membrane")
    STATISTICS = ("Mean", "Min", "Max", "Std Dev", "Total")
    #: phenoptr's default: 2 pixels per µm (20x multispectral fields of Vectra 3 / Vectra Polaris)
    PIXEL_SIZE_UM = 0.5
    NA_VALUES = ("NA", "#N/A", "")


class QupathColumns:
    """QuPath measurement exports (``Measure > Export measurements``, detections / cells)."""

    X = ("Centroid X µm", "Centroid X um", "Centroid X px", "Centroid X")
    Y = ("Centroid Y µm", "Centroid Y um", "Centroid Y px", "Centroid Y")
    IMAGE = ("Image",)
    ID = ("Object ID", "Name")
    CLASS = ("Classification", "Class")
    COMPARTMENTS = ("Cell", "Nucleus", "Cytoplasm", "Membrane")
    #: QuPath writes µm when the image is calibrated, px otherwise; 0.5 µm per pixel (20x) as the default
    PIXEL_SIZE_UM = 0.5


class HaloColumns:
    """Indica Labs HALO object data (per-cell CSV of the HighPlex FL / Multiplex IHC modules)."""

    BOX = ("XMin", "XMax", "YMin", "YMax")
    ID = ("Object Id", "Object ID")
    IMAGE = ("Image Location", "Image File Name", "Image")
    REGION = ("Analysis Region",)
    COMPARTMENTS = ("Cell", "Nucleus", "Cytoplasm", "Membrane")
    #: HALO reports bounding boxes in image pixels; 0.5 µm per pixel (20x) as the default
    PIXEL_SIZE_UM = 0.5


#: default µm per pixel of the pixel-based platforms (what a pixel means when a table does not say)
PLATFORM_PIXEL_SIZE_UM = {
    "codex": CodexColumns.PIXEL_SIZE_UM,
    "cycif": CycifColumns.PIXEL_SIZE_UM,
    "mibi": MibiColumns.PIXEL_SIZE_UM,
    "imc": ImcColumns.PIXEL_SIZE_UM,
    "cosmx": CosmxColumns.PIXEL_SIZE_UM,
    "inform": InformColumns.PIXEL_SIZE_UM,
    "qupath": QupathColumns.PIXEL_SIZE_UM,
    "halo": HaloColumns.PIXEL_SIZE_UM,
}
