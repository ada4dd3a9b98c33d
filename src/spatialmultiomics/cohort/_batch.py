"""Batch correction between the samples of a cohort, and the measurement that chose the default.

Corrections (``batch_correction=`` of :func:`spatialmultiomics.cohort.fit_cohort`)
    ``'quantile'``
        Per-sample affine alignment of every intensity channel in raw units (:func:`quantile_align`): the
        sample's quantiles (5th to 99.5th percentile) are regressed on the cohort's (the median over the samples
        of each quantile), ``q_sample = a + b q_cohort``, and the channel is mapped back, ``(x - a) / b``; then one
        preprocessing (transform and channel scaling) is fitted on all cells together. It is exact for the usual
        imaging batch effect (a multiplicative gain and a background offset per slide and channel) when the
        samples hold the same mixture of cells, and it estimates two numbers per channel from the whole
        distribution, so it is steadier than per-sample percentiles. Counts are normalised per cell (library size),
        which already removes sequencing depth.
    ``'scale'``
        Per-sample normalisation: every sample is preprocessed on its own cells (:func:`smo.pp.preprocess` in its
        worker), so each intensity channel is transformed and robust-scaled (1st percentile to 0, 99th to 1) per
        sample.
    ``'harmony'``
        Preprocessing fitted on all cells together, then Harmony (Korsunsky et al. 2019, Nat Methods 16, 1289;
        the ``harmonypy`` package) on the principal components of each intensity modality's preprocessed
        channels, with the sample as the batch; the correction (corrected minus original components) is carried
        back to the channels through the components' loadings, ``X' = X + (Z_harmony - Z) V^T``, clipped at 0, so
        the factorization and the cluster annotation both see corrected values. The corrected components are kept
        in ``obsm['X_harmony_<modality>']``. Count modalities are not corrected (normalised per cell; correcting
        them would densify the gene matrix).
    ``None`` / ``'none'``
        Preprocessing fitted on all cells together, nothing else: the baseline.
    ``'auto'`` (default)
        ``'quantile'``, chosen by measurement (``benchmarks/bench_cohort_batch.py``, numbers in
        ``benchmarks/RESULTS.md``): four synthetic slides (12 known types) with planted per-slide shifts (protein
        intensities x1.5-3 plus offsets up to 8, RNA depth x0.5-2); 1,500 cells a slide over three data seeds with
        equal compositions and with 70 % of the T and B cells removed from half of the slides, and 3,000 cells a
        slide over two seeds. Shifted cohort against the clean run (no shift, no correction), cell-type macro-F1:
        ``'quantile'`` within 0.02 in 8 of 8 cohorts (worst -0.006), ``'scale'`` 7 of 8 (worst -0.047),
        ``'harmony'`` 7 of 8 (worst -0.022), no correction 4 of 8 (worst -0.031). Mean F1 of the shifted
        cohorts at 1,500 cells: 0.966, 0.953, 0.954, 0.948. The typing of 6,000-12,000 cells itself moves by about
        +-0.02 between runs on the same cells, the size of the target, so these are tendencies over seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["BATCH_CORRECTIONS", "harmony_correct", "quantile_align", "resolve_batch_correction"]

#: accepted values of ``batch_correction`` (None is ``'none'``)
BATCH_CORRECTIONS = ("auto", "quantile", "scale", "harmony", "none")
#: what ``'auto'`` means (see the module notes for the measurement)
AUTO_CORRECTION = "quantile"


def resolve_batch_correction(value: Any) -> tuple[str, str]:
    """Return ``(requested, used)``: the validated request and the correction it stands for."""
    if value is None:
        return "none", "none"
    if not isinstance(value, str) or value.strip().lower() not in BATCH_CORRECTIONS:
        msg = f"batch_correction must be one of {list(BATCH_CORRECTIONS)} or None, got {value!r}."
        raise InputError(msg)
    requested = value.strip().lower()
    return requested, AUTO_CORRECTION if requested == "auto" else requested


def _principal_components(X: np.ndarray, n_pcs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, top ``n_pcs`` loadings (p, d) and scores (n, d) of ``X`` (n, p) from its p x p covariance."""
    mean = X.mean(axis=0)
    C = X.T @ X / X.shape[0] - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(C)
    order = np.argsort(vals)[::-1][:n_pcs]
    V = vecs[:, order]
    # a fixed sign per component (largest loading positive), so the scores do not depend on the solver
    V *= np.sign(V[np.abs(V).argmax(axis=0), np.arange(V.shape[1])])
    return mean, V, (X - mean) @ V


