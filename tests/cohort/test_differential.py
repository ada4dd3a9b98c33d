"""The differential models against statsmodels / scipy called directly and against brute-force formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spatialmultiomics._errors import InputError
from spatialmultiomics.cohort._differential import (
    bh_qvalues,
    differential_table,
    empirical_logit,
    fit_contrasts,
    log_enrichment,
    resolve_method,
)


def _bh_brute(p: np.ndarray) -> np.ndarray:
    """q_i = min over j with p_j >= p_i of p_j m / rank_j (the definition, O(m^2))."""
    m = p.size
    ranks = np.array([np.sum(p <= x) for x in p])
    return np.array([min(1.0, min(p[j] * m / ranks[j] for j in range(m) if p[j] >= p[i])) for i in range(m)])


def test_bh_matches_the_definition_and_keeps_nan() -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(30), rng.random(10) * 1e-3, [0.5, 0.5]])
    np.testing.assert_allclose(bh_qvalues(p), _bh_brute(p), rtol=1e-12)
    with_nan = np.array([0.01, np.nan, 0.04, 0.03])
    q = bh_qvalues(with_nan)
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3]], _bh_brute(with_nan[[0, 2, 3]]))


def test_empirical_logit_and_log_enrichment_values() -> None:
    y, v = empirical_logit(np.array([0, 10]), np.array([100, 100]))
    np.testing.assert_allclose(y, [np.log(0.5 / 100.5), np.log(10.5 / 90.5)])
    np.testing.assert_allclose(v, [1 / 0.5 + 1 / 100.5, 1 / 10.5 + 1 / 90.5])
    y, v = log_enrichment(np.array([20.0]), np.array([9.5]), np.array([25.0]))
    np.testing.assert_allclose(y, [np.log(20.5 / 10.0)])
    np.testing.assert_allclose(v, [25.0 / 100.0])


def _clustered(n_patients: int = 12, n_images: int = 3, effect: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), n_images)
    cond = np.where(groups < n_patients // 2, "ref", "case")
    y = effect * (cond == "case") + rng.normal(0, 0.4, n_patients)[groups] + rng.normal(0, 0.2, groups.size)
    return y, np.full(y.size, 0.01), cond, groups.astype(str)


def test_mixed_model_matches_statsmodels_called_directly() -> None:
    from statsmodels.regression.mixed_linear_model import MixedLM

    y, v, cond, groups = _clustered()
    (row,) = fit_contrasts(y, v, cond, ["ref", "case"], groups=groups, method="mixed")
    X = np.column_stack([np.ones(y.size), (cond == "case").astype(float)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = MixedLM(y, X, groups=groups).fit(reml=True)
    assert row["method"] == "mixed"
    assert row["effect"] == pytest.approx(direct.fe_params[1], rel=1e-8)
    assert row["se"] == pytest.approx(direct.bse_fe[1], rel=1e-8)
    df = 12 - 2  # between-patient degrees of freedom
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(direct.fe_params[1] / direct.bse_fe[1]), df), rel=1e-8)
    half = stats.t.ppf(0.975, df) * direct.bse_fe[1]
    assert row["ci_low"] == pytest.approx(direct.fe_params[1] - half, rel=1e-8)
    assert row["ci_low"] < 0.5 < row["ci_high"]  # the planted effect


def test_wls_matches_brute_force_dersimonian_laird_and_normal_equations() -> None:
    rng = np.random.default_rng(1)
    n = 24
    cond = np.repeat(["ref", "case"], n // 2)
    v = rng.uniform(0.01, 0.2, n)
    y = 0.3 * (cond == "case") + rng.normal(0, np.sqrt(v + 0.05))
    (row,) = fit_contrasts(y, v, cond, ["ref", "case"], method="wls")
    # brute force: DL tau^2 for the two-group meta-regression, then WLS by the normal equations
    X = np.column_stack([np.ones(n), (cond == "case").astype(float)])
    W = np.diag(1 / v)
    P = W - W @ X @ np.linalg.inv(X.T @ W @ X) @ X.T @ W
    Q = y @ P @ y
    tau2 = max(0.0, (Q - (n - 2)) / np.trace(P))
    W2 = np.diag(1 / (v + tau2))
    beta = np.linalg.solve(X.T @ W2 @ X, X.T @ W2 @ y)
    resid = y - X @ beta
    scale = resid @ W2 @ resid / (n - 2)
    se = np.sqrt(scale * np.linalg.inv(X.T @ W2 @ X)[1, 1])
    assert row["effect"] == pytest.approx(beta[1], rel=1e-9)
    assert row["se"] == pytest.approx(se, rel=1e-9)
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(beta[1] / se), n - 2), rel=1e-8)
    # unweighted = ordinary least squares
    (ols,) = fit_contrasts(y, v, cond, ["ref", "case"], method="wls", weights=None)
    assert ols["effect"] == pytest.approx(y[cond == "case"].mean() - y[cond == "ref"].mean())


def test_welch_matches_scipy() -> None:
    y, v, cond, _ = _clustered(n_images=1)
    (row,) = fit_contrasts(y, v, cond, ["ref", "case"], method="welch")
    res = stats.ttest_ind(y[cond == "case"], y[cond == "ref"], equal_var=False)
    assert row["p_value"] == pytest.approx(res.pvalue)
    assert row["ci_low"] == pytest.approx(res.confidence_interval().low)


def test_null_pvalues_are_uniform() -> None:
    """200 features without effect, WLS and mixed: p-values uniform (KS), ~5 % below 0.05."""
    p_wls, p_mixed = [], []
    for i in range(200):
        y, v, cond, groups = _clustered(n_patients=10, n_images=2, effect=0.0, seed=100 + i)
        p_wls.append(fit_contrasts(y[::2], v[::2], cond[::2], ["ref", "case"], method="wls")[0]["p_value"])
        if i < 25:
            p_mixed.append(fit_contrasts(y, v, cond, ["ref", "case"], groups=groups, method="mixed")[0]["p_value"])
    assert stats.kstest(p_wls, "uniform").pvalue > 0.01
    assert 0.01 <= np.mean(np.asarray(p_wls) < 0.05) <= 0.10
    assert stats.kstest(p_mixed, "uniform").pvalue > 0.01


def test_three_conditions_each_against_the_reference_and_too_few_samples() -> None:
    rng = np.random.default_rng(3)
    cond = np.repeat(["ref", "a", "b"], 8)
    y = np.where(cond == "a", 1.0, 0.0) + rng.normal(0, 0.1, cond.size)
    rows = fit_contrasts(y, np.full(y.size, 0.01), cond, ["ref", "a", "b"], method="wls")
    assert rows[0]["effect"] == pytest.approx(1.0, abs=0.15)
    assert rows[0]["p_value"] < 1e-6
    assert abs(rows[1]["effect"]) < 0.15
    few = fit_contrasts(y[:9], np.full(9, 0.01), cond[:9], ["ref", "a", "b"], method="wls")
    assert np.isnan(few[0]["effect"]) and "fewer than 2" in few[0]["note"]


def test_differential_table_counts_samples_that_cannot_estimate() -> None:
    samples = pd.DataFrame(
        {"condition": ["r"] * 4 + ["c"] * 4, "patient": [f"p{i}" for i in range(8)]},
        index=pd.Index([f"s{i}" for i in range(8)], name="sample"),
    )
    rng = np.random.default_rng(4)
    stats_long = pd.DataFrame(
        {
            "sample": samples.index.tolist(),
            "cell_type": "T",
            "y": rng.normal(size=8),
            "v": 0.1,
            "estimable": [True, False, True, True, True, True, False, True],
        }
    )
    table = differential_table(stats_long, samples, ["cell_type"], ["r", "c"], method="wls", weights=None)
    row = table.iloc[0]
    assert (row["n_samples"], row["n_condition"], row["n_reference"], row["n_not_estimable"]) == (6, 3, 3, 2)
    assert list(table.columns[:9]) == [
        "cell_type",
        "condition",
        "reference",
        "effect",
        "ci_low",
        "ci_high",
        "p_value",
        "q_value",
        "n_samples",
    ]


def test_resolve_method() -> None:
    samples = pd.DataFrame({"patient": ["a", "a", "b", "c"]})
    assert resolve_method("auto", samples, has_patient=True, n_levels=2, has_covariates=False) == "mixed"
    assert resolve_method("auto", samples.iloc[1:], has_patient=True, n_levels=2, has_covariates=False) == "wls"
    with pytest.raises(InputError, match="method='mixed' needs patient_key"):
        resolve_method("mixed", samples, has_patient=False, n_levels=2, has_covariates=False)
    with pytest.raises(InputError, match="exactly two conditions"):
        resolve_method("welch", samples, has_patient=False, n_levels=3, has_covariates=False)
