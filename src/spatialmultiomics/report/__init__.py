"""The HTML report of a run: one self-contained ``report.html`` with results, figures, parameters and timings."""

from __future__ import annotations

from spatialmultiomics.report._html import SECTIONS, render_report, report_folder, write_report

__all__ = ["SECTIONS", "render_report", "report_folder", "write_report"]
