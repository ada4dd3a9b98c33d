from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics import InputError, Keys
from spatialmultiomics._demo import score_labels
from spatialmultiomics._mudata import read_h5mu
from spatialmultiomics._warnings import ConvergenceWarning


@pytest.fixture
def paper_tables(tmp_path: Path) -> tuple[dict[str, Path], pd.Series]:
    mdata = smo.datasets.paper_benchmark(seed=0)
    files = smo.datasets.write_tables(mdata, tmp_path / "inputs")
    return files, mdata.obs["true_cell_type"].astype(str)


def test_seed_api_verbatim_writes_every_file(paper_tables, tmp_path: Path) -> None:
    from SpatialMultiOmics import run_pipeline

    files, truth = paper_tables
    out = tmp_path / "results"
    result = run_pipeline(
        transcript_path=str(files["rna"]),
        protein_path=str(files["protein"]),
        platform_tx="Visium",
        platform_prot="CODEX",
        n_factors=4,
        radius=50.0,
        output_dir=str(out),
        markers=files["markers"],
    )
    n = len(truth)
    assert result.W_transcript.shape == (500, 4)
    assert result.W_protein.shape == (10, 4)
    assert result.H_shared.shape == (4, n)
    assert set(truth) <= set(result.cell_types) <= {*truth, "Unknown"}
    # measured over seeds 0-9: 0.985-1.000 (mean 0.995), the same with or without the HistoneH3 channel
    assert score_labels(truth, result.shared_labels.set_index("cell_id")["cell_type"])["accuracy"] >= 0.98
    expected = {
        "shared_labels.csv",
        "co_localization.csv",
        "niche_composition.csv",
        "W_transcript.npy",
        "W_protein.npy",
        "H_shared.npy",
        "nmf_factors.csv",
        "factor_annotation.csv",
        "result.h5mu",
    }
    assert expected <= {p.name for p in out.iterdir()}
    labels = pd.read_csv(out / "shared_labels.csv")
    assert list(labels.columns[:4]) == ["cell_id", "x", "y", "cell_type"]
    assert list(labels["cell_id"]) == list(truth.index)
    coloc = pd.read_csv(out / "co_localization.csv")
    assert list(coloc.columns[:2]) == ["cell_type_pair", "jones_scornecchi_score"]
    typed = [c for c in result.cell_types if c != "Unknown"]  # 'Unknown' is no call: not a co-localization pair
    assert len(coloc) == len(typed) ** 2
    niche = pd.read_csv(out / "niche_composition.csv")
    assert list(niche.columns[:4]) == ["cell_id", "niche_type", "composition", "n_neighbors"]
    assert json.loads(niche["composition"].iloc[0]) is not None
    assert np.load(out / "W_transcript.npy").shape == (500, 4)
    assert np.load(out / "W_protein.npy").shape == (10, 4)
    np.testing.assert_array_equal(np.load(out / "H_shared.npy"), result.H_shared)
    factors = pd.read_csv(out / "nmf_factors.csv")
    assert list(factors.columns) == ["cell_id", "factor_0", "factor_1", "factor_2", "factor_3"]
    back = read_h5mu(out / "result.h5mu")
    assert list(back.obs_names) == list(truth.index)
    assert (back.obs[Keys.CELL_TYPE].astype(str).to_numpy() == result.shared_labels["cell_type"].to_numpy()).all()
    np.testing.assert_allclose(back.obsm[Keys.NMF], result.mdata.obsm[Keys.NMF])
    assert "zscore" in back.uns[Keys.nhood()]
    assert "count" in back.uns[Keys.nhood()]


def test_deterministic_and_existing_folder_protected(paper_tables, tmp_path: Path) -> None:
    files, _ = paper_tables
    kw = {
        "transcript_path": files["rna"],
        "protein_path": files["protein"],
        "n_factors": 4,
        "markers": files["markers"],
        "seed": 3,
    }
    a = smo.run_pipeline(**kw, output_dir=tmp_path / "r")
    b = smo.run_pipeline(**kw)
    np.testing.assert_array_equal(a.H_shared, b.H_shared)
    pd.testing.assert_frame_equal(a.co_localization, b.co_localization)
    with pytest.raises(InputError, match="exists and is not empty"):
        smo.run_pipeline(**kw, output_dir=tmp_path / "r")
    smo.run_pipeline(**kw, output_dir=tmp_path / "r", overwrite=True)


