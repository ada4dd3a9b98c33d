"""The result folder of a pipeline run: tables, arrays, figures and the report, written atomically.

This is the pipeline layer (it draws figures with :mod:`spatialmultiomics.pl` and writes the report with
:mod:`spatialmultiomics.report`); the data layer below it (:mod:`spatialmultiomics.io`) only provides the atomic
folder and the file writers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.io._write import atomic_output_dir, write_h5mu

__all__ = ["write_results"]


def write_results(
    result: Any, output_dir: str | Path, *, overwrite: bool = False, figures: bool = True, started: float | None = None
) -> Path:
    """Write every result file of a pipeline run into ``output_dir`` atomically.

    Files: ``shared_labels.csv`` (cell_id, x, y, cell_type, confidence, ...), ``co_localization.csv``
    (cell_type_pair, jones_scornecchi_score, cell_type_a, cell_type_b, observed, expected, z_score, p_value,
    q_value), ``niche_composition.csv`` (cell_id, niche_type, composition, n_neighbors, frac_*),
    ``W_transcript.npy`` (n_genes, k), ``W_protein.npy`` (n_proteins, k), ``W_<modality>.npy`` for further
    modalities, ``H_shared.npy`` (k, n_cells), ``nmf_factors.csv`` (cell_id, factor_0 ...),
    ``factor_annotation.csv``, with spots typed from their single cells (:func:`smo.annotate.spot_composition`)
    ``spot_composition.csv`` (spot_id, n_cells, fraction of each type) and ``spot_cells.csv`` (cell_id, spot_id,
    cell_type, confidence), with modalities typed on their own cells (alignment route ``'separate'``)
    ``cell_types_<modality>.csv`` (cell_id, x, y on the reference frame, cell_type, confidence) and
    ``type_concordance_<modality>.csv`` (ref_type, other_type, observed, expected, log2_ratio, z, best),
    ``result.h5mu``, ``figures/`` (every applicable figure as PNG + SVG, see
    :func:`smo.pl.save_figures`) and ``report.html`` (see :func:`smo.report.write_report`).

    Parameters
    ----------
    result
        A :class:`spatialmultiomics.PipelineResult`.
    output_dir
        Destination folder; an existing non-empty folder is replaced only with ``overwrite``.
    overwrite
        Replace an existing non-empty folder.
    figures
        Draw the figures (and embed them in the report); the report is written either way.
    started
        When the run started (``time.time()``): temporary folders of killed runs older than this are removed.

    Returns
    -------
    The output folder.
    """
    from spatialmultiomics.io._csv import write_csv
    from spatialmultiomics.spatial._niches import write_niche_table

    with atomic_output_dir(output_dir, overwrite=overwrite, started=started) as tmp:
        write_csv(result.shared_labels, tmp / "shared_labels.csv")
        result.co_localization.to_csv(tmp / "co_localization.csv", index=False)
        write_niche_table(result.mdata, tmp / "niche_composition.csv", label_key=Keys.CELL_TYPE)
        np.save(tmp / "H_shared.npy", result.H_shared)
        for name, loadings in result.feature_loadings.items():
            fname = {"rna": "W_transcript", "protein": "W_protein"}.get(name, f"W_{name}")
            np.save(tmp / f"{fname}.npy", loadings)
        write_csv(result.nmf_factors, tmp / "nmf_factors.csv")
        result.factor_annotation.to_csv(tmp / "factor_annotation.csv", index=False)
        mdata = result.mdata
        if Keys.COMPOSITION in mdata.obsm:  # spots typed from their single cells
            comp = pd.DataFrame(mdata.obsm[Keys.COMPOSITION]).copy()
            n_cells = mdata.uns[Keys.SPOT_CELLS]["spot_id"].value_counts().reindex(comp.index, fill_value=0)
            comp.insert(0, "n_cells", n_cells.to_numpy(dtype=np.int64))
            comp.to_csv(tmp / "spot_composition.csv", index_label="spot_id")
            write_csv(mdata.uns[Keys.SPOT_CELLS], tmp / "spot_cells.csv")
        for name, apart in mdata.uns.get(Keys.SEPARATE, {}).items():  # modalities typed on their own cells
            write_csv(pd.DataFrame(apart["cells"]), tmp / f"cell_types_{name}.csv")
            if "concordance" in apart:
                pd.DataFrame(apart["concordance"]).to_csv(tmp / f"type_concordance_{name}.csv", index=False)
        _write_figures_and_report(result, tmp, figures=figures)  # first: stores the palette in the .h5mu too
        write_h5mu(result.mdata, tmp / "result.h5mu")
    logger.info("results written to %s", output_dir)
    return Path(output_dir)


def _write_figures_and_report(result: Any, folder: Path, *, figures: bool) -> None:
    """``figures/`` and ``report.html``; a drawing failure is logged and never costs the result files."""
    if figures:
        from spatialmultiomics.pl import save_figures

        save_figures(result.mdata, folder / "figures")
    from spatialmultiomics.report import write_report

    try:
        write_report(result, folder / "report.html", figures_dir=folder / "figures", figures=figures)
    except Exception as err:  # noqa: BLE001 - the numbers matter more than their presentation
        logger.warning("report.html could not be written: %s: %s", type(err).__name__, err)
