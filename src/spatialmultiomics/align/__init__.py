"""Putting modalities on one frame and one set of cells: id join, cell matching, spot aggregation, registration,
and integration by expression when the modalities were measured on different cells."""

from spatialmultiomics.align._align import align
from spatialmultiomics.align._integrate import IntegrationResult, integrate_unpaired, transfer_labels, transfer_profiles
from spatialmultiomics.align._join import join_by_id
from spatialmultiomics.align._links import LinkedFeatures, LinkTable, load_links, resolve_links
from spatialmultiomics.align._match import MatchResult, match_cells
from spatialmultiomics.align._register import RegistrationResult, fit_transform, register
from spatialmultiomics.align._spots import aggregate_to_spots
from spatialmultiomics.align._transform import Transform

__all__ = [
    "IntegrationResult",
    "LinkTable",
    "LinkedFeatures",
    "MatchResult",
    "RegistrationResult",
    "Transform",
    "aggregate_to_spots",
    "align",
    "fit_transform",
    "integrate_unpaired",
    "join_by_id",
    "load_links",
    "match_cells",
    "register",
    "resolve_links",
    "transfer_labels",
    "transfer_profiles",
]
