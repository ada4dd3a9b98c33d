"""``smo.cohort.compare`` on synthetic cohorts with planted effects, input kinds, errors and writing."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import spatial
from spatialmultiomics._errors import InputError
from spatialmultiomics.cohort import CohortResult, compare
from spatialmultiomics.cohort._result import ABUNDANCE_COLUMNS, COLOCALIZATION_COLUMNS
from spatialmultiomics.datasets import synthetic_cohort

KEYS = {"label_key": "cell_type", "sample_key": "sample", "condition_key": "condition", "patient_key": "patient"}


@pytest.fixture(scope="module")
def planted():
    """8 patients per group, one image each; abundance log odds +-1 and two attracting pairs (+0.6) planted."""
    data = synthetic_cohort(n_patients=8, n_images=1, n_cells=1500, pair_effect=0.6, seed=0)
    return data, compare(data.cells, **KEYS, n_niches=0)


def test_planted_abundance_recovered_with_right_sign_and_ci_covering_truth(planted) -> None:
    data, res = planted
    table = res.differential_abundance.merge(
        data.truth_abundance, on=["cell_type", "condition", "reference"], suffixes=("", "_true")
    )
    assert res.params["model"] == "wls" and res.conditions == ["control", "case"]
    for t in ("B cell", "Stroma"):
        row = table.set_index("cell_type").loc[t]
        assert np.sign(row["effect"]) == np.sign(row["effect_true"])
        assert row["ci_low"] <= row["effect_true"] <= row["ci_high"]
        assert row["q_value"] < 0.01
    nulls = table[~table["planted"]]
    assert (nulls["q_value"] > 0.05).all()
    assert (table["n_samples"] == 16).all() and (table["n_patients"] == 16).all()


def test_planted_pairs_recovered(planted) -> None:
    data, res = planted
    table = res.differential_colocalization.merge(data.truth_pairs, on=["cell_type_a", "cell_type_b"])
    hits = table[table["planted"]]
    assert len(hits) == 2
    assert (hits["effect"] > 0).all() and (hits["p_value"] < 0.05).all() and (hits["ci_low"] > 0).all()
    assert (table.loc[~table["planted"], "q_value"] > 0.05).all()


def test_sample_tables_match_spatial_colocalization_run_directly(planted) -> None:
    data, res = planted
    one = data.cells[data.cells["sample"] == data.cells["sample"].iloc[0]]
    adata = ad.AnnData(obs=pd.DataFrame({"t": pd.Categorical(one["cell_type"])}, index=one["cell_id"].to_numpy()))
    adata.obsm["spatial"] = one[["x", "y"]].to_numpy()
    spatial.spatial_neighbors(adata, radius=50.0)
    spatial.colocalization(adata, label_key="t", exclude="Unknown")
    direct = spatial.colocalization_table(adata, label_key="t").set_index(["cell_type_a", "cell_type_b"])
    mine = res.sample_colocalization[res.sample_colocalization["sample"] == one["sample"].iloc[0]]
    mine = mine.set_index(["cell_type_a", "cell_type_b"])
    np.testing.assert_allclose(mine["observed"], direct.loc[mine.index, "observed"])
    np.testing.assert_allclose(mine["z_score"], direct.loc[mine.index, "z_score"], rtol=1e-10)
    np.testing.assert_allclose(
        mine["log_enrichment"], np.log((mine["observed"] + 0.5) / (direct.loc[mine.index, "expected"] + 0.5))
    )
    comp = res.sample_composition[res.sample_composition["sample"] == one["sample"].iloc[0]].set_index("cell_type")
    typed = one[one["cell_type"] != "Unknown"]["cell_type"].value_counts()
    np.testing.assert_allclose(comp.loc[typed.index, "proportion"], typed / typed.sum())


def test_anndata_input_gives_the_same_tables_and_covariates_enter_the_model() -> None:
    data = synthetic_cohort(n_patients=3, n_images=1, n_cells=300, seed=1)
    cells = data.cells
    adata = ad.AnnData(obs=cells.drop(columns=["x", "y"]).set_index("cell_id"))
    adata.obsm["spatial"] = cells[["x", "y"]].to_numpy()
    a = compare(cells, **KEYS, n_niches=0)
    b = compare(adata, **KEYS, n_niches=0)
    pd.testing.assert_frame_equal(a.differential_colocalization, b.differential_colocalization)
    c = compare(cells, **KEYS, covariates=["age"], n_niches=0)
    assert "age" in c.sample_table.columns
    assert not np.allclose(c.differential_abundance["p_value"], a.differential_abundance["p_value"])


def test_three_conditions_each_against_the_reference() -> None:
    cells = synthetic_cohort(n_patients=4, n_images=1, n_cells=300, seed=2).cells.copy()
    third = cells["patient"].isin(["control_P02", "control_P03", "case_P03"])
    cells["condition"] = np.where(third, "other", cells["condition"].astype(str))
    res = compare(cells, **KEYS, reference_condition="control", n_niches=0)
    assert res.conditions == ["control", "case", "other"]
    assert set(res.differential_abundance["condition"]) == {"case", "other"}
    assert (res.differential_abundance["reference"] == "control").all()


def test_pair_absent_from_samples_is_counted_not_dropped() -> None:
    cells = synthetic_cohort(n_patients=3, n_images=1, n_cells=300, seed=3).cells.copy()
    drop = cells["sample"].isin(cells["sample"].unique()[:2]) & (cells["cell_type"] == "B cell")
    cells = cells[~drop]
    res = compare(cells, **KEYS, n_niches=0)
    row = res.differential_colocalization.set_index(["cell_type_a", "cell_type_b"]).loc[("B cell", "CD4 T")]
    assert row["n_not_estimable"] == 2 and row["n_samples"] == 4
    ab = res.differential_abundance.set_index("cell_type").loc["B cell"]
    assert ab["n_not_estimable"] == 0 and ab["n_samples"] == 6  # an absent type is a zero proportion, estimable


@pytest.mark.parametrize(
    ("change", "kwargs", "match"),
    [
        (lambda c: c.drop(columns=["condition"]), {}, r"missing column\(s\) condition_key='condition'"),
        (lambda c: c.assign(condition="case"), {}, "one condition only"),
        (lambda c: c, {"reference_condition": "placebo"}, "reference_condition='placebo' is not a condition"),
        (
            lambda c: c[~c["sample"].isin(c[c["condition"] == "case"]["sample"].unique()[1:])],
            {},
            "fewer than 2 samples in condition",
        ),
        (
            lambda c: c.assign(condition=np.where(np.arange(len(c)) % 2, "case", "control")),
            {},
            "several values within sample",
        ),
        (lambda c: c.assign(x=np.nan), {}, "missing or non-numeric coordinates"),
        (lambda c: c, {"covariates": ["patient"]}, "already patient_key"),
        (lambda c: c, {"method": "welch", "covariates": ["age"]}, "two conditions without covariates"),
    ],
)
def test_bad_input_raises_one_line_input_error(change, kwargs, match) -> None:
    cells = synthetic_cohort(n_patients=2, n_images=1, n_cells=200, seed=4).cells.copy()
    cells["condition"] = cells["condition"].astype(str)
    with pytest.raises(InputError, match=match) as info:
        compare(change(cells), **{**KEYS, "n_niches": 0, **kwargs})
    assert "\n" not in str(info.value)


def test_write_is_atomic_has_exact_columns_and_never_clobbers(tmp_path: Path) -> None:
    res = compare(synthetic_cohort(n_patients=2, n_images=1, n_cells=250, seed=5).cells, **KEYS, n_niches=3)
    assert isinstance(res, CohortResult)
    out = res.write(tmp_path / "out", figures=False)
    ab = pd.read_csv(out / "differential_abundance.csv")
    co = pd.read_csv(out / "differential_colocalization.csv")
    assert tuple(ab.columns[: len(ABUNDANCE_COLUMNS)]) == ABUNDANCE_COLUMNS
    assert tuple(co.columns[: len(COLOCALIZATION_COLUMNS)]) == COLOCALIZATION_COLUMNS
    for name in (
        "sample_composition.csv",
        "sample_colocalization.csv",
        "sample_niches.csv",
        "sample_table.csv",
        "cohort_report.html",
        "params.json",
    ):
        assert (out / name).is_file()
    niches = pd.read_csv(out / "sample_niches.csv")
    np.testing.assert_allclose(niches.groupby("sample")["fraction"].sum(), 1.0)
    with pytest.raises(InputError, match="exists and is not empty"):
        res.write(out)
    res.write(out, overwrite=True, figures=False)
    assert not list(tmp_path.glob(".out.*"))