def test_three_modalities(tmp_path: Path) -> None:
    mdata = smo.datasets.paper_benchmark(seed=1)
    rng = np.random.default_rng(0)
    truth = mdata.obs["true_cell_type"].astype(str)
    codes = pd.Categorical(truth).codes
    met = rng.gamma(2.0, 0.5, (mdata.n_obs, 6)).astype(np.float32)
    met[np.arange(mdata.n_obs), codes] += 8.0  # one metabolite per type
    import anndata as ad

    met_ad = ad.AnnData(met, obs=pd.DataFrame(index=mdata.obs_names))
    met_ad.var_names = [f"m/z_{i}" for i in range(6)]
    met_ad.obsm[Keys.SPATIAL] = np.asarray(mdata.obsm[Keys.SPATIAL])
    res = smo.run_pipeline(
        mdata["rna"],
        mdata["protein"],
        n_factors=4,
        markers=dict(mdata.uns["markers"]),
        extra_modalities={"metabolite": met_ad},
        output_dir=tmp_path / "r",
    )
    assert set(res.feature_loadings) == {"rna", "protein", "metabolite"}
    assert res.feature_loadings["metabolite"].shape == (6, 4)
    assert np.load(tmp_path / "r" / "W_metabolite.npy").shape == (6, 4)
    assert score_labels(truth, res.shared_labels.set_index("cell_id")["cell_type"])["accuracy"] >= 0.99


def test_platform_checks() -> None:
    with pytest.raises(InputError, match=r"platform_tx='CODEX' is a protein platform"):
        smo.run_pipeline("a.csv", "b.csv", platform_tx="CODEX")
    with pytest.raises(InputError, match=r"platform_prot='Foo' is not a known platform"):
        smo.run_pipeline("a.csv", "b.csv", platform_prot="Foo")
    with pytest.raises(InputError, match=r"radius must be a finite number > 0, got 0"):
        smo.run_pipeline("a.csv", "b.csv", radius=0)


def test_h5mu_input_holds_every_modality(tmp_path: Path) -> None:
    from spatialmultiomics._mudata import write_h5mu

    mdata = smo.datasets.paper_benchmark(seed=2)
    truth = mdata.obs["true_cell_type"].astype(str)
    del mdata["protein"].obsm[Keys.SPATIAL]  # coordinates then come from the joint obsm
    write_h5mu(mdata, tmp_path / "in.h5mu")
    res = smo.run_pipeline(tmp_path / "in.h5mu", None, n_factors=4, markers=dict(mdata.uns["markers"]))
    assert set(res.feature_loadings) == {"rna", "protein"}
    assert res.H_shared.shape == (4, 200)
    assert score_labels(truth, res.shared_labels.set_index("cell_id")["cell_type"])["accuracy"] >= 0.98


def test_unknown_cells_stay_in_the_graph_but_form_no_colocalization_pair(caplog) -> None:
    mdata = smo.datasets.paper_benchmark(seed=0)
    markers = dict(mdata.uns["markers"])
    del markers["T cells"]  # the 50 T cells get no call: 'Unknown'
    with caplog.at_level("WARNING", logger="spatialmultiomics"):
        res = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=4, markers=markers)
    labels = res.shared_labels.set_index("cell_id")["cell_type"].reindex(mdata.obs_names)
    truth = mdata.obs["true_cell_type"].astype(str)
    unknown = labels == "Unknown"
    # measured: 48 of the 50 T cells Unknown, 2 clustered with the macrophages; no other cell Unknown
    assert unknown.sum() >= 45 and set(truth[unknown.to_numpy()]) == {"T cells"}
    table = res.co_localization
    assert len(table) == 9
    assert "Unknown" not in set(table["cell_type_a"]) | set(table["cell_type_b"])
    assert "NaN statistics" not in caplog.text
    info = res.mdata.uns[Keys.nhood()]
    assert info["params"]["exclude"] == ["Unknown"]
    assert info["n_cells"].sum() == 200 - unknown.sum()
    # the reported pairs are those of the full table, whose null relabels every cell (Unknown ones included)
    full = smo.spatial.colocalization(res.mdata, inplace=False)
    keep = [full.categories.index(c) for c in info["categories"]]
    pairs = np.ix_(keep, keep)
    for name in ("count", "expected_exact", "variance", "zscore"):
        np.testing.assert_allclose(info[name], getattr(full, name)[pairs], err_msg=name)


