"""Per-modality preprocessing."""

from spatialmultiomics.pp._channels import NON_MARKER_CHANNELS, non_marker_channels
from spatialmultiomics.pp._chunks import IntensityScaling, fit_intensity_scaling, normalize_chunk
from spatialmultiomics.pp._hvg import highly_variable_genes
from spatialmultiomics.pp._hvg_chunked import HVGStatistics, highly_variable_genes_chunked, select_columns_chunked
from spatialmultiomics.pp._normalize import (
    apply_intensity_scaling,
    normalize_counts,
    scale_intensities,
    stored_intensity_transform,
)
from spatialmultiomics.pp._preprocess import modality_kind, preprocess
from spatialmultiomics.pp._spillover import compensate_spillover
from spatialmultiomics.pp._transforms import PROTEIN_TRANSFORMS

__all__ = [
    "NON_MARKER_CHANNELS",
    "PROTEIN_TRANSFORMS",
    "HVGStatistics",
    "IntensityScaling",
    "apply_intensity_scaling",
    "compensate_spillover",
    "fit_intensity_scaling",
    "highly_variable_genes",
    "highly_variable_genes_chunked",
    "modality_kind",
    "non_marker_channels",
    "normalize_chunk",
    "normalize_counts",
    "preprocess",
    "scale_intensities",
    "select_columns_chunked",
    "stored_intensity_transform",
]
