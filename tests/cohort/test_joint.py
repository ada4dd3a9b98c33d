from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics._demo import score_labels
from spatialmultiomics._errors import InputError
from spatialmultiomics.cohort import fit_cohort, read_sample_sheet, run_cohort
from spatialmultiomics.datasets._tissue import TISSUE_TYPES

#: planted per-slide shifts: (protein factor, protein offset, RNA depth factor)
SHIFTS = ((1.0, 0.0, 1.0), (2.5, 8.0, 0.5), (1.5, 3.0, 2.0))


def _shifted(mdata, i: int, shift: bool):
    """The slide's RNA and protein AnnData, with slide ``i``'s planted shift when ``shift``."""
    a, b, depth = SHIFTS[i] if shift else (1.0, 0.0, 1.0)
    rna, prot = mdata["rna"].copy(), mdata["protein"].copy()
    rng = np.random.default_rng(i)
    X = rna.X.tocsr().copy()
    if depth < 1:  # binomial thinning: the same cells sequenced less deeply
        X.data = rng.binomial(X.data.astype(np.int64), depth).astype(np.float32)
    elif depth > 1:
        X.data = rng.poisson(X.data * depth).astype(np.float32)
    X.eliminate_zeros()
    rna.X = X
    prot.X = (np.asarray(prot.X) * a + b).astype(np.float32)
    return rna, prot


@pytest.fixture(scope="module")
def slides():
    return [smo.datasets.synthetic_tissue(1200, seed=i) for i in range(3)]


def _frame(slides, shift: bool) -> pd.DataFrame:
    pairs = [_shifted(m, i, shift) for i, m in enumerate(slides)]
    return pd.DataFrame(
        {
            "sample": ["s0", "s1", "s2"],
            "condition": ["ctrl", "treated", "ctrl"],
            "patient": ["p0", "p1", "p0"],
            "age": [50, 61, 72],
            "transcripts": [r for r, _ in pairs],
            "proteins": [p for _, p in pairs],
        }
    )


def _truth(slides) -> pd.Series:
    return pd.concat(
        [m.obs["true_cell_type"].astype(str).rename(lambda c, i=i: f"s{i}:{c}") for i, m in enumerate(slides)]
    )


@pytest.fixture(scope="module")
def joint(slides):
    return fit_cohort(_frame(slides, False), n_factors=20, markers=slides[0].uns["markers"], seed=0)


def test_one_model_types_mean_the_same_in_every_slide(slides, joint):
    truth = _truth(slides)
    called = joint.obs["cell_type"].astype(str)
    assert joint.obsm["X_nmf"].shape == (3600, 20)  # one set of factors for all slides
    for s in ("s0", "s1", "s2"):
        rows = joint.obs_names[joint.obs["sample"] == s]
        assert score_labels(truth[rows], called[rows])["macro_f1"] > 0.9
        # the common types (>= 7 % of the cells) are called by their own name in every slide (one reference, one
        # annotation); the rare ones (2.5-3 %, ~35 cells a slide) are in the macro-F1 above
        common = [t for t, (frac, _, _) in TISSUE_TYPES.items() if frac >= 0.07]
        majority = pd.crosstab(truth[rows], called[rows]).idxmax(axis=1)[common]
        assert (majority.index == majority.to_numpy()).all()
    record = joint.uns["cohort"]["batch_correction"]
    assert record["requested"] == "auto" and record["used"] == "quantile"


def test_obs_carries_the_sheet_and_graphs_never_join_two_samples(joint):
    obs = joint.obs
    assert obs["sample"].astype(str).tolist()[:1] == ["s0"] and obs.index[0] == "s0:cell_0000"
    assert (obs.loc[obs["sample"] == "s1", "condition"] == "treated").all()
    assert (obs.loc[obs["sample"] == "s2", "patient"] == "p0").all()
    assert sorted(obs["age"].unique()) == [50, 61, 72]
    assert (obs["fov"].astype(str) == obs["sample"].astype(str)).all()
    # the three slides overlap in space (each in its own frame from 0); the spatial graph still joins none of them
    import anndata as ad

    from spatialmultiomics.spatial import spatial_neighbors

    cells = ad.AnnData(obs=obs[["fov"]].copy(), obsm={"spatial": np.asarray(joint.obsm["spatial"])})
    spatial_neighbors(cells, method="radius", radius=100.0)
    rows, cols = cells.obsp["spatial_connectivities"].nonzero()
    codes = obs["sample"].cat.codes.to_numpy()
    assert rows.size > 3600 and (codes[rows] == codes[cols]).all()


def test_planted_per_slide_shifts_do_not_become_cell_types(slides, joint):
    truth = _truth(slides)
    shifted = fit_cohort(_frame(slides, True), n_factors=20, markers=slides[0].uns["markers"], seed=0)
    # the planted gains are recovered (per channel, relative to slide 0; the cohort reference cancels out)
    factors = shifted.uns["cohort"]["batch_correction"]["quantile"]["protein"]["factor"]
    gains = np.median(factors[1:] / factors[0], axis=1)
    np.testing.assert_allclose(gains, [2.5, 1.5], rtol=0.1)
    plain = joint.uns["cohort"]["batch_correction"]["quantile"]["protein"]["factor"]
    assert plain.shape == (3, 28) and np.median(plain) == pytest.approx(1.0, abs=0.1)
    f1_plain = score_labels(truth, joint.obs["cell_type"])["macro_f1"]
    f1_shift = score_labels(truth, shifted.obs["cell_type"])["macro_f1"]
    assert f1_plain > 0.93
    assert abs(f1_shift - f1_plain) <= 0.02
    # no slide-specific type: every called type is found in every slide
    per_slide = pd.crosstab(shifted.obs["cell_type"].astype(str), shifted.obs["sample"].astype(str))
    assert (per_slide.drop(index="Unknown", errors="ignore") > 0).all().all()


