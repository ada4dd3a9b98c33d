"""Per-modality preprocessing."""

from spatialmultiomics.pp._hvg import highly_variable_genes
from spatialmultiomics.pp._normalize import normalize_counts, scale_intensities
from spatialmultiomics.pp._preprocess import modality_kind, preprocess

__all__ = ["highly_variable_genes", "modality_kind", "normalize_counts", "preprocess", "scale_intensities"]
