"""The built-in demo: generate data with known truth, write it as the seed's tables, run the pipeline from those
files, and score the labels against the truth."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spatialmultiomics._validate import check_option

if TYPE_CHECKING:
    from spatialmultiomics._pipeline import PipelineResult

__all__ = ["DEMO_FACTORS", "run_demo", "score_labels"]

#: default number of factors per demo dataset
DEMO_FACTORS = {"paper": 4, "tissue": 20}


def score_labels(truth: pd.Series, predicted: pd.Series) -> dict[str, float]:
    """Accuracy and macro-F1 (over the true types) of ``predicted`` against ``truth``, aligned on the index."""
    from sklearn.metrics import f1_score

    truth = truth.astype(str)
    pred = predicted.astype(str).reindex(truth.index).fillna("Unknown")
    labels = sorted(truth.unique())
    return {
        "accuracy": float(np.mean(truth.to_numpy() == pred.to_numpy())),
        "macro_f1": float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)),
    }


def run_demo(
    *,
    dataset: str = "tissue",
    output_dir: str | Path | None = "demo_results",
    n_factors: int | None = None,
    seed: int = 0,
    save_inputs: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    figures: bool = True,
    backend: str = "numpy",
    scheduler: Any = None,
    device: str | None = None,
    n_jobs: int | None = None,
) -> tuple[PipelineResult, dict[str, float]]:
    """Run the pipeline on built-in data from its table files; return the result and its accuracy vs the truth.

    ``backend``, ``scheduler``, ``device`` and ``n_jobs`` choose the engine as in :func:`smo.run_pipeline`.
    """
    from spatialmultiomics import datasets, io
    from spatialmultiomics._pipeline import run_pipeline
    from spatialmultiomics._results import write_results

    dataset = check_option(dataset, DEMO_FACTORS, name="dataset")
    started = time.time()
    if output_dir is not None:
        io.check_output_dir(output_dir, overwrite=overwrite)
    mdata = datasets.paper_benchmark(seed=seed) if dataset == "paper" else datasets.synthetic_tissue(seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix="smo-demo-"))
    try:
        files = datasets.write_tables(mdata, tmp)
        result = run_pipeline(
            transcript_path=files["rna"],
            protein_path=files["protein"],
            platform_tx="Visium" if dataset == "paper" else "generic",
            platform_prot="CODEX",
            n_factors=n_factors or DEMO_FACTORS[dataset],
            markers=files["markers"],
            seed=seed,
            progress=progress,
            backend=backend,
            scheduler=scheduler,
            device=device,
            n_jobs=n_jobs,
        )
        if save_inputs is not None:
            Path(save_inputs).mkdir(parents=True, exist_ok=True)
            for f in files.values():
                shutil.copy2(f, Path(save_inputs) / Path(f).name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    truth = mdata.obs["true_cell_type"].astype(str)
    pred = result.shared_labels.set_index("cell_id")["cell_type"]
    scores = score_labels(truth, pred)
    result.mdata.uns["demo"] = {"dataset": dataset, **scores}
    if output_dir is not None:
        # written once, after scoring, so report.html shows the accuracy against the known truth
        write_results(result, output_dir, overwrite=overwrite, figures=figures, started=started)
        result.output_dir = Path(output_dir)
        (Path(output_dir) / "demo_scores.json").write_text(json.dumps({"dataset": dataset, **scores}, indent=2))
    return result, scores
