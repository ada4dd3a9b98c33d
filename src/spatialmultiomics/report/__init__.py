"""The HTML report of a run: one self-contained ``report.html`` with results, figures, parameters and timings."""

from __future__ import annotations

from spatialmultiomics.report._cohort import render_cohort_report, write_cohort_report
from spatialmultiomics.report._html import SECTIONS, render_report, report_folder, write_report

__all__ = ["SECTIONS", "render_cohort_report", "render_report", "report_folder", "write_cohort_report", "write_report"]