def test_markers_that_name_no_cell_are_refused_with_what_to_do() -> None:
    import anndata as ad
    import scipy.sparse as sp

    mdata = smo.datasets.paper_benchmark(seed=0)
    rna = mdata["rna"]
    silent = ad.AnnData(
        sp.hstack([sp.csr_matrix(rna.X), sp.csr_matrix((rna.n_obs, 1), dtype=np.float32)]).tocsr(),
        obs=rna.obs.copy(),
        obsm={Keys.SPATIAL: np.asarray(rna.obsm[Keys.SPATIAL])},
    )
    silent.var_names = [*rna.var_names, "SILENT"]  # a marker no cell expresses: every cell 'Unknown'
    with pytest.raises(InputError, match=r"^annotation named no cell type: all 200 cells are 'Unknown'.*--markers"):
        smo.run_pipeline(silent, mdata["protein"], n_factors=4, markers={"Ghosts": {"genes": ["SILENT"]}})


def test_too_many_factors_is_caught_before_the_factorization_in_the_users_terms() -> None:
    mdata = smo.datasets.paper_benchmark(seed=0)
    # 10 protein channels, HistoneH3 is not factorized: at most 9 factors
    with pytest.raises(InputError) as err:
        smo.run_pipeline(protein_path=mdata["protein"], n_factors=10)
    assert str(err.value) == (
        "n_factors=10 (--n-factors) is more factors than the data allow: 200 cells and 9 features are factorized "
        "(protein: 9), and the number of factors can be at most the smaller of the two; use n_factors <= 9 or 'auto'."
    )
    with warnings.catch_warnings():  # k = n_features converges slowly; only the bound matters here
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert smo.run_pipeline(protein_path=mdata["protein"], n_factors=9).H_shared.shape == (9, 200)
    with pytest.raises(InputError, match=r"^n_factors=201 \(--n-factors\) .* 200 cells and 509 features .* <= 200 "):
        smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=201)


def test_dna_channels_stay_out_of_the_factors_unless_kept() -> None:
    import anndata as ad

    mdata = smo.datasets.paper_benchmark(seed=0)
    prot = mdata["protein"]
    rng = np.random.default_rng(0)
    dapi = rng.gamma(20.0, 50.0, size=(prot.n_obs, 1)).astype(np.float32)  # bright in every nucleus
    with_dapi = ad.AnnData(np.hstack([np.asarray(prot.X), dapi]), obs=prot.obs.copy())
    with_dapi.var_names = [*prot.var_names, "DAPI"]
    with_dapi.obsm[Keys.SPATIAL] = prot.obsm[Keys.SPATIAL]
    markers = dict(mdata.uns["markers"])
    default = smo.run_pipeline(mdata["rna"], with_dapi, n_factors=4, markers=markers)
    kept = smo.run_pipeline(mdata["rna"], with_dapi, n_factors=4, markers=markers, exclude_channels=None)
    assert np.all(default.W_protein[-1] == 0.0)
    assert np.any(kept.W_protein[-1] > 0.0)
    assert default.mdata.uns["pipeline"]["params"]["exclude_channels"] == "default"
    assert kept.mdata.uns["pipeline"]["params"]["exclude_channels"] == "none"


def test_spillover_option_compensates_the_protein_modality_and_keeps_the_measured_values() -> None:
    mdata = smo.datasets.synthetic_tissue(n_cells=1500, seed=0)
    measured = np.asarray(mdata["protein"].X).copy()
    plain = smo.run_pipeline(mdata["rna"], mdata["protein"], n_factors=12, markers=dict(mdata.uns["markers"]))
    res = smo.run_pipeline(
        mdata["rna"], mdata["protein"], n_factors=12, markers=dict(mdata.uns["markers"]), spillover=True
    )
    prot = res.mdata["protein"]
    assert res.mdata.uns["pipeline"]["params"]["spillover"] is True
    assert plain.mdata.uns["pipeline"]["params"]["spillover"] is False
    assert Keys.SPILLOVER in prot.uns and Keys.SPILLOVER not in plain.mdata["protein"].uns
    np.testing.assert_array_equal(np.asarray(prot.layers[Keys.RAW]), measured)
    np.testing.assert_array_equal(np.asarray(prot.X), np.asarray(prot.layers[Keys.SPILL_COMPENSATED]))
    # the planted spill (0.2 of the neighbours' mean) is estimated and removed: values move, none negative
    strength = prot.uns[Keys.SPILLOVER]["strength"]
    assert 0.05 <= strength <= 0.35, strength
    assert np.all(np.asarray(prot.X) >= 0) and not np.allclose(np.asarray(prot.X), measured)
    # the RNA modality (counts, not an imaging intensity) is untouched
    assert Keys.SPILLOVER not in res.mdata["rna"].uns
