"""Spatial statistics: neighbour graphs, niche composition, cellular neighbourhoods and co-localization."""

from __future__ import annotations

from spatialmultiomics.spatial._dask import TiledJoinCounts, colocalization_tiled, join_counts_tiled
from spatialmultiomics.spatial._graph import delaunay_graph, knn_graph, radius_graph, spatial_neighbors
from spatialmultiomics.spatial._nhood import ColocalizationResult, colocalization, colocalization_table
from spatialmultiomics.spatial._niches import niche_composition, niche_table, niches

__all__ = [
    "ColocalizationResult",
    "TiledJoinCounts",
    "colocalization",
    "colocalization_table",
    "colocalization_tiled",
    "delaunay_graph",
    "join_counts_tiled",
    "knn_graph",
    "niche_composition",
    "niche_table",
    "niches",
    "radius_graph",
    "spatial_neighbors",
]
