"""Cohorts: many samples in conditions, per-sample statistics and differential tests between conditions.

:func:`compare` starts from cells that carry a cell type, a sample and a condition (one table, an AnnData or a
MuData) and returns a :class:`CohortResult`: per-sample proportions, co-localization and niches, and the
differential abundance and co-localization of every condition against the reference, with the sample (or the
patient) as the unit of evidence.
"""

from __future__ import annotations

from spatialmultiomics.cohort._compare import compare
from spatialmultiomics.cohort._joint import CohortRun, cell_table, fit_cohort, run_cohort
from spatialmultiomics.cohort._result import CohortResult
from spatialmultiomics.cohort._sheet import SampleEntry, SampleSheet, is_sample_sheet, read_sample_sheet

__all__ = [
    "CohortResult",
    "CohortRun",
    "SampleEntry",
    "SampleSheet",
    "cell_table",
    "compare",
    "fit_cohort",
    "is_sample_sheet",
    "read_sample_sheet",
    "run_cohort",
]
