"""Plots: each reads one stored result and draws it (matplotlib Figure/Axes, no pyplot needed)."""

from spatialmultiomics.pl._align import alignment_overlay
from spatialmultiomics.pl._cohort import (
    cohort_colocalization,
    cohort_composition,
    cohort_forest,
    cohort_volcano,
    save_cohort_figures,
)
from spatialmultiomics.pl._factors import factor_loadings, factor_maps, k_selection
from spatialmultiomics.pl._nhood import colocalization
from spatialmultiomics.pl._save import figure_specs, iter_figures, save_figures
from spatialmultiomics.pl._spatial import niches, spatial_cell_types, spot_composition
from spatialmultiomics.pl._utils import cell_type_colors

__all__ = [
    "alignment_overlay",
    "cell_type_colors",
    "cohort_colocalization",
    "cohort_composition",
    "cohort_forest",
    "cohort_volcano",
    "colocalization",
    "factor_loadings",
    "factor_maps",
    "figure_specs",
    "iter_figures",
    "k_selection",
    "niches",
    "save_cohort_figures",
    "save_figures",
    "spatial_cell_types",
    "spot_composition",
]
