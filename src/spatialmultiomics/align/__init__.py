"""Putting modalities on one set of cells."""

from spatialmultiomics.align._join import join_by_id

__all__ = ["join_by_id"]