@pytest.fixture(scope="module")
def small_sheet(tmp_path_factory) -> Path:
    """Four slides x 400 cells written as table files, and a sheet naming them (two per condition)."""
    folder = tmp_path_factory.mktemp("cohort_sheet")
    rows = []
    for i in range(4):
        files = smo.datasets.write_tables(smo.datasets.synthetic_tissue(400, seed=20 + i), folder / f"slide{i}")
        rows.append(
            {
                "sample": f"slide{i}",
                "condition": "A" if i % 2 == 0 else "B",
                "transcripts": f"slide{i}/{files['rna'].name}",
                "proteins": f"slide{i}/{files['protein'].name}",
                "proteins_platform": "CODEX",
            }
        )
    pd.DataFrame(rows).to_csv(folder / "samples.csv", index=False)
    return folder / "samples.csv"


def test_harmony_and_no_correction_are_recorded(small_sheet):
    markers = smo.datasets.synthetic_tissue(100).uns["markers"]
    fast = {"n_factors": 12, "markers": markers, "annotation_method": "markers"}
    md = fit_cohort(small_sheet, batch_correction="harmony", **fast)
    record = md.uns["cohort"]["batch_correction"]
    assert record["used"] == "harmony" and record["harmony"]["protein"]["n_channels"] == 27  # DAPI left out
    assert md.obsm["X_harmony_protein"].shape == (1600, 20)
    assert (np.asarray(md["protein"].layers["preprocessed"]) >= 0).all()
    md = fit_cohort(small_sheet, batch_correction="scale", **fast)
    assert md.uns["preprocess"]["per_sample"] and md.uns["cohort"]["batch_correction"]["used"] == "scale"


def test_bad_cohort_input_names_the_sample(slides, small_sheet, tmp_path):
    frame = _frame(slides, False).iloc[:2]
    with pytest.raises(
        InputError, match=r"batch_correction must be one of \['auto', 'quantile', 'scale', 'harmony', 'none'\]"
    ):
        fit_cohort(frame, batch_correction="combat")
    with pytest.raises(InputError, match=r"n_jobs must be a positive integer or -1"):
        fit_cohort(frame, n_jobs=0)
    one_mod = frame.copy()
    one_mod.loc[1, "transcripts"] = None
    with pytest.raises(InputError, match=r"row 2 \(sample 's1'\): modalities \['protein'\], but sample 's0' has"):
        fit_cohort(one_mod, n_factors=12)
    broken = tmp_path / "broken.csv"
    broken.write_text("cell_id,x,y\nc1,0,0\n")
    sheet = pd.read_csv(small_sheet)
    sheet.loc[2, "proteins"] = str(broken)
    sheet.to_csv(small_sheet.parent / "broken_sheet.csv", index=False)
    with pytest.raises(InputError, match=r"broken_sheet\.csv, row 3 \(sample 'slide2'\): "):
        fit_cohort(small_sheet.parent / "broken_sheet.csv", n_factors=12)


def test_run_pipeline_with_samples_runs_the_cohort_in_parallel_like_serial(small_sheet, tmp_path):
    markers = smo.datasets.synthetic_tissue(100).uns["markers"]
    out = tmp_path / "cohort_out"
    with pytest.raises(InputError, match=r"samples= takes every input from the sample sheet; do not also give"):
        smo.run_pipeline(transcript_path="x.csv", samples=small_sheet)
    fast = {"n_factors": 12, "markers": markers, "annotation_method": "markers"}
    serial = fit_cohort(small_sheet, n_jobs=1, **fast)
    run = smo.run_pipeline(samples=small_sheet, output_dir=out, figures=False, n_jobs=2, **fast)
    # two worker processes give the serial model exactly
    assert serial.uns["cohort"]["params"]["n_jobs"] == 1 and run.mdata.uns["cohort"]["params"]["n_jobs"] == 2
    assert serial.obs_names.equals(run.mdata.obs_names)
    np.testing.assert_array_equal(serial.obsm["X_nmf"], run.mdata.obsm["X_nmf"])
    assert (serial.obs["cell_type"] == run.mdata.obs["cell_type"]).all()
    # the comparison and the joint model are written together, atomically
    assert isinstance(run, smo.cohort.CohortRun) and run.output_dir == out
    for name in ("cells.csv", "samples.csv", "cohort_model.json", "result.h5mu", "differential_abundance.csv"):
        assert (out / name).is_file(), name
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 1600 and cells.groupby("sample")["condition"].nunique().max() == 1
    assert run.comparison.sample_table["sample"].tolist() == ["slide0", "slide1", "slide2", "slide3"]
    assert set(run.comparison.differential_abundance["reference"]) == {"A"}
    # an existing result is never clobbered silently, and the refusal comes before any work
    with pytest.raises(InputError, match=r"exists and is not empty"):
        run_cohort(read_sample_sheet(small_sheet), out)
