"""Putting modalities on one frame and one set of cells: id join, cell matching, spot aggregation, registration."""

from spatialmultiomics.align._align import align
from spatialmultiomics.align._join import join_by_id
from spatialmultiomics.align._match import MatchResult, match_cells
from spatialmultiomics.align._register import RegistrationResult, fit_transform, register
from spatialmultiomics.align._spots import aggregate_to_spots
from spatialmultiomics.align._transform import Transform

__all__ = [
    "MatchResult",
    "RegistrationResult",
    "Transform",
    "aggregate_to_spots",
    "align",
    "fit_transform",
    "join_by_id",
    "match_cells",
    "register",
]
