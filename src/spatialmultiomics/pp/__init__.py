"""Per-modality preprocessing."""

from spatialmultiomics.pp._channels import NON_MARKER_CHANNELS, non_marker_channels
from spatialmultiomics.pp._hvg import highly_variable_genes
from spatialmultiomics.pp._normalize import apply_intensity_scaling, normalize_counts, scale_intensities
from spatialmultiomics.pp._preprocess import modality_kind, preprocess

__all__ = [
    "NON_MARKER_CHANNELS",
    "apply_intensity_scaling",
    "highly_variable_genes",
    "modality_kind",
    "non_marker_channels",
    "normalize_counts",
    "preprocess",
    "scale_intensities",
]
