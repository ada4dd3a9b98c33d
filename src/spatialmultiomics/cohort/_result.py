"""The result of a cohort comparison: per-sample tables, differential tables, and how they are written."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialmultiomics._keys import ABUNDANCE_COLUMNS, COLOCALIZATION_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ABUNDANCE_COLUMNS", "COLOCALIZATION_COLUMNS", "FILES", "CohortResult"]

#: attribute -> file name written by :meth:`CohortResult.write`
FILES = {
    "sample_table": "sample_table.csv",
    "sample_composition": "sample_composition.csv",
    "sample_colocalization": "sample_colocalization.csv",
    "sample_niches": "sample_niches.csv",
    "differential_abundance": "differential_abundance.csv",
    "differential_colocalization": "differential_colocalization.csv",
}


@dataclass(frozen=True)
class CohortResult:
    """Per-sample statistics and differential tests of a cohort (see :func:`spatialmultiomics.cohort.compare`).

    Attributes
    ----------
    sample_table
        One row per sample: ``sample``, ``condition``, ``patient``, ``n_cells`` (all cells), ``n_typed`` (cells
        with a reported type), then the covariates.
    sample_composition
        One row per (sample, type): ``sample``, ``condition``, ``patient``, ``cell_type``, ``n_cells``,
        ``n_typed``, ``proportion``, ``logit`` (the empirical logit tested) and ``logit_var``.
    sample_colocalization
        One row per (sample, unordered pair a <= b): counts, exact expectation and variance, score, z-score,
        ``log_enrichment`` (the statistic tested), its variance and ``estimable``.
    sample_niches
        One row per (sample, cellular neighbourhood): ``n_cells`` and ``fraction`` of the sample's cells (empty
        when niches were not computed).
    differential_abundance
        One row per (type, condition versus the reference): ``cell_type, condition, reference, effect, ci_low,
        ci_high, p_value, q_value, n_samples``, then ``n_condition``, ``n_reference``, ``n_not_estimable``,
        ``n_patients``, ``mean_condition``, ``mean_reference`` (mean logit per group), ``proportion_condition``,
        ``proportion_reference`` (mean proportion per group), ``se``, ``method`` and ``note``. ``effect`` is the
        log odds ratio of the type's proportion, condition versus reference.
    differential_colocalization
        One row per (unordered pair, condition versus the reference): ``cell_type_a, cell_type_b, condition,
        reference, effect, ci_low, ci_high, p_value, q_value, n_samples`` then the same extra columns (without
        the proportions). ``effect`` is the difference of log enrichment (log of the ratio of observed /
        expected neighbour pairs), condition versus reference.
    niche_centroids
        Mean neighbour composition of each cellular neighbourhood (niches x types), or None.
    params
        Arguments used, the reference condition and model chosen, the package version.
    """

    sample_table: pd.DataFrame
    sample_composition: pd.DataFrame
    sample_colocalization: pd.DataFrame
    sample_niches: pd.DataFrame
    differential_abundance: pd.DataFrame
    differential_colocalization: pd.DataFrame
    niche_centroids: pd.DataFrame | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def conditions(self) -> list[str]:
        """The conditions, the reference first."""
        return [str(c) for c in self.params.get("conditions", [])]

    @property
    def cell_types(self) -> list[str]:
        """The reported cell types, in category order."""
        return [str(c) for c in self.params.get("cell_types", [])]

    def significant(self, table: str = "colocalization", *, q: float = 0.05) -> pd.DataFrame:
        """Rows of a differential table with ``q_value < q``, strongest first.

        Parameters
        ----------
        table
            ``"colocalization"`` or ``"abundance"``.
        q
            Benjamini-Hochberg threshold.

        Returns
        -------
        The selected rows, sorted by p-value.
        """
        frame = self.differential_colocalization if table == "colocalization" else self.differential_abundance
        return frame[frame["q_value"] < q].sort_values("p_value")

    def write(self, output_dir: str | Path, *, overwrite: bool = False, figures: bool = True) -> Path:
        """Write every table, ``params.json``, ``figures/`` and ``cohort_report.html`` into ``output_dir``.

        The files are written into a temporary folder beside ``output_dir`` and moved into place at the end, so a
        failure leaves no partial result; an existing non-empty ``output_dir`` is refused unless ``overwrite``.

        Parameters
        ----------
        output_dir
            Result folder.
        overwrite
            Replace an existing non-empty folder.
        figures
            Draw the figures (PNG and SVG) and embed them in the report.

        Returns
        -------
        The result folder. Files: ``sample_table.csv``, ``sample_composition.csv``, ``sample_colocalization.csv``,
        ``sample_niches.csv``, ``differential_abundance.csv``, ``differential_colocalization.csv``,
        ``params.json``, ``figures/*.png|svg`` and ``cohort_report.html``.
        """
        from spatialmultiomics.io._write import atomic_output_dir
        from spatialmultiomics.report._cohort import write_cohort_report

        out = Path(output_dir)
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            for attr, name in FILES.items():
                getattr(self, attr).to_csv(tmp / name, index=False)
            if self.niche_centroids is not None:
                self.niche_centroids.to_csv(tmp / "niche_centroids.csv")
            (tmp / "params.json").write_text(json.dumps(self.params, indent=2, default=str), encoding="utf-8")
            fig_dir = None
            if figures:
                from spatialmultiomics.pl._cohort import save_cohort_figures

                fig_dir = tmp / "figures"
                save_cohort_figures(self, fig_dir)
            write_cohort_report(self, tmp / "cohort_report.html", figures_dir=fig_dir, figures=figures)
        return out
