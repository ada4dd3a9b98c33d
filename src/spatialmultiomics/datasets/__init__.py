"""Built-in data with known truth: the seed paper's benchmark and a realistic synthetic tumour section."""

from __future__ import annotations

from spatialmultiomics.datasets._cohort import SyntheticCohort, synthetic_cohort
from spatialmultiomics.datasets._paper import paper_benchmark
from spatialmultiomics.datasets._spots import SpotData, hex_lattice, visium_like
from spatialmultiomics.datasets._tables import write_tables
from spatialmultiomics.datasets._tissue import synthetic_tissue

__all__ = [
    "SpotData",
    "SyntheticCohort",
    "hex_lattice",
    "paper_benchmark",
    "synthetic_cohort",
    "synthetic_tissue",
    "visium_like",
    "write_tables",
]