def harmony_correct(
    mdata: MuData,
    *,
    batch_key: str = "sample",
    modalities: list[str] | None = None,
    n_pcs: int = 20,
    theta: float = 2.0,
    seed: int = 0,
    n_jobs: int = 1,
) -> dict[str, dict[str, Any]]:
    """Harmony on the principal components of each intensity modality, carried back to its channels (in place).

    Parameters
    ----------
    mdata
        Preprocessed MuData (``layers['preprocessed']``) with ``obs[batch_key]``.
    batch_key
        Column of ``mdata.obs`` naming each cell's batch (the sample).
    modalities
        Modalities to correct; default every intensity modality.
    n_pcs
        Components corrected (at most the number of channels used).
    theta
        Harmony's diversity penalty.
    seed
        Harmony's random state.
    n_jobs
        Harmony's threads (its result does not depend on them).

    Returns
    -------
    Per modality: ``n_pcs``, ``n_channels`` and the mean absolute change of the corrected channels. Writes the
    corrected values into ``layers['preprocessed']`` (channels of ``var['highly_variable']``) and the corrected
    components into ``mdata.obsm['X_harmony_<modality>']``.
    """
    import logging

    import harmonypy
    import pandas as pd

    from spatialmultiomics.pp import modality_kind

    if batch_key not in mdata.obs:
        msg = f"batch_key={batch_key!r} is not a column of mdata.obs."
        raise InputError(msg)
    batches = pd.DataFrame({"batch": mdata.obs[batch_key].astype(str).to_numpy()})
    if modalities is None:
        modalities = [m for m in mdata.mod if modality_kind(mdata, m) == "intensity"]
    report: dict[str, dict[str, Any]] = {}
    if batches["batch"].nunique() < 2:
        return report
    for name in modalities:
        adata = mdata.mod[name]
        layer = adata.layers[Keys.PREPROCESSED]
        cols = (
            np.flatnonzero(adata.var[Keys.HVG].to_numpy(dtype=bool))
            if Keys.HVG in adata.var
            else np.arange(adata.n_vars)
        )
        if cols.size < 2:
            continue
        dense = layer.toarray() if sp.issparse(layer) else np.asarray(layer)
        X = dense[:, cols].astype(np.float64)
        d = int(min(n_pcs, cols.size))
        _, V, Z = _principal_components(X, d)
        level = logging.getLogger("harmonypy").level
        logging.getLogger("harmonypy").setLevel(logging.WARNING)
        try:
            ho = harmonypy.run_harmony(
                Z, batches, "batch", theta=theta, random_state=seed, verbose=False, ncores=max(int(n_jobs), 1)
            )
        finally:
            logging.getLogger("harmonypy").setLevel(level)
        Zc = np.asarray(ho.Z_corr, dtype=np.float64)
        if Zc.shape != Z.shape:
            Zc = Zc.T
        Xc = np.maximum(X + (Zc - Z) @ V.T, 0.0)
        report[name] = {"n_pcs": d, "n_channels": int(cols.size), "mean_abs_change": float(np.abs(Xc - X).mean())}
        dense = dense.astype(np.float32, copy=True)
        dense[:, cols] = Xc.astype(np.float32)
        adata.layers[Keys.PREPROCESSED] = dense
        mdata.obsm[f"X_harmony_{name}"] = Zc.astype(np.float32)
        logger.info(
            "harmony: %s corrected on %d components (mean |change| %.3g)", name, d, report[name]["mean_abs_change"]
        )
    return report


#: quantiles (percent) matched between samples by :func:`quantile_align`
ALIGN_QUANTILES = np.array([5.0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97.5, 99, 99.5])


def quantile_align(
    mdata: MuData, *, batch_key: str = "sample", modalities: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per-sample affine alignment of every intensity channel onto the cohort, in raw units (in place).

    For each sample and channel, the sample's quantiles (:data:`ALIGN_QUANTILES`) are regressed on the reference
    quantiles (the median over the samples of each quantile, so every sample counts the same) by least squares,
    ``q_sample = a + b q_reference``, and the channel is mapped back, ``x' = max((x - a) / b, 0)``: a slide whose
    intensities were multiplied by ``b`` and offset by ``a`` is restored exactly when the samples hold the same
    mixture of cells. The measured values move to ``layers['raw']``.

    Returns
    -------
    Per modality: the fitted offsets and factors, arrays (n_samples, n_channels), and the sample order.
    """
    from spatialmultiomics.pp import modality_kind

    if batch_key not in mdata.obs:
        msg = f"batch_key={batch_key!r} is not a column of mdata.obs."
        raise InputError(msg)
    batch = mdata.obs[batch_key].astype(str).to_numpy()
    names = list(dict.fromkeys(batch))
    if modalities is None:
        modalities = [m for m in mdata.mod if modality_kind(mdata, m) == "intensity"]
    report: dict[str, dict[str, Any]] = {}
    for name in modalities:
        adata = mdata.mod[name]
        X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
        X = X.astype(np.float64)
        rows = [np.flatnonzero(batch == s) for s in names]
        Q = np.stack([np.percentile(X[r], ALIGN_QUANTILES, axis=0) for r in rows])  # (samples, quantiles, channels)
        ref = np.median(Q, axis=0)
        rc = ref - ref.mean(axis=0)
        denom = np.maximum((rc**2).sum(axis=0), 1e-12)
        b = ((Q - Q.mean(axis=1, keepdims=True)) * rc).sum(axis=1) / denom  # (samples, channels)
        b = np.where(np.isfinite(b) & (b > 1e-3), b, 1.0)
        a = Q.mean(axis=1) - b * ref.mean(axis=0)
        out = np.empty_like(X, dtype=np.float32)
        for k, r in enumerate(rows):
            out[r] = np.maximum((X[r] - a[k]) / b[k], 0.0)
        adata.layers[Keys.RAW] = adata.X
        adata.X = out
        report[name] = {"samples": names, "offset": a.astype(np.float32), "factor": b.astype(np.float32)}
    return report
