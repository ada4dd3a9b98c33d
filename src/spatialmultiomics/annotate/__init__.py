"""Cell-type annotation: name the joint-NMF factors from marker genes and proteins, and type every cell."""

from __future__ import annotations

from spatialmultiomics.annotate._assign import AnnotationResult, annotate, factor_table
from spatialmultiomics.annotate._chunked import ChunkedAnnotation, annotate_chunked
from spatialmultiomics.annotate._markers import MarkerSet, load_markers, merge_markers
from spatialmultiomics.annotate._reference import builtin_markers
from spatialmultiomics.annotate._score import FactorScores, paper_factor_scores
from spatialmultiomics.annotate._spots import SpotComposition, spot_composition
from spatialmultiomics.annotate._unpaired import annotate_measured, type_unpaired

__all__ = [
    "AnnotationResult",
    "ChunkedAnnotation",
    "FactorScores",
    "MarkerSet",
    "SpotComposition",
    "annotate",
    "annotate_chunked",
    "annotate_measured",
    "builtin_markers",
    "factor_table",
    "load_markers",
    "merge_markers",
    "paper_factor_scores",
    "spot_composition",
    "type_unpaired",
]
