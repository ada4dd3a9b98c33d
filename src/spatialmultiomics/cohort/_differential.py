"""Differential tests between conditions with the sample (or the patient) as the unit of evidence.

Every test starts from one number per sample and feature (a cell type's abundance, a pair's co-localization) and
its sampling variance, computed by :mod:`spatialmultiomics.cohort._stats`:

* **abundance** of type t in sample s: the empirical logit ``y = log((n_t + 1/2) / (n - n_t + 1/2))`` of its
  proportion among the n typed cells, with binomial sampling variance ``v = 1/(n_t + 1/2) + 1/(n - n_t + 1/2)``
  (Cox 1970; the logit transform of propeller, Phipson et al. 2022). A difference of y between conditions is a
  log odds ratio; the half counts keep types absent from a sample finite (such a sample is informative: the
  type is rare there), so every sample with a typed cell is estimable.
* **co-localization** of the pair (a, b) in sample s: the log enrichment ``y = log((C + 1/2) / (E + 1/2))`` of the
  observed join count C over its exact expectation E under random relabelling within the sample
  (:mod:`spatialmultiomics.spatial._nhood`), so 0 is random mixing and a difference of y between conditions is a
  log ratio of enrichments. Its sampling variance (delta method) is ``v = Var[C] / (E + 1/2)^2`` with the exact
  join-count variance. Unlike the z-score, y does not grow with the number of cells, so images of different
  sizes measure the same quantity; the sizes enter through v. A sample where either type has fewer than
  ``min_cells`` cells (or E or Var[C] is 0) cannot estimate the pair: it is left out of that test and counted in
  ``n_not_estimable``.

Models, one fit per feature, with dummy-coded conditions (the reference condition is the baseline, so the
coefficient of condition c is the effect of c versus the reference) plus optional sample covariates:

* ``"mixed"`` (the default when some patient has several samples): a linear mixed model with a random intercept
  per patient, ``y_si = x_s' beta + u_patient + e_si`` (statsmodels ``MixedLM``, REML). The Wald statistic of a
  coefficient is referred to a t distribution with ``n_patients - n_fixed`` degrees of freedom (between-patient
  df, the "containment" rule), not to the normal: with 10-30 patients the normal reference is anti-conservative.
  ``MixedLM`` takes no observation weights, so this model is unweighted; the patient intercept absorbs the
  between-patient variation that dominates real cohorts.
* ``"wls"`` (the default otherwise): weighted least squares with inverse-variance weights
  ``w_s = 1 / (v_s + tau^2)``, where tau^2 is the between-sample variance beyond sampling noise, estimated by the
  DerSimonian-Laird moment estimator of the meta-regression (DerSimonian & Laird 1986). This is random-effects
  meta-regression: a small image, whose statistic is noisy, counts less, but no image counts more than its
  biology allows (when the images differ far more than their sampling noise, tau^2 dominates and the weights
  become equal). Standard errors use the residual scale with ``n - p`` df (the Knapp-Hartung adjustment).
  spicyR weights per-image statistics by a fitted function of cell counts for the same reason; the exact
  variance of the statistic makes the fitted trend unnecessary here. ``weights=None`` gives ordinary least
  squares.
* ``"welch"``: Welch's unequal-variance t-test of the two conditions (no covariates, no weights).

Each contrast reports the effect (coefficient), its 95 % confidence interval, the two-sided p-value and the
Benjamini-Hochberg q-value over all features of that contrast (one family per condition versus the reference).

References
----------
Cox DR (1970). The Analysis of Binary Data. Methuen, London (empirical logit).
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin Trials 7:177-188.
Knapp G, Hartung J (2003). Improved tests for a random effects meta-regression with a single covariate. Stat Med
22:2693-2710.
Phipson B et al. (2022). propeller: testing for differences in cell type proportions in single cell data.
Bioinformatics 38:4720-4726.
Canete NP et al. (2022). spicyR: spatial analysis of in situ cytometry data in R. Bioinformatics 38:3099-3105.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import DIFFERENTIAL_TEST_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "METHODS",
    "bh_qvalues",
    "differential_table",
    "empirical_logit",
    "fit_contrasts",
    "log_enrichment",
    "resolve_method",
]

METHODS = ("auto", "mixed", "wls", "welch")
WEIGHTS = ("inverse_variance", None)
PSEUDO = 0.5  # half counts of the empirical logit and of the log enrichment
_ALPHA = 0.05


# ----------------------------------------------------------------------------------------------------------------
# per-sample statistics
# ----------------------------------------------------------------------------------------------------------------
def empirical_logit(count: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical logit of ``count`` out of ``total`` and its binomial sampling variance (arrays, float64)."""
    count = np.asarray(count, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    rest = total - count
    y = np.log((count + PSEUDO) / (rest + PSEUDO))
    v = 1.0 / (count + PSEUDO) + 1.0 / (rest + PSEUDO)
    return y, v


def log_enrichment(observed: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log((C + 1/2) / (E + 1/2))`` and its delta-method variance ``Var[C] / (E + 1/2)^2`` (arrays, float64)."""
    observed = np.asarray(observed, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log((observed + PSEUDO) / (expected + PSEUDO))
        v = variance / (expected + PSEUDO) ** 2
    return y, v


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (statsmodels ``fdr_bh``); NaN p-values stay NaN and are not counted."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


# ----------------------------------------------------------------------------------------------------------------
# one feature
# ----------------------------------------------------------------------------------------------------------------
def _design(
    conditions: np.ndarray, levels: Sequence[str], covariates: pd.DataFrame | None
) -> tuple[np.ndarray, list[str]]:
    """Design matrix: intercept, one dummy per non-reference level present, then the covariates (dummy-coded)."""
    import pandas as pd

    cols = [np.ones(conditions.size)]
    names = ["intercept"]
    for level in levels[1:]:
        cols.append((conditions == level).astype(np.float64))
        names.append(f"condition[{level}]")
    if covariates is not None and covariates.shape[1]:
        cov = pd.get_dummies(covariates, drop_first=True, dtype=np.float64)
        for name in cov.columns:
            cols.append(cov[name].to_numpy(dtype=np.float64))
            names.append(str(name))
    return np.column_stack(cols), names


def _tau2_dl(y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    """DerSimonian-Laird moment estimate of the between-sample variance in a meta-regression on ``X``."""
    w = 1.0 / v
    xtw = X.T * w
    A = xtw @ X
    beta = np.linalg.lstsq(A, xtw @ y, rcond=None)[0]
    r = y - X @ beta
    q = float(np.sum(w * r * r))
    df = y.size - np.linalg.matrix_rank(X)
    trace = float(w.sum() - np.trace(np.linalg.pinv(A) @ ((X.T * (w * w)) @ X)))
    if df <= 0 or trace <= 0:
        return 0.0
    return max(0.0, (q - df) / trace)


def _t_summary(effect: float, se: float, df: float) -> tuple[float, float, float]:
    """Two-sided p-value and 95 % CI of a Wald statistic referred to t(df)."""
    from scipy import stats

    if not (np.isfinite(effect) and np.isfinite(se) and se > 0 and df > 0):
        return np.nan, np.nan, np.nan
    t = effect / se
    p = float(2.0 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - _ALPHA / 2, df)) * se
    return p, effect - half, effect + half


def _nan_rows(n: int, method: str, note: str) -> list[dict[str, Any]]:
    return [
        {
            "effect": np.nan,
            "se": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p_value": np.nan,
            "method": method,
            "note": note,
        }
        for _ in range(n)
    ]


def _fit_wls(y: np.ndarray, v: np.ndarray, X: np.ndarray, n_contrasts: int, weighted: bool) -> list[dict[str, Any]]:
    from statsmodels.regression.linear_model import WLS

    tau2 = _tau2_dl(y, v, X) if weighted else 0.0
    w = 1.0 / (v + tau2) if weighted else np.ones_like(y)
    res = WLS(y, X, weights=w).fit()
    df = float(res.df_resid)
    out = []
    for k in range(1, 1 + n_contrasts):
        effect, se = float(res.params[k]), float(res.bse[k])
        p, lo, hi = _t_summary(effect, se, df)
        out.append(
            {
                "effect": effect,
                "se": se,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": p,
                "method": "wls" if weighted else "ols",
                "note": f"tau2={tau2:.3g}" if weighted else "",
            }
        )
    return out


def _fit_welch(y: np.ndarray, conditions: np.ndarray, levels: Sequence[str]) -> list[dict[str, Any]]:
    from scipy import stats

    a, b = y[conditions == levels[1]], y[conditions == levels[0]]
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(1 - _ALPHA)
    effect = float(a.mean() - b.mean())
    se = float(abs(effect / res.statistic)) if res.statistic else np.nan
    return [
        {
            "effect": effect,
            "se": se,
            "ci_low": float(ci.low),
            "ci_high": float(ci.high),
            "p_value": float(res.pvalue),
            "method": "welch",
            "note": "",
        }
    ]


def _fit_mixed(y: np.ndarray, X: np.ndarray, groups: np.ndarray, n_contrasts: int) -> list[dict[str, Any]]:
    from statsmodels.regression.mixed_linear_model import MixedLM

    n_groups = np.unique(groups).size
    df = float(n_groups - X.shape[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = MixedLM(y, X, groups=groups).fit(reml=True)
    messages = " ".join(str(w.message) for w in caught)
    bse = np.asarray(res.bse_fe, dtype=np.float64)
    if not getattr(res, "converged", True) or not np.all(np.isfinite(bse[1 : 1 + n_contrasts])):
        msg = "mixed model did not converge"
        raise ValueError(msg)
    notes = []
    if "boundary" in messages:
        notes.append("patient variance estimated at 0")
    if "not positive definite" in messages:
        notes.append("Hessian not positive definite")
    out = []
    for k in range(1, 1 + n_contrasts):
        effect, se = float(res.fe_params[k]), float(res.bse_fe[k])
        p, lo, hi = _t_summary(effect, se, df)
        out.append(
            {
                "effect": effect,
                "se": se,
                "ci_low": lo,
                "ci_high": hi,
                "p_value": p,
                "method": "mixed",
                "note": "; ".join(notes),
            }
        )
    return out


def fit_contrasts(
    y: np.ndarray,
    v: np.ndarray,
    conditions: np.ndarray,
    levels: Sequence[str],
    *,
    groups: np.ndarray | None = None,
    covariates: pd.DataFrame | None = None,
    method: str = "wls",
    weights: str | None = "inverse_variance",
) -> list[dict[str, Any]]:
    """Fit one feature and return one dict per non-reference level of ``levels`` (``levels[0]`` = reference).

    Parameters
    ----------
    y, v
        Per-sample statistic and its sampling variance, arrays (n_samples,) (non-estimable samples removed).
    conditions
        Condition of each sample (strings), array (n_samples,).
    levels
        Conditions in model order, the reference first.
    groups
        Patient of each sample (for ``method="mixed"``).
    covariates
        Per-sample covariates (numeric columns enter as they are, others dummy-coded), rows aligned with ``y``.
    method
        ``"mixed"``, ``"wls"`` or ``"welch"`` (resolved already; see :func:`resolve_method`).
    weights
        ``"inverse_variance"`` (WLS weights ``1 / (v + tau^2)``) or None (equal weights).

    Returns
    -------
    list of dicts with ``effect``, ``se``, ``ci_low``, ``ci_high``, ``p_value``, ``method`` and ``note``; NaN
    where a level has fewer than two samples or the model has no residual degrees of freedom.
    """
    n_contrasts = len(levels) - 1
    counts = {lev: int(np.sum(conditions == lev)) for lev in levels}
    if counts[levels[0]] < 2:
        return _nan_rows(n_contrasts, method, f"fewer than 2 estimable samples of {levels[0]!r}")
    # levels with too few samples are dropped from the model (their rows are NaN); the others are still fitted
    keep_levels = [levels[0]] + [lev for lev in levels[1:] if counts[lev] >= 2]
    rows_out = dict.fromkeys(levels[1:])
    if len(keep_levels) > 1:
        sel = np.isin(conditions, keep_levels)
        y_s, v_s, cond_s = y[sel], v[sel], conditions[sel]
        cov_s = None if covariates is None else covariates.loc[sel]
        X, _ = _design(cond_s, keep_levels, cov_s)
        k = len(keep_levels) - 1
        rank = np.linalg.matrix_rank(X)
        use = method
        if use == "mixed" and groups is not None:
            g = groups[sel]
            if np.unique(g).size == g.size:  # every patient has one sample here: the sample-level test
                use = "wls"
        if rank < X.shape[1] or y_s.size - rank < 1:
            fitted = _nan_rows(k, use, "design not estimable (collinear covariates or no residual df)")
        elif use == "welch":
            fitted = _fit_welch(y_s, cond_s, keep_levels) if k == 1 and cov_s is None else None
            if fitted is None:
                msg = "method='welch' compares two conditions without covariates; use method='wls' or 'mixed'."
                raise InputError(msg)
        elif use == "mixed":
            g = groups[sel]
            if np.unique(g).size - X.shape[1] < 1:
                fitted = _nan_rows(k, use, "fewer patients than model terms")
            else:
                try:
                    fitted = _fit_mixed(y_s, X, g, k)
                except (np.linalg.LinAlgError, ValueError) as err:
                    fitted = _fit_patient_means(y_s, cond_s, g, keep_levels, cov_s)
                    for row in fitted:
                        row["note"] = f"{err}; OLS of patient means" if row["note"] == "" else row["note"]
        else:
            fitted = _fit_wls(y_s, v_s, X, k, weights is not None)
        for lev, row in zip(keep_levels[1:], fitted, strict=True):
            rows_out[lev] = row
    out = []
    for lev in levels[1:]:
        row = rows_out[lev]
        out.append(row if row is not None else _nan_rows(1, method, f"fewer than 2 estimable samples of {lev!r}")[0])
    return out


def _fit_patient_means(
    y: np.ndarray, conditions: np.ndarray, groups: np.ndarray, levels: Sequence[str], covariates: pd.DataFrame | None
) -> list[dict[str, Any]]:
    """Fallback of a failed mixed model: OLS on the mean of each (patient, condition)."""
    import pandas as pd

    frame = pd.DataFrame({"y": y, "c": conditions, "g": groups})
    means = frame.groupby(["g", "c"], observed=True, sort=False)["y"].mean().reset_index()
    cond = means["c"].to_numpy()
    X, _ = _design(cond, levels, None)
    if np.linalg.matrix_rank(X) < X.shape[1] or len(means) - X.shape[1] < 1:
        return _nan_rows(len(levels) - 1, "ols_patient_means", "too few patients")
    rows = _fit_wls(means["y"].to_numpy(), np.ones(len(means)), X, len(levels) - 1, False)
    for row in rows:
        row["method"] = "ols_patient_means"
    return rows


# ----------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------
def resolve_method(
    method: str, samples: pd.DataFrame, *, has_patient: bool, n_levels: int, has_covariates: bool
) -> str:
    """The model used for every feature: ``"mixed"`` when some patient has several samples, else ``"wls"``.

    ``method="auto"`` picks as above; an explicit ``"mixed"`` needs a patient column, ``"welch"`` two conditions
    and no covariates.
    """
    repeated = has_patient and bool(samples["patient"].duplicated().any())
    if method == "auto":
        return "mixed" if repeated else "wls"
    if method == "mixed" and not has_patient:
        msg = "method='mixed' needs patient_key (a column with the patient of each sample); or use method='wls'."
        raise InputError(msg)
    if method == "welch" and (n_levels != 2 or has_covariates):
        msg = (
            f"method='welch' compares exactly two conditions without covariates (got {n_levels} conditions"
            f"{' and covariates' if has_covariates else ''}); use method='wls' or 'mixed'."
        )
        raise InputError(msg)
    return method


def differential_table(
    stats: pd.DataFrame,
    samples: pd.DataFrame,
    features: Sequence[str],
    levels: Sequence[str],
    *,
    method: str,
    weights: str | None,
    covariates: Sequence[str] = (),
) -> pd.DataFrame:
    """Test every feature of a long per-sample table; one row per feature and non-reference condition.

    Parameters
    ----------
    stats
        Long table with a ``sample`` column, the ``features`` columns, ``y``, ``v`` and ``estimable`` (bool).
    samples
        The sample table, indexed by sample, with ``condition``, ``patient`` and the ``covariates`` columns.
    features
        Columns of ``stats`` that identify a feature (``["cell_type"]`` or ``["cell_type_a", "cell_type_b"]``).
    levels
        Conditions, the reference first.
    method, weights, covariates
        See :func:`fit_contrasts`; ``method`` already resolved.

    Returns
    -------
    DataFrame with the ``features`` columns, ``condition``, ``reference``, ``effect``, ``ci_low``, ``ci_high``,
    ``p_value``, ``q_value`` (BH within each condition), ``n_samples``, ``n_condition``, ``n_reference``,
    ``n_not_estimable``, ``n_patients``, ``mean_condition``, ``mean_reference``, ``se``, ``method``, ``note``.
    """
    import pandas as pd

    reference = levels[0]
    records = []
    for key, part in stats.groupby(list(features), sort=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        meta = samples.loc[part["sample"].to_numpy()]
        cond_all = meta["condition"].to_numpy(dtype=object).astype(str)
        ok = (
            part["estimable"].to_numpy(dtype=bool)
            & np.isfinite(part["y"].to_numpy())
            & np.isfinite(part["v"].to_numpy())
        )
        y = part["y"].to_numpy(dtype=np.float64)[ok]
        v = part["v"].to_numpy(dtype=np.float64)[ok]
        cond = cond_all[ok]
        groups = meta["patient"].to_numpy(dtype=object).astype(str)[ok]
        cov = meta.loc[ok, list(covariates)].reset_index(drop=True) if covariates else None
        fitted = fit_contrasts(y, v, cond, levels, groups=groups, covariates=cov, method=method, weights=weights)
        for level, fit in zip(levels[1:], fitted, strict=True):
            in_pair = np.isin(cond_all, [level, reference])
            used = np.isin(cond, [level, reference])
            rec = dict(zip(features, key, strict=True))
            rec.update(
                condition=level,
                reference=reference,
                effect=fit["effect"],
                ci_low=fit["ci_low"],
                ci_high=fit["ci_high"],
                p_value=fit["p_value"],
                q_value=np.nan,
                n_samples=int(used.sum()),
                n_condition=int((cond == level).sum()),
                n_reference=int((cond == reference).sum()),
                n_not_estimable=int(in_pair.sum() - used.sum()),
                n_patients=int(np.unique(groups[used]).size),
                mean_condition=float(y[cond == level].mean()) if (cond == level).any() else np.nan,
                mean_reference=float(y[cond == reference].mean()) if (cond == reference).any() else np.nan,
                se=fit["se"],
                method=fit["method"],
                note=fit["note"],
            )
            records.append(rec)
    cols = [
        *features,
        *DIFFERENTIAL_TEST_COLUMNS,
        "n_condition",
        "n_reference",
        "n_not_estimable",
        "n_patients",
        "mean_condition",
        "mean_reference",
        "se",
        "method",
        "note",
    ]
    table = pd.DataFrame.from_records(records, columns=cols)
    for level in levels[1:]:
        sel = (table["condition"] == level).to_numpy()
        table.loc[sel, "q_value"] = bh_qvalues(table.loc[sel, "p_value"].to_numpy(dtype=np.float64))
    return table
